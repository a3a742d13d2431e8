#!/usr/bin/env bash
# All the tests: installs what they need when it is missing (PostgreSQL's
# server programs, for the tests that start a throwaway cluster), then runs
# `cargo test --workspace --all-features` with any extra arguments given.
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

if ! pg_server_dir >/dev/null; then
  echo "PostgreSQL's initdb not found; installing Debian's postgresql package"
  sudo=()
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  pg_server_dir >/dev/null || { echo "postgresql is installed but initdb is still not found" >&2; exit 1; }
fi
echo "PostgreSQL server programs in $(pg_server_dir) ($("$(pg_server_dir)/initdb" --version))"

exec cargo test --workspace --all-features "$@"
