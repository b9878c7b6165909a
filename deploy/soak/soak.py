#!/usr/bin/env python3
"""Soak: the three services under a fixed load for a long time; did anything grow?

`make soak DURATION=10m RATE=20` (deploy/soak/README.md). A fresh stack of ingress, payment
and the pipeline on the running cluster (benches' `stack-serve`: its own topic prefix,
subjects, groups and free ports, all deleted at the end), then `loadgen` at RATE orders/s
for DURATION, in back-to-back runs of SOAK_INTERVAL seconds so that every interval has its
own client-side p99 (loadgen reports one summary per run). Every SOAK_SAMPLE seconds each
service process is sampled: RSS, threads (/proc/PID/status), open file descriptors
(/proc/PID/fd), its consumer lag (payment: `kafka_consumergroup_lag`, the pipeline:
`pipeline_input_lag`, summed) and the orders in the pipeline's view. After the load it
waits for the lag to drain, stops the stack, writes samples.csv, intervals.csv, soak.json
and soak.md to SOAK_OUT (target/soak) and exits 1 if verdict.py finds growth, unbounded
lag or latency, failed requests or a dead process.

Why separate processes and /proc: the figures are those of the binaries as deployed, and
reading /proc costs the services nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verdict import MIB, Limits, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def duration_s(text: str) -> float:
    """`90`, `90s`, `10m`, `1h` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m, 1h)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def proc_stats(pid: int) -> dict | None:
    """RSS (bytes), threads and open fds of a live process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip().startswith("Z"):
        return None
    return {
        "rss": int(fields["VmRSS"].split()[0]) * 1024,
        "threads": int(fields["Threads"]),
        "fds": fds,
    }


def metric_sum(text: str, name: str, labels: str = "") -> float | None:
    """Sum of every series of `name` whose labels contain `labels`; None if absent."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        rest = line[len(name):]
        if not (rest.startswith("{") or rest.startswith(" ")) or labels not in rest:
            continue
        try:
            total += float(line.rsplit(" ", 1)[1])
            seen = True
        except ValueError:
            pass
    return total if seen else None


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


class Sampler(threading.Thread):
    """Samples every process every `every` seconds until stopped."""

    def __init__(self, stack: dict, every: float, t0: float):
        super().__init__(daemon=True)
        self.stack, self.every, self.t0 = stack, every, t0
        self.samples: list[dict] = []
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def sample(self) -> list[dict]:
        t = round(time.monotonic() - self.t0, 1)
        payment = scrape(self.stack["payment"])
        pipeline = scrape(self.stack["views_rest"])
        lag = {
            "payment": metric_sum(payment, "kafka_consumergroup_lag"),
            "pipeline": metric_sum(pipeline, "pipeline_input_lag"),
            "ingress": None,
        }
        orders = metric_sum(pipeline, "pipeline_view_rows", 'view="orders"')
        rows = []
        for name, pid in self.stack["pids"].items():
            stats = proc_stats(pid)
            if stats is None:
                continue
            rows.append({"t": t, "process": name, **stats, "lag": lag.get(name),
                         "orders": orders})
        with self.lock:
            self.samples.extend(rows)
        return rows

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.sample()


def run_loadgen(bin_dir: Path, stack: dict, args, index: int, out: Path, log) -> dict:
    json_path = out / "loadgen" / f"interval-{index:03d}.json"
    cmd = [str(bin_dir / "loadgen"), "--rate", str(args.rate), "--duration", str(int(args.interval)),
           "--seed", str(index + 1), "--ingress-rest", stack["ingress_rest"],
           "--ingress-grpc", stack["ingress_grpc"], "--json", str(json_path)]
    if index == 0:
        # Stock for the whole run, once: orders reserve and sell from the pool SKUs.
        cmd += ["--restock", "1000000000"]
    result = subprocess.run(cmd, stdout=log, stderr=log, check=False)
    try:
        summary = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return {"accepted": 0, "failed": None, "p99_ms": None, "p50_ms": None,
                "exit": result.returncode}
    lat = summary.get("latency_due_to_answer") or {}
    return {"accepted": summary.get("accepted"), "failed": summary.get("failed"),
            "p50_ms": lat.get("p50_ms"), "p99_ms": lat.get("p99_ms"),
            "max_ms": lat.get("max_ms"), "exit": result.returncode}


def table(intervals: list[dict], samples: list[dict], processes: list[str]) -> str:
    """One row per interval: each process's RSS/fds/threads/lag at its end, and the p99."""
    head = ["min", "orders ok", "p50 ms", "p99 ms"]
    for p in processes:
        head += [f"{p} RSS MiB", f"{p} fds", f"{p} thr"]
        if p != "ingress":
            head.append(f"{p} lag")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i in intervals:
        at = [s for s in samples if s["t"] <= i["end_t"] + 0.5]
        row = [f"{i['end_t'] / 60:.1f}", str(i["accepted"]),
               f"{i['p50_ms']:.1f}" if i["p50_ms"] is not None else "-",
               f"{i['p99_ms']:.1f}" if i["p99_ms"] is not None else "-"]
        for p in processes:
            mine = [s for s in at if s["process"] == p]
            last = mine[-1] if mine else None
            row += [f"{last['rss'] / MIB:.1f}" if last else "-",
                    str(last["fds"]) if last else "-",
                    str(last["threads"]) if last else "-"]
            if p != "ingress":
                window = [s["lag"] for s in mine if s["t"] > i["end_t"] - i["length"] - 0.5
                          and s["lag"] is not None]
                row.append(f"{max(window):g}" if window else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def number(text: str) -> float | None:
    return None if text in ("", "None") else float(text)


def reverdict(out: Path, limits: Limits) -> int:
    """The verdict of a finished run from its files, with today's limits."""
    report = json.loads((out / "soak.json").read_text())
    limits.warmup_s = report["limits"]["warmup_s"]
    with open(out / "samples.csv") as f:
        samples = [{**r, **{k: number(r[k]) for k in ("t", "rss", "fds", "threads", "lag", "orders")}}
                   for r in csv.DictReader(f)]
    with open(out / "intervals.csv") as f:
        intervals = [{**r, "index": int(r["index"]),
                      **{k: number(r[k]) for k in ("end_t", "length", "accepted", "failed",
                                                   "p50_ms", "p99_ms", "max_ms")}}
                     for r in csv.DictReader(f)]
    end = intervals[-1]["end_t"] if intervals else 0
    checks = verdict([s for s in samples if s["t"] <= end + 0.5], intervals,
                     report.get("drained_s"), limits)
    for c in checks:
        print(f"| {c.name} | {'ok' if c.ok else '**FAIL**'} | {c.detail} |")
    ok = all(c.ok for c in checks)
    print(f"**{'PASS' if ok else 'FAIL'}** (limits as of now)")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=duration_s, default=duration_s(os.environ.get("DURATION") or "10m"))
    ap.add_argument("--rate", type=float, default=float(os.environ.get("RATE") or 20))
    ap.add_argument("--interval", type=duration_s, default=duration_s(os.environ.get("SOAK_INTERVAL") or "60s"))
    ap.add_argument("--sample", type=duration_s, default=duration_s(os.environ.get("SOAK_SAMPLE") or "10s"))
    ap.add_argument("--warmup", type=duration_s, default=None,
                    help="left out of the growth checks (default: the larger of 2 min and a sixth)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("SOAK_OUT") or ROOT / "target/soak"))
    ap.add_argument("--bin-dir", type=Path,
                    default=Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug")
    ap.add_argument("--verdict-only", action="store_true",
                    help="no run: the verdict again on SOAK_OUT's samples.csv, intervals.csv and "
                         "soak.json (after a change of the limits)")
    args = ap.parse_args()
    limits = Limits()
    limits.warmup_s = args.warmup if args.warmup is not None else max(120.0, args.duration / 6)
    for env, attr in (("SOAK_MAX_P99_MS", "max_p99_ms"), ("SOAK_MAX_LAG", "max_lag"),
                      ("SOAK_RSS_ABS_MIB", "rss_abs_mib")):
        if os.environ.get(env):
            setattr(limits, attr, float(os.environ[env]))
    n = max(1, round(args.duration / args.interval))
    out = args.out
    if args.verdict_only:
        return reverdict(out, limits)
    (out / "loadgen").mkdir(parents=True, exist_ok=True)
    for old in (out / "loadgen").glob("*.json"):
        old.unlink()

    # Ingress's idempotency cache holds up to `capacity` keys for a day (by design): left
    # at 100,000 it would fill for the whole run and look like growth. Sized to about one
    # interval of load it is full before the warm-up ends, so the run measures the
    # steady state the default reaches after 100,000 orders.
    env = dict(os.environ)
    env.setdefault("INGRESS__IDEMPOTENCY__CAPACITY", str(int(args.rate * args.interval)))
    serve_log = open(out / "stack-serve.log", "w")
    serve = subprocess.Popen([str(args.bin_dir / "stack-serve")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=serve_log, text=True, env=env)
    line = serve.stdout.readline()
    if not line:
        print(f"[soak] the stack did not start; see {out / 'stack-serve.log'}", file=sys.stderr)
        return 1
    stack = json.loads(line)
    stack["pids"] = {k: v for k, v in stack["pids"].items() if v}
    print(f"[soak] stack {stack['prefix']} pids {stack['pids']}; {args.rate:g} orders/s for "
          f"{args.duration / 60:g} min in {n} intervals of {args.interval:g} s, a sample every "
          f"{args.sample:g} s, warm-up {limits.warmup_s:g} s; output {out}", flush=True)

    t0 = time.monotonic()
    sampler = Sampler(stack, args.sample, t0)
    sampler.sample()
    sampler.start()
    intervals = []
    drained = None
    try:
        with open(out / "loadgen.log", "w") as log:
            for i in range(n):
                started = time.monotonic() - t0
                r = run_loadgen(args.bin_dir, stack, args, i, out, log)
                end_t = round(time.monotonic() - t0, 1)
                intervals.append({"index": i, "end_t": end_t, "length": end_t - started, **r})
                alive = {s["process"] for s in sampler.sample()}
                p99 = f"{r['p99_ms']:.0f}" if r["p99_ms"] is not None else "-"
                rss = " ".join(f"{s['process']} {s['rss'] / MIB:.0f}M/{s['fds']}fd"
                               for s in sampler.samples if s["t"] == end_t)
                print(f"[soak] {end_t / 60:5.1f} min  ok {r['accepted']}  failed {r['failed']}  "
                      f"p99 {p99} ms  {rss}", flush=True)
                if alive != set(stack["pids"]):
                    print(f"[soak] gone: {sorted(set(stack['pids']) - alive)}", file=sys.stderr)
                    break
        stop = time.monotonic()
        while time.monotonic() - stop < limits.drain_s + 30:
            rows = sampler.sample()
            lags = [s["lag"] for s in rows if s["lag"] is not None]
            if rows and len(lags) == 2 and all(lag == 0 for lag in lags):
                drained = time.monotonic() - stop
                break
            time.sleep(1)
    finally:
        sampler.stopped.set()
        sampler.join()
        serve.stdin.close()
        try:
            serve.wait(timeout=120)
        except subprocess.TimeoutExpired:
            serve.kill()

    samples = [s for s in sampler.samples if s["t"] <= intervals[-1]["end_t"] + 0.5] if intervals else []
    checks = verdict(samples, intervals, drained, limits)
    processes = [p for p in ("ingress", "payment", "pipeline") if p in stack["pids"]]
    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t", "process", "rss", "fds", "threads", "lag", "orders"])
        w.writeheader()
        w.writerows(sampler.samples)
    with open(out / "intervals.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["index", "end_t", "length", "accepted", "failed",
                                          "p50_ms", "p99_ms", "max_ms", "exit"])
        w.writeheader()
        w.writerows(intervals)
    ok = all(c.ok for c in checks)
    report = {
        "prefix": stack["prefix"], "rate": args.rate, "duration_s": args.duration,
        "interval_s": args.interval, "sample_s": args.sample, "limits": vars(limits),
        "drained_s": drained, "intervals": intervals, "passed": ok,
        "checks": [vars(c) for c in checks],
    }
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    md = [f"# Soak {stack['prefix'].rstrip('-')}: {args.rate:g} orders/s for {args.duration / 60:g} min",
          "", f"Warm-up {limits.warmup_s:g} s left out of the checks; a sample every "
          f"{args.sample:g} s; rows are the samples at each interval's end (lag: the "
          "interval's max).", "", table(intervals, sampler.samples, processes), "",
          "| check | verdict | detail |", "|---|---|---|"]
    md += [f"| {c.name} | {'ok' if c.ok else '**FAIL**'} | {c.detail} |" for c in checks]
    md += ["", f"**{'PASS' if ok else 'FAIL'}**"]
    (out / "soak.md").write_text("\n".join(md) + "\n")
    print("\n".join(md[4:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
