#!/usr/bin/env python3
"""Print the BENCHMARKS.md tables from criterion's output of the `breaker` bench.

Usage:
    python3 crates/breakwater/benches/ratios.py [CRITERION_DIR]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion, else to the
workspace's target/criterion. The figures are the medians criterion wrote to
<group>/<function>/new/estimates.json (nanoseconds per call; per call per
thread for two_threads). Standard library only.
"""

import json
import os
import sys

LIBRARIES = ["breakwater", "failsafe", "recloser", "tower-resilience"]

# Scenario, kind of target, bound. "abs": breakwater's median in ns must be
# <= bound; "ratio": breakwater / fastest peer must be <= bound.
SCENARIOS = [
    ("state", "abs", 1.0),
    ("closed_sync", "ratio", 0.5),
    ("closed_async", "ratio", 0.5),
    ("open_rejection", "ratio", 0.5),
    ("failures_10pct", "ratio", 0.6),
    ("two_threads", "ratio", 0.5),
]

REFERENCE = [
    "counter_read",
    "tokio_instant_now",
    "std_instant_now",
    "atomic_fetch_add",
    "mutex_lock_unlock",
]


def default_dir():
    target = os.environ.get("CARGO_TARGET_DIR")
    if not target:
        here = os.path.dirname(os.path.abspath(__file__))
        target = os.path.join(here, "..", "..", "..", "target")
    return os.path.normpath(os.path.join(target, "criterion"))


def median(root, group, function):
    """(median, ci_low, ci_high) in ns, or None when not measured."""
    path = os.path.join(root, group, function, "new", "estimates.json")
    try:
        with open(path) as f:
            m = json.load(f)["median"]
    except FileNotFoundError:
        return None
    ci = m["confidence_interval"]
    return m["point_estimate"], ci["lower_bound"], ci["upper_bound"]


def ns(x):
    if x is None:
        return "n/a"
    if x < 10:
        return "%.2f" % x
    if x < 100:
        return "%.1f" % x
    return "%.0f" % x


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else default_dir()
    if not os.path.isdir(root):
        sys.exit("no criterion output in %s: run `cargo bench -p breakwater --bench breaker`" % root)

    print("## Summary (median ns per call)\n")
    print("| scenario | " + " | ".join(LIBRARIES)
          + " | fastest peer | breakwater / fastest peer | target | met |")
    print("|---" * (len(LIBRARIES) + 5) + "|")
    for group, kind, bound in SCENARIOS:
        meds = {lib: median(root, group, lib) for lib in LIBRARIES}
        cells = [ns(meds[lib][0]) if meds[lib] else "n/a" for lib in LIBRARIES]
        peers = [(meds[lib][0], lib) for lib in LIBRARIES[1:] if meds[lib]]
        bw = meds["breakwater"][0] if meds["breakwater"] else None
        fastest = min(peers) if peers else None
        ratio = bw / fastest[0] if bw is not None and fastest else None
        if kind == "abs":
            target = "<= %g ns" % bound
            met = None if bw is None else bw <= bound
        else:
            target = "ratio <= %g" % bound
            met = None if ratio is None else ratio <= bound
        print("| %s | %s | %s | %s | %s | %s |" % (
            group,
            " | ".join(cells),
            "%s (%s)" % (fastest[1], ns(fastest[0])) if fastest else "n/a",
            "%.2f" % ratio if ratio is not None else "n/a",
            target,
            {None: "not measured", True: "**yes**", False: "**no**"}[met],
        ))

    extra = median(root, "open_rejection_runtime", "breakwater")
    if extra is not None:
        peers = [(m[0], lib) for lib in LIBRARIES[1:]
                 for m in [median(root, "open_rejection", lib)] if m]
        if peers:
            fastest = min(peers)
            ratio = extra[0] / fastest[0]
            print("\nopen_rejection_runtime (breakwater tripped inside a tokio runtime, its "
                  "timer task running): %s ns, %.2f x open_rejection's fastest peer %s "
                  "(target ratio <= 0.3: %s)" % (ns(extra[0]), ratio, fastest[1],
                                                   "met" if ratio <= 0.3 else "not met"))

    print("\n## Per scenario (median ns, [95% CI of the median])\n")
    for group, _, _ in SCENARIOS:
        print("### %s\n" % group)
        print("| library | median ns | 95% CI | / breakwater |")
        print("|---|---|---|---|")
        bw = median(root, group, "breakwater")
        for lib in LIBRARIES:
            m = median(root, group, lib)
            if m is None:
                print("| %s | n/a | | |" % lib)
                continue
            rel = "%.2f" % (m[0] / bw[0]) if bw else ""
            print("| %s | %s | [%s, %s] | %s |" % (lib, ns(m[0]), ns(m[1]), ns(m[2]), rel))
        print()

    print("### reference\n")
    print("| operation | median ns | 95% CI |")
    print("|---|---|---|")
    for fn in REFERENCE:
        m = median(root, "reference", fn)
        if m is None:
            print("| %s | n/a | |" % fn)
        else:
            print("| %s | %s | [%s, %s] |" % (fn, ns(m[0]), ns(m[1]), ns(m[2])))


if __name__ == "__main__":
    main()
