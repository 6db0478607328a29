# The API's image: `docker build -t todo-api .` (README "Deploy"). PYTHON_IMAGE is any Debian-based
# image with python3 and venv (default the official slim image).
ARG PYTHON_IMAGE=python:3.12-slim

# Dependencies, installed into a virtual environment from the pinned requirements.txt.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt \
    && /opt/venv/bin/pip uninstall -y -q pip setuptools

# Runtime: the same base, the environment (without pip) and the code, read-only for the app's user.
FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
    && mkdir /data && chown app:app /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY . .
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORT=8000
# Without DATABASE_URL the embedded SQLite file lives in /data (writable; mount a volume there).
ENV DATABASE_URL=sqlite:////data/todo.db
USER app:app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["python3", "-c", \
    "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % (os.getenv('PORT') or 8000), timeout=2)"]
# The Procfile's web command, with its limits (README "Limits of the web process"; the tests check
# they are the same). `exec` makes uvicorn PID 1, so `docker stop`'s SIGTERM reaches it and
# it drains in-flight requests. WEB_CONCURRENCY sets uvicorn's worker count (default 1).
# PostgreSQL is migrated by the release step (`alembic upgrade head`, a one-shot container of this
# image); the embedded SQLite file is migrated here first, as `make run` does (runs never race:
# SQLite's write lock).
CMD ["sh", "-c", "case \"$DATABASE_URL\" in sqlite:*) alembic upgrade head || exit 1;; esac; \
exec uvicorn app:app --host 0.0.0.0 --port \"${PORT:-8000}\" \
--http middleware.slow_clients:HeadTimeoutProtocol --timeout-keep-alive 5 --limit-concurrency 2000 \
--timeout-graceful-shutdown 20"]
