#!/usr/bin/env python3
"""One fault's figures for `make chaos` (deploy/chaos/run.sh), from loadgen's per-second
progress, the consumer-lag samples and chaos-check's JSON line (and, if the file is
there, the harness's lines of what happened during the fault).

  detect s    fault → first symptom: a refused or unanswered request (503/UNAVAILABLE,
              409/ABORTED, unreachable), a second with no order accepted, or a consumer
              lag (payment's group, the pipeline's input) above one second of load
  recover s   fault → the later of: the 201 rate back above half the offered rate for
              good, and both lags back under one second of load for good
  no 201 s    the longest stretch after the fault with no order accepted
  dip         accepted orders per second before the fault → the lowest second after it
  503         answers 503/UNAVAILABLE over the run (every attempt; 409s in brackets)
  lost        accepted orders missing from order.created (chaos-check)
  doubled     orders with two outcomes, outcomes without an order, view differences
  dup records order.created records written twice (same ce_id): not an effect by itself

The last line printed is the fault's row of the README table.
"""
import json
import re
import sys

fault, rate = sys.argv[1], float(sys.argv[2])
t0, killed, healed = map(float, sys.argv[3:6])
progress_path, lag_path, check_path, loadgen_path = sys.argv[6:10]
events_path = sys.argv[10] if len(sys.argv) > 10 else None

# loadgen's clock starts ~1 s before its first progress line, which is when t0 was taken.
OFFSET = 1.0
kill_at = killed - t0 + OFFSET
heal_at = healed - t0 + OFFSET
threshold = rate  # one second of load

row = re.compile(r"^\s*([\d.]+) s\s+sent \d+\s+ok (\d+) .*failed (\d+)"
                 r"(?:.*retried (\d+)\s+unavailable (\d+)\s+in_progress (\d+)\s+unreachable (\d+))?")
rows = []
for line in open(progress_path):
    m = row.search(line)
    if m:
        g = [x or "0" for x in m.groups()]
        rows.append((float(g[0]), int(g[1]), int(g[2]), int(g[4]), int(g[5]), int(g[6])))

lags = []
for line in open(lag_path):
    parts = line.split()
    if len(parts) == 3:
        t = float(parts[0]) - t0 + OFFSET
        vals = [int(p) if p.isdigit() else None for p in parts[1:]]
        lags.append((t, vals))

# Per-second increments of accepted orders and of refusals.
steps = []  # (t, accepted in the second, refusals in the second)
prev = (0.0, 0, 0, 0, 0, 0)
for r in rows:
    refusals = (r[3] + r[4] + r[5]) - (prev[3] + prev[4] + prev[5])
    steps.append((r[0], r[1] - prev[1], refusals))
    prev = r
during_load = [s for s in steps if s[0] <= rows[-1][0]] if rows else []
before = [s for s in during_load if s[0] < kill_at]
after = [s for s in during_load if s[0] >= kill_at]
baseline = sum(s[1] for s in before[2:]) / max(1, len(before[2:]))

symptoms = []
for t, acc, ref in after:
    if ref > 0 or acc == 0:
        symptoms.append(t)
        break
over = [t for t, v in lags if t >= kill_at and any(x is not None and x > threshold for x in v)]
if over:
    symptoms.append(over[0])
detect = min(symptoms) - kill_at if symptoms else None

# Recovery: the 201 rate for good, and the lags for good.
offered_end = float(json.load(open(loadgen_path)).get("duration_s", rows[-1][0] if rows else 0))
dips = [t for t, acc, _ in after if acc < rate / 2 and t <= offered_end]
client_back = next((t for t, _, _ in after if t > dips[-1]), dips[-1] + 1) if dips else kill_at
lag_back = kill_at
if over:
    later = [t for t, v in lags if t > over[-1]]
    lag_back = later[0] if later else over[-1]
recover = max(client_back, lag_back) - kill_at

# The longest stretch without an accepted order after the fault.
last_t = before[-1][0] if before else 0.0
stall = 0.0
for t, acc, _ in after:
    if acc > 0:
        last_t = t
    else:
        stall = max(stall, t - last_t)
lowest = min((acc for t, acc, _ in after if t <= offered_end), default=0)

summary = json.load(open(loadgen_path))
unavailable = summary.get("unavailable_answers", 0)
in_progress = summary.get("in_progress_answers", 0)
try:
    check = json.loads(open(check_path).read().strip().splitlines()[-1])
except (IndexError, ValueError):
    check = {}
lost = check.get("lost", "?")
doubled = (check.get("settled_twice", 0) + check.get("outcomes_without_order", 0)
           + check.get("view_differences", 0)) if check else "?"
dup_records = check.get("duplicate_records", "?")
peak = max((x for t, v in lags if t >= kill_at for x in v if x is not None), default=0)

print(f"fault {fault}: at {kill_at:.1f} s of the load, healed {heal_at - kill_at:.1f} s later")
print(f"  detect {'-' if detect is None else f'{detect:.1f}'} s; recover {recover:.1f} s "
      f"(201 rate back at +{client_back - kill_at:.1f} s, lag back at +{lag_back - kill_at:.1f} s, lag peak {peak})")
print(f"  201/s {baseline:.0f} before, lowest {lowest} after; no 201 for {stall:.0f} s; "
      f"{unavailable} answers 503/UNAVAILABLE, {in_progress} 409/ABORTED; "
      f"{summary.get('accepted')} of {summary.get('scheduled')} accepted, {summary.get('failed')} given up")
print(f"  check: {json.dumps(check)}")
try:
    for line in open(events_path) if events_path else []:
        print(f"  event: {line.rstrip()}")
except FileNotFoundError:
    pass
print(f"| {fault} | {'-' if detect is None else f'{detect:.1f}'} | {recover:.1f} | {stall:.0f} "
      f"| {unavailable} ({in_progress}) | {lost} | {doubled} | {dup_records} |")
