#!/usr/bin/env bash
# What `make fuzz` runs: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60)
# each, starting from the committed seeds (fuzz/seeds/<target>) plus whatever the local
# corpus (fuzz/corpus/<target>, not committed) has gathered. Prints one line per target:
# executions, crashes, corpus size. Exits non-zero if any target crashed; the crashing
# input is in fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly features: a nightly toolchain if rustup has one, else
# RUSTC_BOOTSTRAP=1 on stable.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${FUZZ_SECONDS:-60}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  TOOLCHAIN=(+nightly)
else
  TOOLCHAIN=()
  export RUSTC_BOOTSTRAP=1
fi

cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo "${TOOLCHAIN[@]}" fuzz list)
fi
summary=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  echo "==> fuzzing $t for ${SECONDS_EACH}s"
  rc=0
  cargo "${TOOLCHAIN[@]}" fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
  crashes=0
  if [ "$rc" -ne 0 ]; then
    crashes=1
    status=1
    tail -40 "$log"
  fi
  corpus="$(ls "corpus/$t" | wc -l)"
  summary+=("$(printf '%-12s executions %10s  crashes %d  corpus %5d  exit %d' "$t" "${execs:-?}" "$crashes" "$corpus" "$rc")")
  rm -f "$log"
done
echo "---- fuzz summary (${SECONDS_EACH}s per target) ----"
printf '%s\n' "${summary[@]}"
exit "$status"
