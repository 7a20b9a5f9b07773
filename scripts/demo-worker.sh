#!/usr/bin/env bash
# `make demo-worker`: the control plane (SQLite), the demo upstream and the Epochgate
# Cloudflare Worker in a local workerd, on 127.0.0.1, with the demo's built-in key (the
# filter configuration of envoy/demo.yaml). Prints the commands to try, then runs until
# Ctrl-C (everything it started is stopped on exit).
#
# Expects `make build build-worker` to have run (the Makefile's target does it).
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHGATE=./target/debug/epochgate
DIST=target/worker-dist
WORKERD=node_modules/.bin/workerd
STATE=.demo-worker
PORT=8787
export EPOCHGATE_ADMIN_TOKEN=demo-admin-token-0123456789
export EPOCHGATE_EDGE_TOKEN=demo-edge-token-0123456789

for f in "$EPOCHGATE" "$DIST/epochgate_worker_bg.wasm" "$DIST/entry.mjs" "$WORKERD"; do
  [ -e "$f" ] || { echo "demo-worker: $f is missing: run \`make setup build build-worker\` first" >&2; exit 1; }
done
for port in 8080 8081 "$PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo-worker: port $port on 127.0.0.1 is in use (another demo still running?)" >&2
    exit 1
  fi
done

# The worker's bindings: the same filter configuration as the Envoy demo, the worker's
# own settings, and the edge token (a secret in production: `wrangler secret put`).
CONFIG=$(sed -n "s/^ *value: '\(.*\"keys\".*\)'$/\1/p" envoy/demo.yaml)
[ -n "$CONFIG" ] || { echo "demo-worker: no filter configuration found in envoy/demo.yaml" >&2; exit 1; }
# An isolate syncs only while it has traffic: the first request after an idle spell is
# decided on state as old as the spell, unless that is over max_staleness_s, when it
# waits for a sync. A short max_staleness_s bounds that (see the README).
CONFIG=$(printf '%s' "$CONFIG" | sed 's/"max_staleness_s": [0-9]*/"max_staleness_s": 5/')
WORKER='{"origin": "http://127.0.0.1:8081", "control_plane": "http://127.0.0.1:8080", "deployment": "demo-worker"}'
capnp_text() { # a capnp string literal
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# workerd's config embeds files relative to itself: copy the build next to it.
rm -rf "$STATE/worker" && mkdir -p "$STATE/worker"
cp -r "$DIST"/. "$STATE/worker/"
modules='    (name = "entry.mjs", esModule = embed "entry.mjs"),'
while IFS= read -r f; do
  case "$f" in
    entry.mjs) ;;
    *.js | *.mjs) modules+=$'\n'"    (name = \"$f\", esModule = embed \"$f\")," ;;
    *.wasm) modules+=$'\n'"    (name = \"$f\", wasm = embed \"$f\")," ;;
  esac
done < <(cd "$STATE/worker" && find . -type f | sed 's|^\./||' | sort)
bindings="    (name = \"EPOCHGATE_CONFIG\", text = $(capnp_text "$CONFIG")),"
bindings+=$'\n'"    (name = \"EPOCHGATE_WORKER\", text = $(capnp_text "$WORKER")),"
bindings+=$'\n'"    (name = \"EPOCHGATE_EDGE_TOKEN\", text = $(capnp_text "$EPOCHGATE_EDGE_TOKEN")),"
# The relay: the deployment's Durable Object holds the long poll, isolates ask it.
bindings+=$'\n'"    (name = \"EPOCHGATE_RELAY\", durableObjectNamespace = \"EpochgateRelay\"),"
template=$(cat worker/workerd.capnp.tmpl)
template=${template//'${ADDRESS}'/127.0.0.1:$PORT}
template=${template//'${MODULES}'/$modules}
template=${template//'${BINDINGS}'/$bindings}
for extra in EXTRA_SERVICES EXTRA_SOCKETS EXTRA_WORKERS; do
  template=${template//"\${$extra}"/}
done
printf '%s\n' "$template" >"$STATE/worker/config.capnp"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo-worker: stopped (logs and the SQLite file are in $STATE/)"
}
trap cleanup EXIT INT TERM

"$EPOCHGATE" serve --listen 127.0.0.1:8080 --db "$STATE/epochgate.db" >"$STATE/control-plane.log" 2>&1 &
pids+=($!)
"$EPOCHGATE" demo-upstream --listen 127.0.0.1:8081 >"$STATE/upstream.log" 2>&1 &
pids+=($!)
(cd "$STATE/worker" && exec "$OLDPWD/$WORKERD" serve config.capnp --verbose) >"$STATE/workerd.log" 2>&1 &
pids+=($!)

wait_until() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { echo "demo-worker: a process died while waiting for $what; see $STATE/*.log" >&2; exit 1; }
    done
    sleep 0.1
  done
  echo "demo-worker: timed out waiting for $what; see $STATE/*.log" >&2
  exit 1
}
wait_until "the control plane" curl -sf http://127.0.0.1:8080/healthz
wait_until "workerd" curl -s -o /dev/null "http://127.0.0.1:$PORT/"

cat <<TXT
Epochgate worker demo is running:
  control plane  http://127.0.0.1:8080   (SQLite file $STATE/epochgate.db)
  worker         http://127.0.0.1:$PORT   (workerd; log $STATE/workerd.log)
  demo upstream  http://127.0.0.1:8081

In another shell, from this directory:

  \$ export EPOCHGATE_ADMIN_TOKEN=$EPOCHGATE_ADMIN_TOKEN
  \$ TOKEN=\$(./target/debug/epochgate mint-token --user 42 --tenant acme --sid laptop)
  \$ curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$PORT/orders; echo
  \$ ./target/debug/epochgate logout --tenant acme --user 42 --reason "lost phone"
  \$ curl -s -i -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$PORT/orders; echo
  \$ curl -s -i -H "Accept: text/html" -H "Cookie: portal_session=\$TOKEN" http://127.0.0.1:$PORT/orders; echo
  \$ sleep 1; TOKEN=\$(./target/debug/epochgate mint-token --user 42 --tenant acme --sid laptop)
  \$ curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$PORT/orders; echo
  \$ ./target/debug/epochgate edges      # the isolate demo-worker-<random id>, and the relay demo-worker-relay

The first curl passes (the upstream echoes user 42); after the logout the same token gets
401 {"error":"session_revoked"} (the relay, the deployment's Durable Object, holds the long
poll: after a second without traffic the isolate asks it before deciding, while requests
flow within tens of milliseconds),
and a browser gets a 302 to the login page with the cookie cleared; a token minted after
the logout passes.

Ctrl-C to stop.
TXT
wait -n "${pids[@]}" || true
echo "demo-worker: a process exited; see $STATE/*.log" >&2
