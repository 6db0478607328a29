#!/usr/bin/env bash
# Curl walk-through of every endpoint (README: Quick start): scripts/smoke.sh BASE_URL TOKEN
# Exits non-zero at the first unexpected status. Needs curl and python3.
set -euo pipefail
base=${1:?usage: scripts/smoke.sh BASE_URL TOKEN}
token=${2:?usage: scripts/smoke.sh BASE_URL TOKEN}
auth="Authorization: Bearer $token"
json="Content-Type: application/json"
body=$(mktemp)
trap 'rm -f "$body"' EXIT

# call EXPECTED_STATUS METHOD PATH [CURL_ARGS...]: prints the response body
call() {
  local expected=$1 method=$2 path=$3
  shift 3
  local status
  status=$(curl -sS -o "$body" -w '%{http_code}' -X "$method" "$base$path" "$@")
  echo "$method $path -> $status" >&2
  if [ "$status" != "$expected" ]; then
    echo "expected $expected, got $status: $(cat "$body")" >&2
    exit 1
  fi
  cat "$body"
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

call 200 GET /health >/dev/null
call 200 GET /ready >/dev/null
call 401 GET /api/tasks >/dev/null
user=$(python3 -c "import base64, json, sys; p = sys.argv[1].split('.')[1]; \
print(json.loads(base64.urlsafe_b64decode(p + '=' * (-len(p) % 4)))['sub'])" "$token")

id=$(call 201 POST /api/tasks -H "$auth" -H "$json" \
  -d '{"title": "Buy milk", "description": "2 litres", "due_date": "2030-01-31"}' | field "['id']")
call 200 GET /api/tasks -H "$auth" >/dev/null
call 200 GET "/api/tasks?status=pending&sort=due_date&order=asc" -H "$auth" >/dev/null
call 200 GET "/api/tasks/$id" -H "$auth" >/dev/null
call 200 PUT "/api/tasks/$id" -H "$auth" -H "$json" -d '{"title": "Buy oat milk"}' >/dev/null
call 200 PATCH "/api/tasks/$id" -H "$auth" -H "$json" -d '{"description": null}' >/dev/null
done=$(call 200 PATCH "/api/tasks/$id/complete" -H "$auth" | field "['completed']")
[ "$done" = "True" ] || { echo "toggle did not complete the task" >&2; exit 1; }
call 400 POST /api/tasks -H "$auth" -H "$json" -d '{"title": ""}' >/dev/null
call 204 DELETE "/api/tasks/$id" -H "$auth" >/dev/null
call 404 GET "/api/tasks/$id" -H "$auth" >/dev/null

# The same through the user-scoped family, /api/{user_id}/tasks.
id=$(call 201 POST "/api/$user/tasks" -H "$auth" -H "$json" -d '{"title": "Call mum"}' | field "['id']")
call 200 GET "/api/$user/tasks" -H "$auth" >/dev/null
call 200 GET "/api/$user/tasks/$id" -H "$auth" >/dev/null
call 200 PATCH "/api/$user/tasks/$id" -H "$auth" -H "$json" -d '{"completed": true}' >/dev/null
call 200 PATCH "/api/$user/tasks/$id/complete" -H "$auth" >/dev/null
call 403 GET "/api/someone-else/tasks" -H "$auth" >/dev/null
call 204 DELETE "/api/$user/tasks/$id" -H "$auth" >/dev/null
echo "smoke test passed" >&2
