#!/usr/bin/env bash
# Fuzzes what parses untrusted input in the service
# (crates/breakwater-dispatch/tests/fuzz.rs): `POST /events` bodies
# (`parse_events`) and configuration files (`Config::parse`), each target for
# SECONDS (default 60), one after the other.
#
#   scripts/fuzz.sh              60 s per target
#   scripts/fuzz.sh 600          10 minutes per target
#   FUZZ_SEED=42 scripts/fuzz.sh 30    the inputs of the run printed with seed 42
#
# Release mode, with overflow checks and debug assertions on (an arithmetic
# overflow is a finding, as in a debug build), in target/fuzz so the normal
# release build keeps its cache. Prints each target's executions and
# findings, each shrunk to a minimal input (a Rust literal; the whole input
# under target/fuzz/tmp/fuzz-findings/), and exits non-zero if anything was
# found. Not run by CI (.ci/run): `cargo test` runs the same targets for a
# few hundred cases each.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/fuzz}"
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export FUZZ_SECONDS="$seconds"

cargo test -p breakwater-dispatch --release --test fuzz --no-run

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
for target in fuzz_parse_events fuzz_config_parse; do
  printf '\n==> %s for %s s\n' "$target" "$seconds"
  cargo test -q -p breakwater-dispatch --release --test fuzz -- \
    --exact "$target" --nocapture --test-threads=1 2>&1 | tee -a "$log" || status=1
done

printf '\n==> summary (%s s per target)\n' "$seconds"
grep -E '^(fuzz [a-z_]+: [0-9]+ executions|fuzz [a-z_]+: FINDING|  (outcomes|known|FINDING))' "$log" || true
if [ "$status" -ne 0 ]; then
  echo "==> findings (or a failure): see above"
fi
exit "$status"
