# Set-up and everyday commands. Everything the project needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test token smoke clean

$(BIN)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is required (set PYTHON=python3.x)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.installed-dev: $(BIN)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# A first run gets a .env with a freshly generated secret; an existing .env is never touched.
.env:
	@secret=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))') && \
		sed "s|^BETTER_AUTH_SECRET=.*|BETTER_AUTH_SECRET=$$secret|" .env.example > .env
	@echo "created .env with a new random BETTER_AUTH_SECRET"

run: $(BIN)/.installed .env
	$(BIN)/uvicorn app:app --env-file .env --host $(HOST) --port $(PORT)

test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

token: $(BIN)/.installed .env
	@$(BIN)/python scripts/dev_token.py $(USER)

smoke:
	scripts/smoke.sh http://$(HOST):$(PORT) "$$($(BIN)/python scripts/dev_token.py $(USER))"

clean:
	rm -rf $(VENV) .pytest_cache todo.db todo.db-wal todo.db-shm
