#!/usr/bin/env bash
# What `make schemathesis` runs: schemathesis against a running `epochgate serve` (fresh
# SQLite file, free port on 127.0.0.1) with the checked-in control-plane/openapi.json,
# authenticated as the global admin. Fails on any 5xx, on a response that does not match
# the document, and on any 4xx/5xx whose body is not JSON (checked from the run's NDJSON
# event log, independently of schemathesis' own checks). An IdP (`demo`) is configured so
# the back-channel logout and SET receivers are exercised too.
set -euo pipefail
cd "$(dirname "$0")/.."

ST="${SCHEMATHESIS:-.venv-tools/bin/schemathesis}"
BIN="${EPOCHGATE_BIN:-target/debug/epochgate}"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-40}"
[ -x "$BIN" ] || { echo "$BIN is missing: run \`make build\`" >&2; exit 1; }

dir="$(mktemp -d /tmp/epochgate-schemathesis.XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
admin="schemathesis-admin-token-0123456789"
# One IdP, `demo` (the document's example name), with inline keys and SET push, so the
# receivers' validation is what schemathesis reaches.
cat >"$dir/idps.json" <<JSON
{"idps": [{"name": "demo", "issuer": "https://idp.schemathesis.test", "client_id": "portal",
  "jwks": $(cat tests/fixtures/es256-a.jwks.json), "tenant": {"fixed": "acme"},
  "ssf": {"bearer_token_env": "SCHEMATHESIS_SSF_TOKEN"}}]}
JSON
EPOCHGATE_ADMIN_TOKEN="$admin" EPOCHGATE_EDGE_TOKEN="schemathesis-edge-token-0123456789" \
  SCHEMATHESIS_SSF_TOKEN="schemathesis-ssf-token-0123456789" \
  "$BIN" serve --listen "127.0.0.1:$port" --db "$dir/epochgate.db" --idp-config "$dir/idps.json" >"$dir/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null

rc=0
SCHEMATHESIS_HOOKS=scripts.schemathesis_hooks "$ST" run control-plane/openapi.json --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $admin" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" --workers 2 --request-timeout 70 --seed 7 \
  --report ndjson --report-ndjson-path "$dir/events.ndjson" --no-color || rc=$?

python3 - "$dir/events.ndjson" <<'PY' || rc=1
import base64, json, sys
total = errors = not_json = server = 0
bad = []
def responses(obj):
    if isinstance(obj, dict):
        if "status_code" in obj and "headers" in obj and ("content" in obj or "body" in obj):
            yield obj
        for v in obj.values():
            yield from responses(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from responses(v)
for line in open(sys.argv[1]):
    for r in responses(json.loads(line)):
        total += 1
        code = r["status_code"]
        if code >= 500:
            server += 1
        if code >= 400:
            errors += 1
            body = r.get("content") or r.get("body") or ""
            if isinstance(body, dict) and "$base64" in body:  # how the log stores payloads
                body = base64.b64decode(body["$base64"]).decode("utf-8", "replace")
            try:
                v = json.loads(body)
                # {"error", "detail"}; the SET push receiver answers RFC 8935's {"err", "description"}.
                ok = isinstance(v, dict) and (isinstance(v.get("error"), str) or isinstance(v.get("err"), str))
            except Exception:
                ok = False
            if not ok:
                not_json += 1
                bad.append((code, str(body)[:120]))
print(f"schemathesis responses seen: {total}; errors (4xx/5xx): {errors}; 5xx: {server}; errors without a JSON {{\"error\"}} body: {not_json}")
for b in bad[:10]:
    print("  not JSON:", b)
if total == 0:
    print("no responses found in the event log: cannot judge", file=sys.stderr)
    sys.exit(1)
sys.exit(1 if server or not_json else 0)
PY
exit "$rc"
