"""The soak's verdict: did anything grow, did lag or latency run away?

Pure functions over the samples `soak.py` took, so that the checks can be tested on
synthetic series (tests/test_verdict.py), including series that must fail.

# Growth: first third against last third

Samples before the warm-up ends are left out (caches fill, the allocator's arenas and
librdkafka's buffers reach their working size, the JIT-less processes have nothing else to
settle). The rest is cut into thirds by time; a resource *grew* when the mean of the last
third exceeds the mean of the first third by more than its allowance. Means of thirds, not
first and last sample: one sample caught mid-burst (a librdkafka fetch buffer, a tokio
blocking thread that exits 10 s later) must not decide. The least-squares slope is
computed and reported beside it (per hour) but does not gate: on a 10-minute run its noise
is as large as what it would catch.

Allowances (defaults; each a `Limits` field, justified where it is set):

- RSS: `max(rss_abs_mib, rss_rel * first-third mean)` plus a per-order allowance for a
  process whose *state* grows with the orders by design: the pipeline keeps every order's
  records and view (its views serve every order, see pipeline/src/logic.rs), payment's
  settled index keeps ~16 bytes per settled order and its simulated gateway a ledger entry
  per order. That state is not a leak, so the allowance is
  `bytes_per_order * (orders in the last third - orders in the first third)`, the orders
  counted by the pipeline's `pipeline_view_rows{view="orders"}`.
- open file descriptors: `max(8, 20 %)`. A process at steady state holds the same
  sockets (librdkafka keeps one connection per broker per client, HTTP pools reuse
  theirs), except ingress's client connections, which come and go with loadgen's runs.
- threads: 6. tokio's blocking threads come and go (10 s keep-alive).

The smallest leak a run can see is the allowance divided by the time between the thirds'
centres (two thirds of the post-warm-up span): for a 10-minute run with 2 minutes of
warm-up, 16 MiB over 5.3 minutes, about 180 MiB an hour; a 60-minute run with 10 minutes
of warm-up sees about 29 MiB an hour.

# Lag and latency

Bounded, not trend-tested: a CI run shares the machine with fuzzing and a chaos cluster
whose load comes and goes, so a latency that is higher in one third says nothing about the
services. Lag: every post-warm-up sample at most `max_lag` records, and back to 0 within
`drain_s` after the load stops (what a stuck consumer fails). Latency: every post-warm-up
interval's client-side p99 at most `max_p99_ms`; no interval may have failed requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

MIB = 1024 * 1024


@dataclass
class Limits:
    """What counts as growth or as unbounded; see the module docs for why these."""

    # Allocator and client-buffer noise of a Rust service at steady state is a few MiB;
    # 16 MiB or 10 % (whichever is larger) stays above it without hiding a real leak on a
    # 60-minute run (see the module docs for the sensitivity).
    rss_abs_mib: float = 16.0
    rss_rel: float = 0.10
    # Bytes of state per order a process may add (pipeline: an order's records in the
    # fold's arrangement, its view, its entries in the per-SKU counts and the served view,
    # with differential's spine keeping up to ~2x while batches merge: measured ~1.6 KiB
    # per order, so 4 KiB; payment: its settled index, 16 bytes per order, and the
    # simulated card gateway's ledger, which remembers every request and charge by order
    # id as the processor it stands for does: measured ~340 bytes per order, so 512).
    # Measured figures are in deploy/soak/README.md.
    bytes_per_order: dict = field(
        default_factory=lambda: {"pipeline": 4096, "payment": 512, "ingress": 0}
    )
    # File descriptors: the services' own (broker connections, listeners, registry pool)
    # are constant at steady state, but ingress also holds one socket per client
    # connection, and loadgen's connections come and go with its runs (measured: ingress
    # 51-64 fds within one 3-minute run). 8 or 20 %, whichever is larger.
    fds_abs: float = 8.0
    fds_rel: float = 0.20
    # Threads: tokio's blocking threads start on demand and exit after 10 s idle.
    threads_abs: float = 6.0
    # Records behind: 100 s of the default 20 orders/s. A consumer that keeps up is a
    # batch or two behind (measured: at most 20 for payment, whose gauge also counts the
    # open transaction, and 1 for the pipeline); one that stalls grows without bound.
    max_lag: float = 2000.0
    drain_s: float = 60.0
    # A service that stops answering in time shows up as p99s of loadgen's and ingress's
    # 30 s timeouts, one that degrades with its state as a p99 growing by an order of
    # magnitude. Not tighter: the machine is shared (2 cores, 3 brokers, builds, and in CI
    # fuzzing and a chaos cluster); a quiet interval's p99 is 100-250 ms, and one during a
    # cargo build beside it reached 2.4 s (deploy/soak/README.md).
    max_p99_ms: float = 5000.0
    warmup_s: float = 120.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t seconds, value) points, per hour; 0 for < 2 points."""
    if len(points) < 2:
        return 0.0
    ts = [t for t, _ in points]
    vs = [v for _, v in points]
    mt, mv = mean(ts), mean(vs)
    den = sum((t - mt) ** 2 for t in ts)
    if den == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / den * 3600.0


def thirds(points: list[tuple[float, float]]) -> tuple[list, list]:
    """The first and last third (by time) of `points`."""
    if not points:
        return [], []
    t0, t1 = points[0][0], points[-1][0]
    span = t1 - t0
    first = [p for p in points if p[0] <= t0 + span / 3]
    last = [p for p in points if p[0] >= t1 - span / 3]
    return first, last


def growth(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(first-third mean, last-third mean, slope per hour) of post-warm-up points."""
    first, last = thirds(points)
    if not first or not last:
        return 0.0, 0.0, 0.0
    return (
        mean(v for _, v in first),
        mean(v for _, v in last),
        slope_per_hour(points),
    )


def verdict(samples: list[dict], intervals: list[dict], drained_s: float | None,
            limits: Limits) -> list[Check]:
    """Every check of a soak run.

    `samples`: dicts with `t` (s since the load started), `process`, `rss` (bytes), `fds`,
    `threads`, `lag` (records, or None for a process without input), `orders` (orders in
    the pipeline's view then, or None). `intervals`: dicts with `index`, `end_t`, `p99_ms`,
    `failed`. `drained_s`: seconds after the load stopped until every lag was 0 (None:
    never within the wait).
    """
    checks: list[Check] = []
    processes = sorted({s["process"] for s in samples})
    post = [s for s in samples if s["t"] >= limits.warmup_s]
    if len({s["t"] for s in post}) < 6:
        checks.append(Check("enough samples", False,
                            f"{len({s['t'] for s in post})} sample times after the warm-up; "
                            "at least 6 are needed (a longer DURATION or a shorter SOAK_SAMPLE)"))
        return checks
    orders_at = {}
    for s in post:
        if s.get("orders") is not None:
            orders_at[s["t"]] = s["orders"]
    order_points = sorted(orders_at.items())
    for proc in processes:
        rows = sorted((s for s in post if s["process"] == proc), key=lambda s: s["t"])
        rss = [(s["t"], s["rss"]) for s in rows]
        a, b, slope = growth(rss)
        extra = 0.0
        per_order = limits.bytes_per_order.get(proc, 0)
        if per_order and order_points:
            o_first, o_last = thirds(order_points)
            if o_first and o_last:
                extra = per_order * max(0.0, mean(v for _, v in o_last) - mean(v for _, v in o_first))
        allowed = max(limits.rss_abs_mib * MIB, limits.rss_rel * a) + extra
        checks.append(Check(
            f"{proc} RSS", b - a <= allowed,
            f"{a / MIB:.1f} -> {b / MIB:.1f} MiB (first/last third), +{(b - a) / MIB:.1f} MiB, "
            f"allowed +{allowed / MIB:.1f} MiB"
            + (f" (incl. {extra / MIB:.1f} MiB of order state)" if extra else "")
            + f"; slope {slope / MIB:+.1f} MiB/h"))
        for key in ("fds", "threads"):
            a, b, slope = growth([(s["t"], s[key]) for s in rows])
            tol = (max(limits.fds_abs, limits.fds_rel * a) if key == "fds"
                   else limits.threads_abs)
            checks.append(Check(
                f"{proc} {key}", b - a <= tol,
                f"{a:.1f} -> {b:.1f} (first/last third), allowed +{tol:g}; slope {slope:+.1f}/h"))
        lags = [s["lag"] for s in rows if s.get("lag") is not None]
        if lags:
            worst = max(lags)
            checks.append(Check(f"{proc} lag bounded", worst <= limits.max_lag,
                                f"max {worst:g} records after the warm-up, bound {limits.max_lag:g}"))
    alive = {s["process"] for s in samples if s["t"] == max(x["t"] for x in samples)}
    missing = [p for p in processes if p not in alive]
    checks.append(Check("every process alive at the end", not missing,
                        "missing: " + ", ".join(missing) if missing else "all sampled at the end"))
    checks.append(Check(
        "lag drains after the load", drained_s is not None and drained_s <= limits.drain_s,
        f"0 after {drained_s:.1f} s" if drained_s is not None else
        f"not 0 within {limits.drain_s:g} s"))
    late = [i for i in intervals if i["end_t"] > limits.warmup_s]
    worst = max((i["p99_ms"] for i in late if i["p99_ms"] is not None), default=None)
    missing_p99 = [i["index"] for i in late if i["p99_ms"] is None]
    checks.append(Check(
        "client p99 bounded",
        worst is not None and worst <= limits.max_p99_ms and not missing_p99,
        (f"worst interval p99 {worst:.0f} ms, bound {limits.max_p99_ms:g} ms"
         if worst is not None else "no interval with latencies")
        + (f"; intervals without a summary: {missing_p99}" if missing_p99 else "")))
    failed = sum(i.get("failed") or 0 for i in intervals)
    checks.append(Check("no failed requests", failed == 0, f"{failed} failed"))
    return checks
