#!/usr/bin/env python3
"""Generates the local stack's configuration from the files in deploy/monitoring/.

Each definition is written once, in the format Kubernetes and Grafana users load, and this
script derives what the local tools read (standard library only: it runs on a fresh
machine before anything is installed):

  prometheus --run RUN --out DIR   prometheus.yml (from prometheus.yml, @RUN@ filled in) and
                                   rules.yml (the `spec` of the PrometheusRule alerts.yaml)
  rules --out FILE                 only the rules file (make test-monitoring)
  vmui --out DIR                   one VictoriaMetrics vmui dashboard per Grafana dashboard
                                   in dashboards/*.json (same titles, rows, panels, queries)
  exprs                            every PromQL expression of the dashboards and the alerts,
                                   one JSON object per line (check.py reads them)

Why no YAML library: the rules are taken out of the PrometheusRule as text (the block
under `spec:`, two spaces less indented), and promtool checks the result, so nothing
needs PyYAML; the dashboards are JSON.
"""

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yaml"
PROMETHEUS_TEMPLATE = HERE / "prometheus.yml"
DASHBOARDS = HERE / "dashboards"

# Grafana's interval variables have no vmui counterpart: the generated panels use fixed
# windows that suit a 5 s scrape interval.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


class GenerateError(Exception):
    """A definition file is not in the shape this script reads."""


def rules_text(alerts: Path = ALERTS) -> str:
    """The plain Prometheus rules file inside the PrometheusRule `alerts`."""
    lines = alerts.read_text().splitlines()
    try:
        start = lines.index("spec:")
    except ValueError as e:
        raise GenerateError(f"{alerts}: no top-level `spec:` line") from e
    body = []
    for number, line in enumerate(lines[start + 1 :], start + 2):
        if line.strip() and not line.startswith("  "):
            raise GenerateError(
                f"{alerts}:{number}: a top-level key after `spec:` (keep `spec:` last)"
            )
        body.append(line[2:])
    if not any(line.startswith("groups:") for line in body):
        raise GenerateError(f"{alerts}: `spec:` has no `groups:`")
    header = f"# Generated from {alerts.name} (its spec) by generate.py: edit that file.\n"
    return header + "\n".join(body) + "\n"


def alert_exprs(alerts: Path = ALERTS):
    """(alert name, PromQL) for every rule, read from the extracted rules text.

    Reads the two shapes used in alerts.yaml: `expr: <one line>` and `expr: >-` followed
    by an indented block.
    """
    lines = rules_text(alerts).splitlines()
    out = []
    name = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- alert: (\S+)", line)
        if m:
            name = m.group(1)
        m = re.match(r"(\s*)expr: (.*)$", line)
        if m and name:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in (">-", ">", "|", "|-"):
                block = []
                i += 1
                while i < len(lines) and (
                    not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
                ):
                    block.append(lines[i].strip())
                    i += 1
                out.append((name, " ".join(x for x in block if x)))
                continue
            out.append((name, rest))
        i += 1
    return out


def dashboards():
    """(path, Grafana dashboard JSON) for every file in dashboards/, sorted."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        try:
            yield path, json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise GenerateError(f"{path}: not JSON: {e}") from e


def grafana_panels(dashboard):
    """(row title, panel) in layout order; rows are Grafana `row` panels."""
    row = dashboard.get("title", "")
    panels = sorted(
        dashboard.get("panels", []),
        key=lambda p: (p.get("gridPos", {}).get("y", 0), p.get("gridPos", {}).get("x", 0)),
    )
    for panel in panels:
        if panel.get("type") == "row":
            row = panel.get("title", row)
            for inner in panel.get("panels", []):
                yield row, inner
            continue
        yield row, panel


def promql(expr: str) -> str:
    """A Grafana target's expression with Grafana-only variables replaced."""
    for variable, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    if "$" in re.sub(r"\$\{?datasource\}?", "", expr):
        raise GenerateError(f"unsupported template variable in {expr!r}")
    return expr


def check_datasource(path: Path, dashboard) -> None:
    """Every panel reads the `${datasource}` variable (what Grafana sidecars import)."""
    names = [v.get("name") for v in dashboard.get("templating", {}).get("list", [])]
    if "datasource" not in names:
        raise GenerateError(f"{path}: no `datasource` template variable")
    for _, panel in grafana_panels(dashboard):
        uid = (panel.get("datasource") or {}).get("uid")
        if uid != "${datasource}":
            raise GenerateError(
                f"{path}: panel {panel.get('title')!r} has datasource {uid!r}, not ${{datasource}}"
            )


UNITS = {"s": "s", "ms": "ms", "bytes": "B", "Bps": "B/s", "percentunit": "", "short": ""}


def vmui_dashboard(path: Path, dashboard):
    """The vmui form of a Grafana dashboard: its rows (in order) and panels."""
    check_datasource(path, dashboard)
    rows = []
    for row_title, panel in grafana_panels(dashboard):
        targets = [t for t in panel.get("targets", []) if t.get("expr")]
        if not targets:
            continue
        if not rows or rows[-1]["title"] != row_title:
            rows.append({"title": row_title, "panels": []})
        width = panel.get("gridPos", {}).get("w", 12)
        out = {
            "title": panel.get("title", ""),
            "description": panel.get("description", ""),
            "width": max(1, min(12, round(width / 2))),
            "expr": [promql(t["expr"]) for t in targets],
        }
        unit = UNITS.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""), "")
        if unit:
            out["unit"] = unit
        # A fixed legend becomes vmui's alias; templated ones ({{topic}}) stay as labels.
        legends = [t.get("legendFormat", "") for t in targets]
        if any(legends) and not any("{{" in x for x in legends):
            out["alias"] = legends
        rows[-1]["panels"].append(out)
    return {"title": dashboard.get("title", path.stem), "rows": rows}


def cmd_prometheus(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = PROMETHEUS_TEMPLATE.read_text().replace("@RUN@", str(Path(args.run).resolve()))
    (out / "prometheus.yml").write_text(text)
    (out / "rules.yml").write_text(rules_text())


def cmd_rules(args) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(rules_text())


def cmd_vmui(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = set()
    for path, dashboard in dashboards():
        (out / path.name).write_text(json.dumps(vmui_dashboard(path, dashboard), indent=2))
        written.add(path.name)
    for stale in out.glob("*.json"):
        if stale.name not in written:
            stale.unlink()


def cmd_exprs(_args) -> None:
    for path, dashboard in dashboards():
        check_datasource(path, dashboard)
        for row, panel in grafana_panels(dashboard):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    where = f"{path.name}: {row} / {panel.get('title')}"
                    print(json.dumps({"source": where, "expr": promql(target["expr"])}))
    for name, expr in alert_exprs():
        print(json.dumps({"source": f"{ALERTS.name}: {name}", "expr": expr}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prometheus")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prometheus)
    p = sub.add_parser("rules")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_rules)
    p = sub.add_parser("vmui")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_vmui)
    p = sub.add_parser("exprs")
    p.set_defaults(func=cmd_exprs)
    args = parser.parse_args()
    try:
        args.func(args)
    except GenerateError as e:
        print(f"generate.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
