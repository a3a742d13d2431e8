#!/usr/bin/env bash
# All the tests: installs what they need when it is missing (PostgreSQL's
# server programs, for the tests that start a throwaway cluster; Chromium
# and its WebDriver, and axe-core from npm, for the console's browser
# tests), then runs `cargo test --workspace --all-features` with any extra
# arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where crates/breakwater-dispatch/src/pg_cluster.rs looks first:
# pg_config --bindir, then Debian's /usr/lib/postgresql/VERSION/bin.
pg_server_dir() {
  local dir
  dir=$(pg_config --bindir 2>/dev/null) && [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

sudo=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
fi
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    "${sudo[@]}" apt-get update
    apt_updated=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

if ! pg_server_dir >/dev/null; then
  echo "PostgreSQL's initdb not found; installing Debian's postgresql package"
  apt_install postgresql
  pg_server_dir >/dev/null || { echo "postgresql is installed but initdb is still not found" >&2; exit 1; }
fi
echo "PostgreSQL server programs in $(pg_server_dir) ($("$(pg_server_dir)/initdb" --version))"

# The console's browser tests (crates/breakwater-dispatch/tests/console_browser.rs):
# Debian's Chromium and chromedriver, and axe-core pinned by package-lock.json.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "Chromium or chromedriver not found; installing Debian's chromium and chromium-driver"
  apt_install chromium chromium-driver
fi
echo "$(/usr/bin/chromedriver --version)"
browser=crates/breakwater-dispatch/tests/browser
if [ ! -f "$browser/node_modules/axe-core/axe.min.js" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found; installing Debian's npm"
    apt_install npm
  fi
  npm ci --prefix "$browser" --no-audit --no-fund
fi

exec cargo test --workspace --all-features "$@"
