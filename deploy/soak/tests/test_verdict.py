"""The soak verdict on synthetic runs: a steady run passes, and each kind of growth,
an unbounded lag, a slow p99, a stuck consumer and a dead process fail it."""

import random
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from verdict import MIB, Limits, growth, slope_per_hour, verdict  # noqa: E402


def run(minutes=10, every=10, rss=None, fds=None, threads=None, lag=None, orders_per_s=20,
        seed=1):
    """Samples of ingress, payment and the pipeline: flat with noise unless a series
    function `f(process, t)` is given."""
    rng = random.Random(seed)
    base = {"ingress": 40 * MIB, "payment": 30 * MIB, "pipeline": 60 * MIB}
    samples = []
    for k in range(int(minutes * 60 / every) + 1):
        t = float(k * every)
        for p in base:
            samples.append({
                "t": t, "process": p,
                "rss": (rss(p, t) if rss else base[p]) + rng.uniform(-3, 3) * MIB,
                "fds": fds(p, t) if fds else 50 + rng.choice([-1, 0, 1]),
                "threads": threads(p, t) if threads else 20 + rng.choice([0, 1, 2]),
                "lag": None if p == "ingress" else (lag(p, t) if lag else rng.randint(0, 40)),
                "orders": orders_per_s * t,
            })
    return samples


def intervals(minutes=10, p99=150.0, failed=0):
    return [{"index": i, "end_t": 60.0 * (i + 1), "p99_ms": p99, "failed": failed}
            for i in range(minutes)]


def failing(checks):
    return sorted(c.name for c in checks if not c.ok)


class Verdict(unittest.TestCase):
    def test_a_steady_run_passes(self):
        checks = verdict(run(), intervals(), 3.0, Limits())
        self.assertEqual(failing(checks), [], [vars(c) for c in checks])

    def test_a_leaking_process_fails(self):
        # 1 MiB a minute in payment: +5.3 MiB between the thirds' means is under the
        # 16 MiB floor on 10 minutes, so the leak here is 4 MiB a minute.
        leak = lambda p, t: 30 * MIB + (4 * MIB * t / 60 if p == "payment" else 0)  # noqa: E731
        checks = verdict(run(rss=lambda p, t: leak(p, t) if p == "payment" else
                             {"ingress": 40, "pipeline": 60}[p] * MIB), intervals(), 3.0, Limits())
        self.assertEqual(failing(checks), ["payment RSS"])

    def test_pipeline_order_state_is_allowed_but_more_is_not(self):
        # 2 KiB per order is state (allowed 4 KiB); 8 KiB per order is not.
        for per_order, expect in ((2048, []), (8192, ["pipeline RSS"])):
            def rss(p, t, per_order=per_order):
                base = {"ingress": 40, "payment": 30, "pipeline": 60}[p] * MIB
                return base + (per_order * 20 * t if p == "pipeline" else 0)
            checks = verdict(run(rss=rss), intervals(), 3.0, Limits())
            self.assertEqual(failing(checks), expect, per_order)

    def test_growth_during_the_warm_up_is_left_out(self):
        rss = lambda p, t: (40 + 60 * min(t, 100) / 100) * MIB  # noqa: E731
        self.assertEqual(failing(verdict(run(rss=rss), intervals(), 3.0, Limits())), [])

    def test_an_fd_leak_fails(self):
        # One socket every 20 s: +16 between the thirds, over max(8, 20 % of ~60).
        fds = lambda p, t: 50 + (int(t // 20) if p == "ingress" else 0)  # noqa: E731
        self.assertEqual(failing(verdict(run(fds=fds), intervals(), 3.0, Limits())),
                         ["ingress fds"])

    def test_a_thread_leak_fails(self):
        threads = lambda p, t: 20 + (int(t // 20) if p == "pipeline" else 0)  # noqa: E731
        self.assertEqual(failing(verdict(run(threads=threads), intervals(), 3.0, Limits())),
                         ["pipeline threads"])

    def test_unbounded_lag_and_a_stuck_consumer_fail(self):
        lag = lambda p, t: t * 10 if p == "pipeline" else 5  # noqa: E731
        checks = verdict(run(lag=lag), intervals(), None, Limits())
        self.assertEqual(failing(checks), ["lag drains after the load", "pipeline lag bounded"])

    def test_slow_p99_and_failed_requests_fail(self):
        slow = intervals()
        slow[7]["p99_ms"] = 30000.0  # requests timing out
        self.assertEqual(failing(verdict(run(), slow, 3.0, Limits())), ["client p99 bounded"])
        self.assertEqual(failing(verdict(run(), intervals(failed=1), 3.0, Limits())),
                         ["no failed requests"])

    def test_a_process_that_died_fails(self):
        samples = [s for s in run() if not (s["process"] == "payment" and s["t"] > 400)]
        self.assertIn("every process alive at the end",
                      failing(verdict(samples, intervals(), 3.0, Limits())))

    def test_too_short_a_run_is_no_verdict(self):
        self.assertEqual(failing(verdict(run(minutes=2), intervals(2), 3.0, Limits())),
                         ["enough samples"])

    def test_slope_and_thirds(self):
        pts = [(float(t), 2.0 * t) for t in range(0, 61)]
        self.assertAlmostEqual(slope_per_hour(pts), 7200.0)
        first, last, _ = growth(pts)
        self.assertAlmostEqual(first, 20.0)
        self.assertAlmostEqual(last, 100.0)


if __name__ == "__main__":
    unittest.main()
