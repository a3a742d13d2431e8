#!/usr/bin/env bash
# Runs the loom models of breakwater's state machine
# (crates/breakwater/src/resilience/loom_tests.rs).
#
#   scripts/loom.sh                  every model
#   scripts/loom.sh a_stale          the models whose name starts with "a_stale"
#
# The models need `--cfg breakwater_loom`, which swaps breakwater's atomics
# for loom's; they build in target/loom so the normal build keeps its cache.
# LOOM_MAX_PREEMPTIONS overrides each model's own preemption bound.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="${RUSTFLAGS:-} --cfg breakwater_loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
filter="resilience::loom_tests${1:+::}${1:-}"

exec cargo test -p breakwater --lib --release "$filter" -- --test-threads=1
