#!/usr/bin/env bash
# Runs the demo for a short while and checks its summary: the dead endpoint's
# breaker opened, its actions were deferred, and all were delivered after it
# recovered; the healthy endpoint delivered everything.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-12}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

# The README's command (wherever the target directory is), on a free port so
# that a busy 9464 cannot make the run flaky.
if ! cargo run --release -q -p breakwater-dispatch --bin breakwater -- \
    demo --duration "$duration" --listen 127.0.0.1:0 | tee "$out"; then
  echo "ci-service: the demo exited non-zero" >&2
  exit 1
fi

fail() { echo "ci-service: $*" >&2; exit 1; }
grep -q '^RESULT: ok' "$out" || fail "the summary does not say ok"
line="$(grep '^dead endpoint:' "$out")" || fail "no dead-endpoint summary line"
opened="$(sed -E 's/.*breaker opened ([0-9]+) time.*/\1/' <<<"$line")"
deferred="$(sed -E 's/.*; ([0-9]+) deferral.*/\1/' <<<"$line")"
delivered="$(sed -E 's#.*; ([0-9]+)/([0-9]+) delivered.*#\1 \2#' <<<"$line")"
[ "$opened" -ge 1 ] || fail "the dead endpoint's breaker never opened"
[ "$deferred" -ge 1 ] || fail "no action was deferred"
read -r got want <<<"$delivered"
[ "$want" -gt 0 ] && [ "$got" -eq "$want" ] || fail "dead endpoint delivered $got of $want"
grep -q '^  healthy .*delivered \([0-9]*\)/\1,' "$out" || fail "the healthy endpoint missed deliveries"
echo "ci-service: ok (opened $opened time(s), $deferred deferral(s), $got/$want delivered)"
