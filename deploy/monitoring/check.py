#!/usr/bin/env python3
"""Checks of the running observability stack (`make check-observability`, `make status`).

Needs the whole stack (`make up`: platform, services, monitoring) and some traffic (the
demo), because it asks the live tools, never a fake:

  metrics     every metric a dashboard panel or an alert rule names has series in the live
              Prometheus (a panel naming a metric nobody exports fails), and a made-up
              name is reported missing (the checker's own negative case). A labelled
              `_total` counter a service creates on its first event (dead letters,
              publish failures) passes without series only if the workspace registers
              that name. A target written to the file_sd folder must get scraped, and
              every alert rule must be loaded and evaluate without error
  logs        posts an order to ingress and finds its log lines from ingress, payment and
              the pipeline in VictoriaLogs by its order id, one trace id in all three (the
              traceparent continued across the hops); a made-up order id finds none, and
              synthetic lines of a known order written to VictoriaLogs are all found
  dashboard   headless Chromium (over WebDriver) opens the vmui page, each dashboard tab
              and every row: each panel must be drawn as a chart and each dashboard must
              show series; a screenshot per dashboard (a made-up tab must not be found)
  all         the three above (make check-observability)
  status      up/all targets per job and the firing alerts (for `make status`)
  order-logs  every log line of one order or trace (make logs ORDER=... / TRACE=...)

Standard library only, like generate.py.
"""

import argparse
import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

PROM = "http://127.0.0.1:9090"
VLOGS = "http://127.0.0.1:9428"
INGRESS = "http://127.0.0.1:8080"
DASHBOARD_PAGE = "http://127.0.0.1:8428/vmui/#/dashboards"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# The services (their `service` log field: ingress, payment, the pipeline) whose lines one
# order must have in the log store.
ORDER_SERVICES = ("order-service", "payment-service", "inventory-service")
# A name no exporter uses: the metrics check must report it (its own negative case).
MADE_UP_METRIC = "orderpipeline_made_up_metric_total"

# PromQL words that look like metric names but are not.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "sum", "min", "max", "avg", "count", "stddev", "stdvar",
    "topk", "bottomk", "quantile", "count_values", "group", "inf", "nan", "atan2",
}


class CheckError(Exception):
    """A check found something wrong."""


def get_json(url: str, timeout: float = 10.0, data: bytes | None = None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def prom_query(prom: str, expr: str):
    """The result vector of an instant query."""
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = get_json(url)
    if body.get("status") != "success":
        raise CheckError(f"query {expr!r} failed: {body}")
    return body["data"]["result"]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, durations, grouping
    labels, strings and function names left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def definitions():
    """(where, PromQL) of every dashboard panel target and every alert rule."""
    out = subprocess.run(
        [sys.executable, str(HERE / "generate.py"), "exprs"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [(d["source"], d["expr"]) for d in map(json.loads, out.splitlines())]


def declared_in(name: str):
    """The workspace source file that registers metric `name` (histogram suffixes
    stripped), or None. For the counters the services create on their first event (a
    labelled counter has no series before: dead letters, publish failures)."""
    base = re.sub(r"_(bucket|count|sum)$", "", name)
    for path in sorted(ROOT.glob("*/src/**/*.rs")):
        if f'"{base}"' in path.read_text(errors="replace"):
            return path.relative_to(ROOT)
    return None


def missing_metrics(prom: str, exprs):
    """({name: places} without series and not declared, {name: declaring file} without
    series yet but registered by a service, {name: places} of every name)."""
    used: dict[str, list[str]] = {}
    for where, expr in exprs:
        for name in metric_names(expr):
            used.setdefault(name, []).append(where)
    missing, lazy = {}, {}
    for name, places in sorted(used.items()):
        if prom_query(prom, f'count({{__name__="{name}"}})'):
            continue
        # Only event counters may lack series: a gauge or histogram is always set.
        source = declared_in(name) if name.endswith("_total") else None
        if source:
            lazy[name] = source
        else:
            missing[name] = places
    return missing, lazy, used


def file_sd_works(prom: str, targets: Path, wait: float) -> None:
    """A target written to the file_sd folder is scraped without a reload, and dropped
    when its file goes (VictoriaLogs' own /metrics stands in for a new process)."""
    job = f"check-file-sd-{uuid.uuid4().hex[:8]}"
    path = targets / f"{job}.json"
    path.write_text(json.dumps([{"targets": [VLOGS.split("//")[1]], "labels": {"job": job}}]))
    try:
        deadline = time.monotonic() + wait
        while not prom_query(prom, f'up{{job="{job}"}} == 1'):
            if time.monotonic() > deadline:
                raise CheckError(f"a target in {path} was not scraped within {wait:.0f} s")
            time.sleep(1)
    finally:
        path.unlink()


def rule_problems(prom: str) -> list[str]:
    """Every alert of alerts.yaml is loaded in the live Prometheus and evaluates without
    error (a PromQL error on real label sets, e.g. a many-to-many match, shows only here)."""
    sys.path.insert(0, str(HERE))
    import generate  # noqa: E402 (the sibling script)

    wanted = {name for name, _ in generate.alert_exprs()}
    live = {}
    for group in get_json(f"{prom}/api/v1/rules")["data"]["groups"]:
        for rule in group["rules"]:
            live[rule["name"]] = rule
    problems = [f"alert {name} is not loaded" for name in sorted(wanted - set(live))]
    for name in sorted(wanted & set(live)):
        if live[name].get("health") not in ("ok", "unknown"):
            problems.append(f"alert {name}: {live[name].get('health')}: {live[name].get('lastError')}")
    return problems


def cmd_metrics(args) -> int:
    """Every metric a panel or rule names has series; the made-up name is reported."""
    exprs = definitions()
    deadline = time.monotonic() + args.wait
    while True:
        missing, lazy, used = missing_metrics(args.prometheus, exprs + [("negative case", MADE_UP_METRIC)])
        if MADE_UP_METRIC not in missing:
            raise CheckError(f"{MADE_UP_METRIC} was not reported missing: the check cannot see a missing metric")
        del missing[MADE_UP_METRIC]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(5)
    file_sd_works(args.prometheus, Path(args.targets), max(args.wait, 20.0))  # refresh is 5 s
    rules = rule_problems(args.prometheus)
    names = len(used) - 1
    print(f"metrics: {len(exprs)} panel and alert expressions name {names} metrics; "
          f"{names - len(missing) - len(lazy)} have series in {args.prometheus}, "
          f"{len(lazy)} are registered by a service but have no series before their first event, "
          f"{len(missing)} are exported by nobody; the made-up {MADE_UP_METRIC} was reported (as it must); "
          f"a target written to {args.targets} was scraped; "
          f"{'every alert rule is loaded and evaluates' if not rules else 'RULE PROBLEMS below'}")
    for problem in rules:
        print(f"  {problem}")
    for name, source in lazy.items():
        print(f"  no series yet: {name} (registered in {source})")
    # A panel may be empty for a good reason (no dead letters, nothing aborted); listed,
    # not failed. Alert expressions are empty whenever nothing fires.
    empty = sorted({where for where, expr in exprs
                    if not where.startswith("alerts.yaml") and not prom_query(args.prometheus, expr)})
    panels = len({where for where, _ in exprs if not where.startswith("alerts.yaml")})
    print(f"  {panels - len(empty)}/{panels} panels have data now" + (": empty are" if empty else ""))
    for where in empty:
        print(f"    {where}")
    for name, places in missing.items():
        print(f"  MISSING {name}: no series, used by {'; '.join(sorted(set(places)))}")
    return 1 if missing or rules else 0


def logsql(vlogs: str, query: str, limit: int = 1000):
    """The log entries a LogsQL query matches, in the order the query sorts them (the
    `_time` strings have a varying number of fractional digits: not sortable as text)."""
    url = f"{vlogs}/select/logsql/query?" + urllib.parse.urlencode({"query": query, "limit": limit})
    with urllib.request.urlopen(url, timeout=10) as response:
        return [json.loads(line) for line in response.read().decode().splitlines() if line]


def quoted(value: str) -> str:
    return json.dumps(value)


def order_query(order: str | None, trace: str | None, traces=()) -> str:
    """LogsQL for one order: its order_id field, or the id inside span fields or the
    message, or any of its trace ids."""
    parts = []
    if order:
        parts += [f"order_id:={quoted(order)}", f"spans:{quoted(order)}", f"_msg:{quoted(order)}"]
    for t in ([trace] if trace else []) + list(traces):
        parts.append(f"trace_id:={quoted(t)}")
    return " OR ".join(parts) + " | sort by (_time)"


def order_lines(vlogs: str, order: str | None, trace: str | None):
    """Lines of an order, then also lines carrying the trace ids those lines name."""
    entries = logsql(vlogs, order_query(order, trace))
    traces = sorted({e["trace_id"] for e in entries if e.get("trace_id")} - {trace})
    if traces:
        entries = logsql(vlogs, order_query(order, trace, traces))
    return entries


def cmd_order_logs(args) -> int:
    if not args.order and not args.trace:
        raise CheckError("name the order: make logs ORDER=<order id> (or TRACE=<trace id>)")
    entries = order_lines(args.vlogs, args.order, args.trace)
    if not entries:
        print(f"no log lines for {args.order or args.trace} in {args.vlogs} (VictoriaLogs)")
        return 1
    skip = {"_time", "_msg", "_stream", "_stream_id", "service", "level", "file", "hostname", "timestamp"}
    for e in entries:
        extra = " ".join(f"{k}={v}" for k, v in sorted(e.items()) if k not in skip and v)
        print(f"{e.get('_time', '')[:23]} {e.get('service', '?'):<17} {e.get('level', ''):<5} {e.get('_msg', '')}  {extra}")
    return 0


def post_order(ingress: str, customer: str) -> str:
    body = json.dumps({
        "customer_id": customer,
        "currency": "EUR",
        "lines": [{"sku": "SKU-001", "quantity": 1, "unit_price_minor": 1999}],
    }).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": customer}
    try:
        answer = get_json(f"{ingress}/v1/orders", data=body, headers=headers)
    except urllib.error.HTTPError as e:
        raise CheckError(f"POST {ingress}/v1/orders answered {e.code}: {e.read()[:300]!r}") from e
    return answer["order_id"]


def order_problems(entries) -> list[str]:
    """What is wrong with one order's log lines: a service without lines, or no trace id
    in lines of all of ORDER_SERVICES (ingress starts the trace with the traceparent
    header, payment and the pipeline continue it, so one order is one trace)."""
    services = {e.get("service") for e in entries}
    lacking = [s for s in ORDER_SERVICES if s not in services]
    if lacking:
        return [f"no lines from {', '.join(lacking)}"]
    traces = {e["trace_id"] for e in entries if e.get("trace_id")}
    shared = [t for t in sorted(traces)
              if set(ORDER_SERVICES) <= {e.get("service") for e in entries if e.get("trace_id") == t}]
    if not shared:
        by_service = {s: sorted({e.get("trace_id") for e in entries if e.get("service") == s} - {None})
                      for s in ORDER_SERVICES}
        return [f"no trace id in lines of all of {', '.join(ORDER_SERVICES)}: {by_service}"]
    return []


def known_lines_are_found(vlogs: str, wait: float) -> None:
    """The query's positive control, independent of the services: four synthetic lines of
    a fresh order id (one of them carrying only its trace id) are written to VictoriaLogs'
    JSON-lines endpoint and must all come back, in time order, through order_lines."""
    order, trace = f"check-{uuid.uuid4()}", uuid.uuid4().hex
    now = time.time()
    lines = [
        {"service": s, "order_id": order, "trace_id": trace, "level": "INFO",
         "message": "check.py synthetic line (make check-observability)",
         "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + i)) + "Z"}
        for i, s in enumerate(ORDER_SERVICES)
    ]
    lines.append(dict(lines[-1], order_id=None, timestamp=lines[-1]["timestamp"].replace("Z", ".5Z")))
    body = "\n".join(json.dumps({k: v for k, v in line.items() if v}) for line in lines).encode()
    url = f"{vlogs}/insert/jsonline?" + urllib.parse.urlencode(
        {"_stream_fields": "service", "_msg_field": "message", "_time_field": "timestamp"})
    # A form content type (urllib's default) would make the server read the body as a form.
    headers = {"Content-Type": "application/stream+json"}
    urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10).close()
    deadline = time.monotonic() + wait
    while True:
        found = order_lines(vlogs, order, None)
        if len(found) >= len(lines) or time.monotonic() > deadline:
            break
        time.sleep(1)
    if len(found) != len(lines) or order_problems(found):
        raise CheckError(f"{len(lines)} synthetic lines of order {order} written to VictoriaLogs, "
                         f"{len(found)} found by the order query: {found}")
    if [e.get("service") for e in found][: len(ORDER_SERVICES)] != list(ORDER_SERVICES):
        raise CheckError(f"the order's lines are not in time order: {found}")


def cmd_logs(args) -> int:
    """An order posted now has log lines from ingress, payment and the pipeline, with one
    trace id through all three."""
    made_up = str(uuid.uuid4())
    if logsql(args.vlogs, order_query(made_up, None)):
        raise CheckError(f"the made-up order {made_up} matched log lines: the query matches too much")
    known_lines_are_found(args.vlogs, args.wait)
    order = post_order(args.ingress, f"obs-check-{uuid.uuid4().hex[:12]}")
    deadline = time.monotonic() + args.wait
    while True:
        entries = order_lines(args.vlogs, order, None)
        problems = order_problems(entries)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(2)
    services = sorted({e.get("service") or "?" for e in entries})
    traces = sorted({e["trace_id"] for e in entries if e.get("trace_id")})
    print(f"logs: order {order}: {len(entries)} lines in VictoriaLogs from {', '.join(services) or 'no service'}; "
          f"trace ids {traces or 'none'}; a made-up order id matched none, synthetic lines "
          f"of a known order (one by trace id only) were all found")
    for problem in problems:
        print(f"  FAILED within {args.wait:.0f} s: {problem} (query: {order_query(order, None)})")
    return 1 if problems else 0


def chromium() -> tuple[str, str]:
    """Chromium and its WebDriver (Debian: chromium, chromium-driver)."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise CheckError("chromium or chromedriver not found: apt-get install -y --no-install-recommends chromium chromium-driver")
    return browser, driver


class Browser:
    """A headless Chromium driven over WebDriver (chromedriver on a free loopback port):
    the vmui page is a JavaScript app whose dashboards are tabs, so clicks are needed."""

    def __init__(self, width: int, height: int):
        browser, driver = chromium()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.profile = tempfile.TemporaryDirectory()
        self.driver = subprocess.Popen(
            [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                get_json(f"{self.base}/status", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise CheckError("chromedriver did not start") from None
                time.sleep(0.2)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": browser, "args": args}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as e:
            raise CheckError(f"WebDriver {method} {path}: {e.read()[:300]!r}") from e

    def at(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def open(self, url: str) -> None:
        self.call("POST", self.at("/url"), {"url": url})

    def script(self, source: str, *args):
        return self.call("POST", self.at("/execute/sync"), {"script": source, "args": list(args)})

    def screenshot(self, path: Path) -> int:
        png = base64.b64decode(self.call("GET", self.at("/screenshot")))
        path.write_bytes(png)
        return len(png)

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self.call("DELETE", self.at(""))
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=10)
            self.profile.cleanup()


# In the page: open every collapsed row, then report each panel's title and how many
# series its legend lists.
PANELS_JS = """
document.querySelectorAll('.vm-accordion-header:not(.vm-accordion-header_open)').forEach(h => h.click());
return Array.from(document.querySelectorAll('.vm-predefined-panel')).map(p => {
  const t = p.querySelector('.vm-predefined-panel-header__title');
  return [t ? t.textContent.trim() : '', p.querySelectorAll('.vm-legend-item').length,
          p.querySelectorAll('.uplot').length];
});
"""
TAB_JS = """
const tab = Array.from(document.querySelectorAll('.vm-predefined-panels-tabs__tab'))
  .find(t => t.textContent.trim() === arguments[0]);
if (tab) { tab.click(); }
return !!tab;
"""


def cmd_dashboard(args) -> int:
    """Every dashboard tab of the vmui page renders all its panels as charts, with series
    drawn; a screenshot per dashboard."""
    sys.path.insert(0, str(HERE))
    import generate  # noqa: E402 (the sibling script)

    expected = [generate.vmui_dashboard(path, d) for path, d in generate.dashboards()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    # A tall window: vmui draws a panel only once it is scrolled into view.
    browser = Browser(1400, 8000)
    try:
        browser.open(args.url)
        made_up = "Dashboard nobody defined " + uuid.uuid4().hex[:8]
        for number, dashboard in enumerate(expected, 1):
            if browser.script(TAB_JS, made_up):
                raise CheckError("a made-up dashboard tab was found in the page")
            if not browser.script(TAB_JS, dashboard["title"]):
                print(f"dashboard {dashboard['title']!r}: NO TAB on {args.url}")
                failed += 1
                continue
            titles = [p["title"] for row in dashboard["rows"] for p in row["panels"]]
            # Until every panel is drawn, or nothing changed for three polls (6 s: the
            # queries are answered), or the wait is over.
            deadline = time.monotonic() + args.wait
            last, stable = None, 0
            while True:
                time.sleep(2)
                seen = {t: (series, charts) for t, series, charts in browser.script(PANELS_JS)}
                absent = [t for t in titles if seen.get(t, (0, 0))[1] < 1]
                drawn = [t for t in titles if seen.get(t, (0, 0))[0] > 0]
                stable = stable + 1 if (absent, drawn) == last else 0
                last = (absent, drawn)
                if (not absent and len(drawn) == len(titles)) or stable >= 3 or time.monotonic() > deadline:
                    break
            # The screenshot: the window shrinks to the page's height.
            height = int(browser.script(
                "const d = document.querySelectorAll('.vm-predefined-dashboard');"
                "return Math.ceil(d.length ? d[d.length - 1].getBoundingClientRect().bottom + 40 : 1000);"))
            browser.call("POST", browser.at("/window/rect"), {"width": 1400, "height": min(height + 100, 8000)})
            time.sleep(1)
            shot = out / f"dashboard-{number}.png"
            size = browser.screenshot(shot)
            browser.call("POST", browser.at("/window/rect"), {"width": 1400, "height": 8000})
            print(f"dashboard {dashboard['title']!r}: {len(titles) - len(absent)}/{len(titles)} panels "
                  f"rendered as charts, {len(drawn)} with series; screenshot {shot} ({size // 1024} KiB)")
            if absent:
                print(f"  NOT RENDERED: {', '.join(absent)}")
            empty = [t for t in titles if t not in drawn and t not in absent]
            if empty:
                print(f"  (no series right now: {', '.join(empty)})")
            if absent or not drawn:
                failed += 1
        print("dashboard: a made-up dashboard tab was not found (as it must not be)")
    finally:
        browser.close()
    return 1 if failed else 0


def cmd_all(args) -> int:
    failed = 0
    for check in (cmd_metrics, cmd_dashboard, cmd_logs):
        try:
            failed += check(args) != 0
        except (CheckError, OSError, subprocess.SubprocessError) as e:
            print(f"{check.__name__[4:]}: FAILED: {e}")
            failed += 1
    print("observability checks: " + (f"{failed} FAILED" if failed else "all passed"))
    return 1 if failed else 0


def cmd_status(args) -> int:
    up = prom_query(args.prometheus, "sum by (job) (up)")
    total = prom_query(args.prometheus, "count by (job) (up)")
    ups = {r["metric"].get("job", "?"): int(float(r["value"][1])) for r in up}
    for r in sorted(total, key=lambda r: r["metric"].get("job", "")):
        job = r["metric"].get("job", "?")
        print(f"{job:<12} {ups.get(job, 0)}/{int(float(r['value'][1]))} up")
    alerts = get_json(f"{args.prometheus}/api/v1/alerts")["data"]["alerts"]
    firing = [a for a in alerts if a.get("state") == "firing"]
    if not firing:
        print("no alert firing")
    for a in firing:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "alertname")
        print(f"FIRING {a['labels'].get('alertname')} ({labels})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status")
    p.add_argument("--prometheus", default=PROM)
    p.set_defaults(func=cmd_status)
    for name, func in (("metrics", cmd_metrics), ("logs", cmd_logs),
                       ("dashboard", cmd_dashboard), ("all", cmd_all)):
        p = sub.add_parser(name)
        p.add_argument("--prometheus", default=PROM)
        p.add_argument("--vlogs", default=VLOGS)
        p.add_argument("--ingress", default=INGRESS)
        p.add_argument("--url", default=DASHBOARD_PAGE)
        p.add_argument("--out", default="target/observability")
        p.add_argument("--targets", default=str(ROOT / ".run/prometheus/targets"),
                       help="Prometheus' file_sd folder")
        p.add_argument("--wait", type=float, default=60.0,
                       help="seconds to wait for metrics or log lines to arrive")
        p.set_defaults(func=func)
    p = sub.add_parser("order-logs")
    p.add_argument("--vlogs", default=VLOGS)
    p.add_argument("--order")
    p.add_argument("--trace")
    p.set_defaults(func=cmd_order_logs)
    args = parser.parse_args()
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader (| head) has gone
        return 0
    except (CheckError, OSError, subprocess.SubprocessError) as e:
        print(f"check.py {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
