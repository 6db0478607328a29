# Set-up and everyday commands. Everything the project needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

HARNESS := tests/betterauth
CLIENT := clients/typescript
EXAMPLE := examples/nextjs
# npm ci per folder, again only when its lockfile changes (the stamp is newer otherwise).
# better-sqlite3 (examples/nextjs) compiles from source: its prebuilt binaries are downloaded
# from outside the npm registry, so the attempt is skipped.
NPM_CI := npm_config_build_from_source=true npm ci --no-audit --no-fund --loglevel=error
# `next build` again only when the frontend's or the client's sources changed.
EXAMPLE_SOURCES := $(filter-out %/next-env.d.ts,$(wildcard $(EXAMPLE)/*.ts $(EXAMPLE)/*.json \
	$(EXAMPLE)/app/*.* $(EXAMPLE)/app/*/*/*/*.ts $(EXAMPLE)/components/* $(EXAMPLE)/lib/*)) \
	$(wildcard $(CLIENT)/src/*.ts)

.PHONY: run migrate check test bench token smoke clean node-packages client demo

$(BIN)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is required (set PYTHON=python3.x)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(BIN)/.installed-bench: $(BIN)/.installed requirements-bench.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	touch $@

# A first run gets a .env with a freshly generated secret; an existing .env is never touched.
.env:
	@secret=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))') && \
		sed "s|^BETTER_AUTH_SECRET=.*|BETTER_AUTH_SECRET=$$secret|" .env.example > .env
	@echo "created .env with a new random BETTER_AUTH_SECRET"

# The release step, `alembic upgrade head`, on DATABASE_URL from the environment, else from .env
# (if there is one), else ./todo.db. Safe to repeat and to run from several places at once.
migrate: $(BIN)/.installed
	$(BIN)/python -c 'import dotenv; dotenv.load_dotenv(".env"); \
		from alembic.config import main; main(["upgrade", "head"])'

run: $(BIN)/.installed .env migrate
	$(BIN)/uvicorn app:app --env-file .env --host $(HOST) --port $(PORT)

# The real Better Auth for the interop tests, the typed client's generator and compiler, the
# reference frontend; without npm their tests skip (and fail under CI).
%/node_modules/.installed: %/package-lock.json
	cd $* && $(NPM_CI)
	touch $@

$(EXAMPLE)/.next/.built: $(EXAMPLE)/node_modules/.installed $(EXAMPLE_SOURCES)
	cd $(EXAMPLE) && NEXT_TELEMETRY_DISABLED=1 node_modules/.bin/next build
	touch $@

# Outside CI a frontend that cannot be installed (better-sqlite3 needs a C++ compiler) only
# skips its tests.
node-packages:
	@if command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(HARNESS)/node_modules/.installed $(CLIENT)/node_modules/.installed && \
		{ $(MAKE) --no-print-directory $(EXAMPLE)/.next/.built || { [ -z "$$CI" ] && \
			echo "examples/nextjs could not be installed or built: its tests will be skipped"; }; }; \
	else echo "npm not found: the Better Auth, TypeScript client and frontend tests will be skipped"; fi

# Regenerate clients/typescript/src/schema.d.ts from the app's /openapi.json.
client: $(BIN)/.installed-dev $(CLIENT)/node_modules/.installed
	UPDATE_TS_CLIENT=1 $(BIN)/python -m pytest -q tests/test_typescript_client.py

# The API on SQLite and the reference Next.js frontend on http://localhost:3000.
demo: $(BIN)/.installed .env $(EXAMPLE)/.next/.built
	scripts/demo.sh

# Lint, formatting and types (settings in pyproject.toml); `make test` runs it first.
# `ruff format .` rewrites what the format check refuses.
check: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Ends with the coverage report (settings: pyproject.toml); --cov goes last, as its optional
# value would take a path from PYTEST_ARGS. WORKERS pytest-xdist processes share the tests, a
# module to a worker (tests/conftest.py: SLOWEST_FIRST; docs/testing.md: Suite time);
# WORKERS=0 runs them all in one process.
WORKERS ?= 3
test: check node-packages
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS) --cov

# Benchmark against a local PostgreSQL (BENCH_DATABASE_URL; BENCH_QUICK=1 for a one-minute run);
# prints the table and rewrites docs/performance.md. Not part of `make test` or CI.
# wrk (the load generator) comes from Debian's packages: installed here when running as root.
bench: $(BIN)/.installed-bench
	@command -v wrk >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@command -v wrk >/dev/null 2>&1 || { echo "make bench needs wrk: install it with apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench

token: $(BIN)/.installed .env
	@$(BIN)/python scripts/dev_token.py $(USER)

smoke:
	scripts/smoke.sh http://$(HOST):$(PORT) "$$($(BIN)/python scripts/dev_token.py $(USER))"

clean:
	rm -rf $(VENV) .pytest_cache $(HARNESS)/node_modules $(CLIENT)/node_modules \
		$(EXAMPLE)/node_modules $(EXAMPLE)/.next todo.db todo.db-wal todo.db-shm \
		.coverage .coverage.*
