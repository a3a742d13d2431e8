#!/usr/bin/env python3
"""Run the `breaker` bench group by group on a quiet machine, then print the table.

Usage (from the workspace root):
    python3 crates/breakwater/benches/quiet_run.py [--tries N] [--idle PCT] [GROUP ...]

On a small shared machine a compile or test run started elsewhere during a
benchmark skews it. This script builds the bench once, copies the binary (so
that a concurrent rebuild cannot swap it halfway), and then for each group
(all by default): waits until the CPUs are at least PCT% idle (default 85)
for 6 s, runs the group with a raised priority, and measures how much CPU
other processes used meanwhile. A group during which others used more than
5% of one core is run again, up to N times (default 4); the last attempt is
kept either way and the report says so. Every run of a group measures all
four libraries in a row, as `cargo bench -p breakwater --bench breaker`
does. Standard library only.
"""

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

GROUPS = [
    "state",
    "closed_sync",
    "closed_async",
    "open_rejection",
    "open_rejection_runtime",
    "failures_10pct",
    "two_threads",
    "reference",
]
OTHERS_LIMIT = 0.05  # cores used by other processes during a group
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_times():
    """(busy, total) seconds of all CPUs since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    total = sum(fields)
    return (total - idle) / TICK, total / TICK


def wait_idle(pct, limit_s=1800):
    """Wait until the CPUs are pct% idle over three 2 s windows."""
    start, quiet = time.time(), 0
    while time.time() - start < limit_s:
        b1, t1 = cpu_times()
        time.sleep(2)
        b2, t2 = cpu_times()
        idle = 100.0 * (1 - (b2 - b1) / max(t2 - t1, 1e-9))
        quiet = quiet + 1 if idle >= pct else 0
        if quiet >= 3:
            return True
    return False


def build():
    """Build the bench; return the path of its executable."""
    out = subprocess.run(
        ["cargo", "bench", "-p", "breakwater", "--bench", "breaker",
         "--no-run", "--message-format=json"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "breaker":
            return msg["executable"]
    sys.exit("no executable for the breaker bench")


def source_version():
    """The commit and a digest of crates/breakwater/src as it is on disk."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    digest = hashlib.sha256()
    src = os.path.join(ROOT, "crates", "breakwater", "src")
    for d, _, files in sorted(os.walk(src)):
        for name in sorted(files):
            path = os.path.join(d, name)
            digest.update(os.path.relpath(path, src).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return "%s, src sha256 %s" % (head or "no commit", digest.hexdigest()[:12])


def raise_priority():
    try:
        os.nice(-15)
    except OSError:
        pass


def run_group(exe, group, env):
    """Run one group; return the cores other processes used meanwhile."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1, _ = cpu_times()
    t1 = time.time()
    subprocess.run([exe, "--bench", "^%s/" % group], cwd=ROOT, env=env,
                   check=True, preexec_fn=raise_priority)
    wall = time.time() - t1
    b2, _ = cpu_times()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return max(0.0, (b2 - b1) - own) / wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=4)
    ap.add_argument("--idle", type=float, default=85.0)
    ap.add_argument("groups", nargs="*", default=GROUPS)
    args = ap.parse_args()

    for _ in range(20):
        version = source_version()
        try:
            exe = build()
        except subprocess.CalledProcessError:
            print("[quiet_run] build failed; again", file=sys.stderr)
            time.sleep(30)
            continue
        if source_version() == version:
            break
        print("[quiet_run] crates/breakwater/src changed during the build; again",
              file=sys.stderr)
        time.sleep(30)
    else:
        sys.exit("no consistent build of crates/breakwater/src")
    frozen_dir = tempfile.mkdtemp(prefix="breaker-bench-")
    frozen = os.path.join(frozen_dir, "breaker")
    shutil.copy2(exe, frozen)
    env = dict(os.environ)
    env.setdefault("CRITERION_HOME", os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "criterion"))

    report = []
    try:
        for group in args.groups:
            for attempt in range(1, args.tries + 1):
                if not wait_idle(args.idle):
                    print("machine never quiet; running %s anyway" % group, file=sys.stderr)
                others = run_group(frozen, group, env)
                print("[quiet_run] %s: attempt %d, other processes used %.2f cores"
                      % (group, attempt, others), file=sys.stderr)
                if others <= OTHERS_LIMIT:
                    break
            report.append((group, attempt, others))
    finally:
        shutil.rmtree(frozen_dir, ignore_errors=True)

    print("\n## Runs\n")
    print("breakwater at %s\n" % version)
    print("| group | attempts | CPU used by other processes (cores) | quiet |")
    print("|---|---|---|---|")
    for group, attempts, others in report:
        print("| %s | %d | %.2f | %s |" % (group, attempts, others,
                                          "yes" if others <= OTHERS_LIMIT else "**no**"))
    print()
    subprocess.run([sys.executable, os.path.join(HERE, "ratios.py"), env["CRITERION_HOME"]],
                   check=True)


if __name__ == "__main__":
    main()
