#!/usr/bin/env python3
"""End to end against a real Prometheus.

Starts the prometheus_exporter example and a Prometheus (127.0.0.1, a free
port, a temporary data directory, 1 s scrape and evaluation intervals) that
scrapes it with deploy/prometheus/alerts.yml loaded. Then:

* every expression of deploy/grafana/breakwater.json and every alert rule of
  the breaker group (as Prometheus loaded it) must return data;
* the CircuitBreakerOpen expression (without its `for`) must be true for a
  breaker held open through the exporter's control route, and false once it
  is reset; while held, the alert must be pending.

The dispatch group's rules and the dashboard's dispatch panels need the
breakwater-dispatch service's series. With --dispatch-bin (the `breakwater`
binary), its `demo` runs on loopback and is scraped too, and one malformed
event is posted to it (so that `breakwater_dispatch_intake_refused_total`
has a series: the demo itself is never refused). Then every series those
rules and panels use must have data, every dispatch panel must return data,
and every dispatch rule must evaluate and, with its thresholds turned into
`bool` comparisons (same series, same label matching, 0 or 1 instead of
filtered), return data: their thresholds (a backlog growing for 15 minutes,
a dead letter) are not reached in a short run; alerts_test.yml proves them
firing. The only exceptions are the families in MAY_BE_ABSENT, which the
service creates at their first event and the demo cannot cause (an action
dead-lettered over its endpoint's backlog quota): when one has no series, the
expressions that read it must still evaluate without error, and the run
lists them as not proven (WARNING lines) without failing. Without
--dispatch-bin the dispatch rules and panels are only checked to evaluate,
and the run says so.

Everything started is stopped at the end, whatever happens. Exit status 0 on
success, 1 with a list of failures otherwise.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "breakwater.json")
HELD = "http://held:80"
BREAKER_GROUP = "breakwater-circuit-breakers"
DISPATCH_GROUP = "breakwater-dispatch"
DISPATCH_SERIES = re.compile(r"breakwater_dispatch_\w+")
# Labelled counter families that prometheus-client does not expose at all
# (not even # TYPE) before their first event, that the service does not
# create at zero, and that the demo cannot cause: none today. Every dispatch
# series must have data (the per-endpoint delivered, deferred, retried,
# dead-lettered and over-quota counters are created at zero for every
# configured endpoint; the intake refusals are provoked by provoke_refusal).
MAY_BE_ABSENT = {}


def log(msg):
    print(f"prometheus-e2e: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, data=None, timeout=10):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


class Prom:
    def __init__(self, base):
        self.base = base

    def query(self, expr):
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            _, body = http(url)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"query {expr!r} failed: HTTP {e.code}: {e.read().decode()}")
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {answer}")
        return answer["data"]["result"]

    def metadata(self, metric):
        url = f"{self.base}/api/v1/metadata?" + urllib.parse.urlencode({"metric": metric})
        return json.loads(http(url)[1])["data"].get(metric, [])

    def rules(self):
        _, body = http(f"{self.base}/api/v1/rules")
        return json.loads(body)["data"]["groups"]


def wait_for(what, predicate, timeout):
    """Polls predicate() (truthy result = done) every 0.5 s until timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, RuntimeError, ValueError) as e:
            last_error = e
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" ({last_error})" if last_error else ""))


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    names = [v["name"] for v in dash["templating"]["list"]]
    if names[:2] != ["datasource", "endpoint"]:
        raise ValueError(f"dashboard variables are {names}, expected datasource and endpoint first")
    panels = []
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            # A row has no query; a collapsed one holds its panels.
            panels += panel.get("panels", [])
        else:
            panels.append(panel)
    for panel in panels:
        for item in [panel] + panel.get("targets", []):
            if item.get("datasource", {}).get("uid") != "${datasource}":
                raise ValueError(f"panel {panel['title']!r} does not use the datasource variable")
    exprs = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$endpoint", ".*")
                .replace("$__rate_interval", "30s")
                .replace("$__interval", "5s")
            )
            exprs.append((f"panel {panel['title']!r} {target['refId']}", expr))
    variables = [v for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs, variables


def thresholds_as_bool(expr):
    """`expr` with every comparison against a number made a `bool` one.

    `a > 0 and on (x) b > 600` becomes `a > bool 0 and on (x) b > bool 600`:
    the same series and the same label matching, but 0 or 1 rather than
    filtered, so it returns data whenever the series it reads exist, its
    thresholds reached or not.
    """
    return re.sub(
        r"(?<=\s)(==|!=|>=|<=|>|<)\s+(?!bool\b)(?=[-+]?(?:\d|\.\d|Inf\b|NaN\b))",
        r"\1 bool ",
        expr,
    )


def provoke_refusal(addr):
    """Posts one malformed event to the demo's POST /events: refused (400,
    or 401 if it wants a token), it creates a series of
    breakwater_dispatch_intake_refused_total."""
    req = urllib.request.Request(
        f"http://{addr}/events",
        data=b'{"event_type": "INSERT", "entity_type": ',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raise RuntimeError(f"POST /events with a malformed body was answered {r.status}")
    except urllib.error.HTTPError as e:
        if e.code not in (400, 401):
            raise RuntimeError(f"POST /events with a malformed body was answered {e.code}: {e.read().decode()}")
        return e.code


def stop(proc, name):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop on SIGTERM; killing it")
        proc.kill()
        proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exporter", required=True, help="path of the built prometheus_exporter example")
    ap.add_argument("--dispatch-bin", help="the breakwater-dispatch binary, whose demo is scraped too")
    ap.add_argument("--timeout", type=float, default=90, help="seconds to wait for each expression")
    args = ap.parse_args()

    prometheus = shutil.which("prometheus")
    if not prometheus:
        log("FAILED: no prometheus binary on PATH")
        return 1

    tmp = tempfile.mkdtemp(prefix="breakwater-prom-e2e-")
    exporter = prom_proc = dispatch_proc = None
    failures = []
    unproven = []
    try:
        exporter = subprocess.Popen(
            [args.exporter, "--listen", "127.0.0.1:0", "--duration", "900"],
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        first = exporter.stdout.readline().strip()
        if not first.startswith("listening on "):
            log(f"FAILED: the exporter printed {first!r} instead of 'listening on ADDR'")
            return 1
        target = first.removeprefix("listening on ")
        log(f"exporter on {target}")

        targets = [target]
        if args.dispatch_bin:
            dispatch_addr = f"127.0.0.1:{free_port()}"
            dispatch_proc = subprocess.Popen(
                [os.path.abspath(args.dispatch_bin), "demo", "--listen", dispatch_addr, "--duration", "900"],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(tmp, "dispatch.log"), "w"),
            )
            targets.append(dispatch_addr)
            log(f"breakwater demo on {dispatch_addr}")

        port = free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                f"rule_files:\n  - {json.dumps(ALERTS)}\n"
                "scrape_configs:\n  - job_name: breakwater\n    static_configs:\n"
                f"      - targets: {json.dumps(targets)}\n"
            )
        prom_log = open(os.path.join(tmp, "prometheus.log"), "w")
        prom_proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=prom_log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        prom = Prom(base)
        try:
            wait_for("Prometheus to be ready", lambda: http(f"{base}/-/ready")[0] == 200, 60)
        except TimeoutError as e:
            prom_log.flush()
            with open(os.path.join(tmp, "prometheus.log")) as f:
                sys.stderr.write(f.read())
            log(f"FAILED: {e}")
            return 1
        log(f"Prometheus {base} (data in {tmp})")
        wait_for(
            "the exporter to be scraped",
            lambda: any(r["value"][1] == "1" for r in prom.query('up{job="breakwater"}')),
            60,
        )

        # The rules as Prometheus loaded them.
        groups = {g["name"]: g["rules"] for g in prom.rules()}
        for name in (BREAKER_GROUP, DISPATCH_GROUP):
            if name not in groups:
                failures.append(f"rule group {name} was not loaded")
        checks = [(f"alert {r['name']}", r["query"]) for r in groups.get(BREAKER_GROUP, [])]
        open_rule = next((r for r in groups.get(BREAKER_GROUP, []) if r["name"] == "CircuitBreakerOpen"), None)
        panel_exprs, variables = dashboard_exprs()
        checks += [(what, expr) for what, expr in panel_exprs if not DISPATCH_SERIES.search(expr)]
        dispatch_panels = [(what, expr) for what, expr in panel_exprs if DISPATCH_SERIES.search(expr)]
        dispatch = [(f"alert {r['name']}", r["query"]) for r in groups.get(DISPATCH_GROUP, [])]
        for what, expr in dispatch:
            try:
                prom.query(expr)
                log(f"evaluates  {what}: {expr}")
            except RuntimeError as e:
                failures.append(f"{what}: {e}")
        if args.dispatch_bin:
            try:
                code = wait_for("the demo to refuse a malformed event", lambda: provoke_refusal(dispatch_addr), 60)
                log(f"refused    POST /events with a malformed body: {code} (for breakwater_dispatch_intake_refused_total)")
            except TimeoutError as e:
                failures.append(f"provoking an intake refusal: {e}")
            exprs = dispatch + dispatch_panels
            names = sorted({n for _, expr in exprs for n in DISPATCH_SERIES.findall(expr)})
            what = "series of the dispatch rules and panels"
            for name in (n for n in names if n not in MAY_BE_ABSENT):
                try:
                    result = wait_for(f"{name} to return data", lambda: prom.query(name), args.timeout)
                    log(f"data       {what}: {name} -> {len(result)} series")
                except (TimeoutError, RuntimeError) as e:
                    failures.append(f"{what}: {name}: {e}")
            # The families the demo cannot cause: waited for together, once.
            maybe = [n for n in names if n in MAY_BE_ABSENT]
            try:
                wait_for(
                    f"{', '.join(maybe)} to return data",
                    lambda: all(prom.query(n) for n in maybe),
                    args.timeout,
                )
            except TimeoutError:
                pass
            absent = set()
            for name in maybe:
                result = prom.query(name)
                if result:
                    log(f"data       {what}: {name} -> {len(result)} series")
                    continue
                absent.add(name)
                # Declared by the service (# TYPE / # HELP) with no sample yet?
                family = name.removesuffix("_total")
                declared = prom.metadata(family) or prom.metadata(name)
                if declared:
                    log(f"declared   {what}: {name} (exposed with no sample yet: {declared[0].get('type')})")
                else:
                    # prometheus-client writes nothing, not even # TYPE,
                    # for a labelled family before its first label set.
                    unproven.append(name)
                    log(
                        f"WARNING    {what}: {name} NOT PROVEN: no series after {args.timeout:.0f}s and not "
                        f"declared: {MAY_BE_ABSENT[name]}; the service creates this family at its first event"
                    )
            for what, expr in [(w, thresholds_as_bool(e)) for w, e in dispatch] + dispatch_panels:
                missing = sorted(absent & set(DISPATCH_SERIES.findall(expr)))
                try:
                    if missing:
                        # Evaluated once, no waiting: it must not fail.
                        result = prom.query(expr)
                        if not result:
                            unproven.append(what)
                            log(f"WARNING    {what}: {expr} evaluates, NOT PROVEN: no data ({', '.join(missing)} has no series)")
                            continue
                    else:
                        result = wait_for(f"{what} to return data", lambda: prom.query(expr), args.timeout)
                    log(f"data       {what}: {expr} -> {len(result)} series")
                except (TimeoutError, RuntimeError) as e:
                    failures.append(f"{what}: {expr}: {e}")
        else:
            log(
                f"the {len(dispatch)} rules of {DISPATCH_GROUP} and the {len(dispatch_panels)} dispatch panel "
                "expressions need breakwater-dispatch's series, which this run does not scrape (no --dispatch-bin): "
                "checking only that they evaluate"
            )
            for what, expr in dispatch_panels:
                try:
                    prom.query(expr)
                    log(f"evaluates  {what}: {expr}")
                except RuntimeError as e:
                    failures.append(f"{what}: {e}")

        # The dashboard's variables.
        for v in variables:
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            metric, label = q.removeprefix("label_values(").removesuffix(")").split(",")
            url = f"{base}/api/v1/label/{label.strip()}/values?" + urllib.parse.urlencode({"match[]": metric.strip()})
            values = json.loads(http(url)[1])["data"]
            if values:
                log(f"data       variable {v['name']}: {q} -> {len(values)} values")
            else:
                failures.append(f"variable {v['name']}: {q} returned no values")

        for what, expr in checks:
            try:
                result = wait_for(f"{what} to return data", lambda: prom.query(expr), args.timeout)
                log(f"data       {what}: {expr} -> {len(result)} series")
            except (TimeoutError, RuntimeError) as e:
                failures.append(f"{what}: {expr}: {e}")

        # CircuitBreakerOpen, held open and released.
        if open_rule is None:
            failures.append("no CircuitBreakerOpen rule")
        else:
            expr = open_rule["query"]
            quoted = urllib.parse.quote(HELD, safe="")
            held = lambda: [r for r in prom.query(expr) if r["metric"].get("endpoint") == HELD]
            try:
                if held():
                    raise RuntimeError(f"{expr} is already true for {HELD} before it was opened")
                http(f"http://{target}/control/open/{quoted}", data=b"")
                wait_for(f"{expr} to be true for {HELD} while held open", held, 30)
                log(f"true       CircuitBreakerOpen: {expr} while {HELD} is held open")
                pending = (
                    f'ALERTS{{alertname="CircuitBreakerOpen",alertstate="pending",endpoint="{HELD}"}}'
                )
                wait_for("CircuitBreakerOpen to be pending", lambda: prom.query(pending), 30)
                log(f"pending    {pending}")
                http(f"http://{target}/control/reset/{quoted}", data=b"")
                wait_for(f"{expr} to be false for {HELD} once reset", lambda: not held(), 30)
                log(f"false      CircuitBreakerOpen: {expr} once {HELD} is closed")
            except (TimeoutError, RuntimeError, OSError) as e:
                failures.append(f"CircuitBreakerOpen on {HELD}: {e}")
    finally:
        stop(prom_proc, "prometheus")
        stop(exporter, "exporter")
        stop(dispatch_proc, "breakwater demo")
        shutil.rmtree(tmp, ignore_errors=True)

    if failures:
        log(f"FAILED ({len(failures)}):")
        for f in failures:
            print(f"  - {f}", flush=True)
        return 1
    if unproven:
        log(
            f"{len(unproven)} dispatch series or expressions evaluated but not proven with data "
            f"(see the WARNING lines): {', '.join(unproven)}"
        )
        log(
            "every checked expression evaluated, and returned data but for the ones above; "
            "CircuitBreakerOpen follows a held-open breaker"
        )
    else:
        log("every checked expression returned data; CircuitBreakerOpen follows a held-open breaker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
