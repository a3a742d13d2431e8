#!/usr/bin/env bash
# Mutation testing of breakwater's breaker core and registry with cargo-mutants.
#
#   scripts/mutants.sh                       every file of crates/breakwater/src/resilience
#   scripts/mutants.sh --file resilience/backoff.rs [--file ...]
#   scripts/mutants.sh --score [DIR]         print the score of a finished run again
#
# Each mutant is a small change to the source (`<` for `<=`, a function
# returning a default value, ...). cargo-mutants builds it and runs the unit
# tests and the integration tests that exercise the core; a mutant that no
# test notices "survived". The run ends with the score per file and in total,
# read from mutants.out/outcomes.json.
#
# What is mutated, which tests run, the cargo profile and the mutants judged
# equivalent (no observable behaviour can differ, each with its reason) are
# in .cargo/mutants.toml. Builds go to target/mutants (or $CARGO_TARGET_DIR)
# so that the normal build keeps its cache. A caught mutant costs about 5 s
# on two cores, a surviving one about 20 s: a file takes minutes, the whole
# core hours.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/mutants.sh [OPTIONS] [-- CARGO_MUTANTS_ARGS...]

Runs cargo-mutants on crates/breakwater/src/resilience (the breaker core, the
per-endpoint registry and the strategies; test modules excluded) and prints,
per file and in total: mutants, caught, timed out, survived, unviable.

Options:
  -f, --file PATH   mutate only this file (repeatable); PATH is relative to the
                    repository root or to crates/breakwater/src
  -j, --jobs N      mutants built and tested in parallel (default 1)
  -o, --output DIR  write DIR/mutants.out (default: the repository root)
      --score [DIR] print the score of DIR/mutants.out (default: .) and exit
  -h, --help        show this help

Anything after `--` goes to cargo-mutants unchanged (for example
`-- --re 'Jitter::unit'` to run only the matching mutants).

Exit status: 0 when no mutant survived, 1 on bad usage or a missing tool,
otherwise cargo-mutants' own status (2: some survived, 3: some timed out,
4: the tests fail without any mutation).
EOF
}

die() {
    echo "mutants.sh: $*" >&2
    exit 1
}

root="$(cd "$(dirname "$0")/.." && pwd)"
crate_src="crates/breakwater/src"

# The score table of a run, from its outcomes.json.
score() {
    local json="$1/mutants.out/outcomes.json"
    [[ -f "$json" ]] || die "no $json: run the mutants first"
    command -v jq >/dev/null || die "jq is needed to read $json (apt-get install jq)"
    jq -r '
        [.outcomes[] | select(.scenario | type == "object") |
            {file: .scenario.Mutant.file, summary}]
        | group_by(.file)
        | map({file: .[0].file,
               n: length,
               caught: map(select(.summary == "CaughtMutant")) | length,
               timeout: map(select(.summary == "Timeout")) | length,
               missed: map(select(.summary == "MissedMutant")) | length,
               unviable: map(select(.summary == "Unviable")) | length})
        | (. + [{file: "total",
                 n: (map(.n) | add // 0),
                 caught: (map(.caught) | add // 0),
                 timeout: (map(.timeout) | add // 0),
                 missed: (map(.missed) | add // 0),
                 unviable: (map(.unviable) | add // 0)}])
        | (["file", "mutants", "caught", "timed out", "survived", "unviable"] | @tsv),
          (.[] | [.file, .n, .caught, .timeout, .missed, .unviable] | @tsv)
    ' "$json" | column -t -s $'\t'
    local missed="$1/mutants.out/missed.txt"
    if [[ -s "$missed" ]]; then
        echo
        echo "survived:"
        sed 's/^/  /' "$missed"
    fi
}

files=()
jobs=1
output="$root"
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    -f | --file)
        [[ $# -ge 2 ]] || die "$1 needs a path"
        path="$2"
        if [[ -f "$root/$path" ]]; then
            files+=("$path")
        elif [[ -f "$root/$crate_src/$path" ]]; then
            files+=("$crate_src/$path")
        else
            die "no such file: $path (give it relative to the repository root or to $crate_src)"
        fi
        shift 2
        ;;
    -j | --jobs)
        [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive number"
        jobs="$2"
        shift 2
        ;;
    -o | --output)
        [[ $# -ge 2 ]] || die "$1 needs a directory"
        mkdir -p "$2"
        output="$(cd "$2" && pwd)"
        shift 2
        ;;
    --score)
        dir="${2:-.}"
        score "$(cd "$dir" && pwd)"
        exit 0
        ;;
    --)
        shift
        extra=("$@")
        break
        ;;
    *)
        die "unknown argument: $1 (see --help)"
        ;;
    esac
done

if ! cargo mutants --version >/dev/null 2>&1; then
    die "cargo-mutants is not installed: install it with \`cargo install cargo-mutants --locked\`"
fi
command -v jq >/dev/null || die "jq is needed to read the results (apt-get install jq)"

cd "$root"
args=(
    --package breakwater
    --jobs "$jobs"
    --output "$output"
    # A mutant that makes a loop spin or a wait never end is stopped soon:
    # the tests take about 10 s.
    --minimum-test-timeout 30
    --timeout-multiplier 2
    --build-timeout-multiplier 4
    --cargo-arg "--target-dir=${CARGO_TARGET_DIR:-$root/target/mutants}"
)
[[ ${#files[@]} -gt 0 ]] || files=("$crate_src/resilience/**/*.rs")
for f in "${files[@]}"; do
    args+=(--file "$f")
done

status=0
cargo mutants "${args[@]}" "${extra[@]}" || status=$?
echo
score "$output"
exit "$status"
