#!/usr/bin/env bash
# `make demo`: the API on SQLite and the reference frontend (examples/nextjs, already built by
# make) together; prints the URL to open, stops both on Ctrl-C or when either exits.
# Both get the same BETTER_AUTH_SECRET (from the environment, else .env) and BETTER_AUTH_URL (the frontend's origin).
# Overrides: WEB_PORT (3000), API_PORT (8000), DEMO_DATABASE_URL (the API's database, default
# sqlite:///./todo.db), AUTH_DATABASE_URL (Better Auth's, default examples/nextjs/auth.db).
set -euo pipefail
cd "$(dirname "$0")/.."

web_port=${WEB_PORT:-3000}
api_port=${API_PORT:-8000}
web_url="http://localhost:$web_port"
api_url="http://localhost:$api_port"
secret=${BETTER_AUTH_SECRET:-$(sed -n 's/^BETTER_AUTH_SECRET=//p' .env 2>/dev/null)}
[ -n "$secret" ] || { echo "demo: .env has no BETTER_AUTH_SECRET (make demo creates one)" >&2; exit 1; }

export BETTER_AUTH_SECRET="$secret" BETTER_AUTH_URL="$web_url" NEXT_TELEMETRY_DISABLED=1
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT
trap 'exit 130' INT TERM

export DATABASE_URL=${DEMO_DATABASE_URL:-sqlite:///./todo.db}
if [ -f alembic.ini ]; then .venv/bin/alembic upgrade head; fi  # the schema, as `make run` does
CORS_ORIGINS="" .venv/bin/uvicorn app:app --host 127.0.0.1 --port "$api_port" &
pids+=($!)
(cd examples/nextjs && TODO_API_URL="$api_url" AUTH_DATABASE_URL=${AUTH_DATABASE_URL:-sqlite:auth.db} \
  exec node_modules/.bin/next start -H 127.0.0.1 -p "$web_port") &
pids+=($!)

for _ in $(seq 120); do
  if curl -fsS -o /dev/null "$api_url/health" && curl -fsS -o /dev/null "$web_url/"; then
    echo
    echo "Todo demo: open $web_url (API $api_url, its docs $api_url/docs). Ctrl-C stops it."
    wait -n "${pids[@]}"
    exit $?
  fi
  sleep 0.5
done
echo "demo: the API or the frontend did not start within 60 s" >&2
exit 1
