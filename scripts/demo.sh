#!/usr/bin/env bash
# `make demo`: the control plane (SQLite), the demo upstream and Envoy with the Epochgate
# filter, on 127.0.0.1, with the demo's built-in keys and tokens. Prints the commands to
# try, then runs until Ctrl-C (everything it started is stopped on exit).
#
# Expects `make build` to have run (the Makefile's `demo` target does it).
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHGATE=./target/debug/epochgate
WASM=target/filter-dist/epochgate_filter.wasm
ENVOY=.venv/bin/envoy
STATE=.demo
export EPOCHGATE_ADMIN_TOKEN=demo-admin-token-0123456789
export EPOCHGATE_EDGE_TOKEN=demo-edge-token-0123456789

for f in "$EPOCHGATE" "$WASM" "$ENVOY"; do
  [ -e "$f" ] || { echo "demo: $f is missing: run \`make setup build\` first" >&2; exit 1; }
done
for port in 8080 8081 9901 10000; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port on 127.0.0.1 is in use (another demo still running?)" >&2
    exit 1
  fi
done

mkdir -p "$STATE"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: stopped (logs and the SQLite file are in $STATE/)"
}
trap cleanup EXIT INT TERM

"$EPOCHGATE" serve --listen 127.0.0.1:8080 --db "$STATE/epochgate.db" >"$STATE/control-plane.log" 2>&1 &
pids+=($!)
"$EPOCHGATE" demo-upstream --listen 127.0.0.1:8081 >"$STATE/upstream.log" 2>&1 &
pids+=($!)
"$ENVOY" -c envoy/demo.yaml --concurrency 2 --disable-hot-restart --log-level info >"$STATE/envoy.log" 2>&1 &
pids+=($!)

wait_until() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "demo: a process died while waiting for $what; see $STATE/*.log" >&2; exit 1; }
    done
    sleep 0.1
  done
  echo "demo: timed out waiting for $what; see $STATE/*.log" >&2
  exit 1
}
wait_until "the control plane" curl -sf http://127.0.0.1:8080/healthz
wait_until "Envoy" curl -sf http://127.0.0.1:9901/ready
# The filter answers 503 state_unavailable until its first sync: wait for the sync.
wait_until "Envoy's first sync" sh -c 'curl -s "http://127.0.0.1:9901/stats?filter=epochgate.sync_ok" | grep -q "sync_ok: [1-9]"'

cat <<'TXT'
Epochgate demo is running:
  control plane  http://127.0.0.1:8080   (SQLite file .demo/epochgate.db)
  Envoy          http://127.0.0.1:10000  (admin http://127.0.0.1:9901)
  demo upstream  http://127.0.0.1:8081
  admin console  http://127.0.0.1:8080/console/
                 sign in with the demo admin token: demo-admin-token-0123456789

In another shell, from this directory:

  $ export EPOCHGATE_ADMIN_TOKEN=demo-admin-token-0123456789
  $ TOKEN=$(./target/debug/epochgate mint-token --user 42 --tenant acme --sid laptop)
  $ curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:10000/orders; echo
  $ ./target/debug/epochgate logout --tenant acme --user 42 --reason "lost phone"
  $ curl -s -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:10000/orders; echo
  $ curl -s -i -H "Accept: text/html" -H "Cookie: portal_session=$TOKEN" http://127.0.0.1:10000/orders; echo
  $ sleep 1; TOKEN=$(./target/debug/epochgate mint-token --user 42 --tenant acme --sid laptop)
  $ curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:10000/orders; echo
  $ ./target/debug/epochgate edges
  $ ./target/debug/epochgate audit

The first curl passes (the upstream echoes user 42); after the logout the same token gets
401 {"error":"session_revoked"}, and a browser gets a 302 to the login page with the
cookie cleared; a token minted after the logout (signing in again) passes.

In the console (tenant acme), user 42 shows up with its session and device a couple of
seconds after its first request; its Logout button does what `epochgate logout` did.

Ctrl-C to stop.
TXT
wait -n "${pids[@]}" || true
echo "demo: a process exited; see $STATE/*.log" >&2
