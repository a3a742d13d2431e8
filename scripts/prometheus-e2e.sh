#!/usr/bin/env bash
# The alert rules, their unit tests and every dashboard and alert expression,
# proven against a real Prometheus scraping the prometheus_exporter example.
# Installs Debian's prometheus package when prometheus/promtool are missing;
# fails (never skips) when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'prometheus-e2e: %s\n' "$*"; }
die() { printf 'prometheus-e2e: FAILED: %s\n' "$*" >&2; exit 1; }

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  say "prometheus/promtool not found; installing Debian's prometheus package"
  command -v apt-get >/dev/null 2>&1 \
    || die "prometheus and promtool are missing and there is no apt-get to install Debian's prometheus package"
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "installing Debian's prometheus package needs root (or sudo)"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update \
    || die "apt-get update failed; cannot install Debian's prometheus package"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends prometheus \
    || die "apt-get install prometheus failed"
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
    || die "Debian's prometheus package is installed but prometheus/promtool are still not on PATH"
fi
say "$(prometheus --version 2>&1 | head -n1)"

say "promtool check rules"
promtool check rules deploy/prometheus/alerts.yml
say "promtool test rules"
(cd deploy/prometheus && promtool test rules alerts_test.yml)

# The workspace with every feature and an example in the build (so that
# dev-dependencies count in feature resolution), as CI's earlier steps built
# it: the libraries are reused rather than built a second time.
targets=(--example prometheus_exporter)
[ -f crates/breakwater-dispatch/Cargo.toml ] && targets+=(--bin breakwater)
say "building the prometheus_exporter example and the breakwater service"
cargo build --workspace --all-features "${targets[@]}"
exporter="${CARGO_TARGET_DIR:-target}/debug/examples/prometheus_exporter"
[ -x "$exporter" ] || die "no exporter binary at $exporter"

extra=()
if [ -f crates/breakwater-dispatch/Cargo.toml ]; then
  # The service's demo is scraped too.
  extra=(--dispatch-bin "${CARGO_TARGET_DIR:-target}/debug/breakwater")
fi

python3 scripts/prometheus_e2e.py --exporter "$exporter" "${extra[@]}" "$@"
