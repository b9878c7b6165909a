#!/usr/bin/env bash
# `make chaos`: faults under a steady load, on a cluster of its own beside the shared one.
#
# The chaos cluster is deploy/local/platform.sh with its own RUN_DIR (target/chaos/run)
# and addresses: each broker in a network namespace of its own (chaos-k1..3, 10.213.0.2-4
# on a bridge chaos-br0 = 10.213.0.1 in the root namespace, deploy/chaos/netns.sh; the
# brokers' certificate names them), so that one can be cut off from the others; the
# registry on 127.0.0.5, the same ports, no monitoring stack. Needs root and iproute2;
# the namespaces and the bridge are removed on exit (stale ones on start). For each
# fault, the services run as a fresh stack (benches' stack-serve: free ports, a unique
# topic prefix) against it, stack-serve also their supervisor: a service that exits by
# itself (not the harness's kill -9) is started again, and the report lists it; loadgen offers a fixed rate, retrying refused requests with the
# same Idempotency-Key as a real client does; at FAULT_AT seconds the fault, then the
# heal; then benches' chaos-check: no accepted order lost, none settled twice, every
# order one outcome, empty DLQs, the order and stock views equal to the reference
# computed from what was accepted. The report (target/chaos/report/<fault>.txt, and one
# row per fault in target/chaos/report/table.md) gives time to detect, time to recover
# (payment's and the pipeline's consumer lag back under one second of load) and the
# 201-rate dip.
#
#   CHAOS=quick|full|ci  quick: 20/s for 60 s, fault at 15 s; full: 30/s for 120 s;
#                        ci: 20/s for 40 s, fault at 10 s, broker down 12 s
#   CHAOS_FAULTS="broker-kill ..."  faults, one stack each, on one cluster:
#     broker-kill      kill -9 of broker CHAOS_NODE (2), restarted after CHAOS_DOWN (20 s)
#     broker-stop      SIGSTOP of broker CHAOS_NODE for CHAOS_DOWN (30 s): a hung broker
#     controller-kill  kill -9 of the active KRaft controller, restarted after CHAOS_DOWN
#     two-brokers      kill -9 of brokers 2 and 3 (min.insync.replicas=2 cannot be met,
#                      and the controller quorum is lost), restarted after CHAOS_DOWN
#     payment-kill     kill -9 of payment, restarted after CHAOS_DOWN (5 s)
#     ingress-kill     kill -9 of ingress, restarted after CHAOS_DOWN (5 s)
#     registry-stop    SIGSTOP of the schema registry for CHAOS_DOWN (30 s)
#     partition        broker CHAOS_NODE cut off from the two others (blackhole routes in
#                      the namespaces, both ways) while clients still reach it, for
#                      CHAOS_DOWN (30 s), then healed
#     pipeline-proc-kill  the pipeline job as 2 processes x 1 worker; kill -9 of process 1
#                      (not the API's); the job is fail-stop: once process 0 has exited
#                      or CHAOS_DOWN_SERVICE (10 s) passed, every process is restarted (the
#                      README's recovery; the report says how process 0 was found)
#   (CHAOS_FAULT=... is accepted as a one-fault CHAOS_FAULTS)
#   CHAOS_KEEP=1         leave the chaos cluster running afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."

export RUN_DIR="$PWD/target/chaos/run"
# shellcheck source=deploy/chaos/netns.sh
source deploy/chaos/netns.sh
export KAFKA_HOSTS="$(chaos_addr 1) $(chaos_addr 2) $(chaos_addr 3)"
export KAFKA_NODE_PREFIX="ip netns exec chaos-k@NODE@"
export REGISTRY_HOST=127.0.0.5
export REGISTRY_URL="http://$REGISTRY_HOST:8081"
export OBSERVABILITY=0 PLATFORM_ONLY=1
export KAFKA_CLIENT_CONFIG="$RUN_DIR/secrets/admin.conf"
# payment's lag gauge every second (default 5 s), for the recovery time.
export PAYMENT__CONSUMER__LAG_INTERVAL=1s
platform=deploy/local/platform.sh
case "${CHAOS:-quick}" in
  quick) rate=20 duration=60 fault_at=15 ;;
  full) rate=30 duration=120 fault_at=20 ;;
  ci) rate=20 duration=40 fault_at=10 ;;
  *) echo "CHAOS is quick, full or ci" >&2; exit 2 ;;
esac
faults="${CHAOS_FAULTS:-${CHAOS_FAULT:-broker-kill}}"
all="broker-kill broker-stop controller-kill two-brokers payment-kill ingress-kill registry-stop
  partition pipeline-proc-kill"
for f in $faults; do
  [[ " ${all//$'\n'/ } " == *" $f "* ]] || { echo "unknown fault $f (one of: $all)" >&2; exit 2; }
done
node="${CHAOS_NODE:-2}"
out="target/chaos/report"
mkdir -p "$out"

((EUID == 0)) && command -v ip >/dev/null || { echo "[chaos] needs root and iproute2 (network namespaces)" >&2; exit 1; }
stopped=""  # a process stopped with SIGSTOP, to continue whatever happens
finish_cluster() {
  [[ -z "$stopped" ]] || kill -CONT "$stopped" 2>/dev/null || true
  netns_heal
  [[ "${CHAOS_KEEP:-0}" == 1 ]] || { "$platform" down >/dev/null 2>&1 || true; netns_down; }
}
trap finish_cluster EXIT
echo "[chaos] the chaos cluster (brokers $KAFKA_HOSTS in namespaces chaos-k1..3, registry $REGISTRY_HOST; $RUN_DIR)"
netns_up
"$platform" up >"$out/platform-up.log" 2>&1 || { tail -n 20 "$out/platform-up.log" >&2; exit 1; }
cargo build --quiet -p ingress -p payment -p pipeline -p benches \
  --bin ingress --bin payment --bin pipeline --bin stack-serve --bin loadgen --bin chaos-check
bin="${CARGO_TARGET_DIR:-target}/debug"

pid_of() { cut -d' ' -f1 "$RUN_DIR/pids/$1.pid"; }
# The active controller's node id: the leader named by the newest epoch in the nodes'
# KRaft quorum-state files (each node writes the leader it knows). No python here: on a
# loaded machine its start alone took seconds, which moved the fault.
controller() {
  cat "$RUN_DIR"/data/kafka-*/__cluster_metadata-0/quorum-state 2>/dev/null |
    tr ',{}' '\n\n\n' | awk -F: -v best=-1 '
      $1 == "\"leaderId\"" { id = $2 }
      $1 == "\"leaderEpoch\"" { if ($2 + 0 > best) { best = $2 + 0; leader = id } }
      END { print leader }'
}
# platform.sh up restarts what is not running; right after a lost quorum its admin
# requests can time out, so it is tried again (it is idempotent).
# PLATFORM_BUILD=0: with the binaries built at the start, not cargo again (with others
# editing the tree, a heal once waited 100 s for cargo while the broker stayed down).
heal_platform() {
  local try
  for try in 1 2 3; do
    PLATFORM_BUILD=0 "$platform" up >>"$out/platform-heal.log" 2>&1 && return 0
    echo "[chaos]   platform up failed (try $try), again in 5 s"
    sleep 5
  done
  return 1
}
# running PID: the process runs (not exited, nor a zombie not yet reaped).
running() { [[ -r /proc/$1/stat ]] && [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
# elapsed T: seconds (one decimal) since date +%s.%N gave T.
elapsed() { awk -v now="$(date +%s.%N)" -v t="$1" 'BEGIN { printf "%.1f", now - t }'; }
# event TEXT: a line of what happened, on the console and in the fault's report.
event() { echo "[chaos]   $*"; echo "$*" >>"$out/$fault.events"; }
# metric URL NAME: the sum of every series of NAME at URL, or NA.
metric() {
  local text
  text="$(curl -fsS --max-time 1 "$1" 2>/dev/null)" || { echo NA; return; }
  awk -v n="$2" '
    index($0, n) == 1 && (substr($0, length(n) + 1, 1) == "{" || substr($0, length(n) + 1, 1) == " ") { s += $NF; seen = 1 }
    END { if (seen) printf "%d", s; else printf "NA" }' <<<"$text"
}

: >"$out/table.md"
failed_faults=()
for fault in $faults; do
  case "$fault" in
    broker-stop | registry-stop) down="${CHAOS_DOWN:-30}" ;;
    payment-kill | ingress-kill) down="${CHAOS_DOWN_SERVICE:-5}" ;;
    pipeline-proc-kill) down="${CHAOS_DOWN_SERVICE:-10}" ;;
    partition) down="${CHAOS_DOWN:-30}" ;;
    *) down="${CHAOS_DOWN:-$([[ ${CHAOS:-quick} == ci ]] && echo 12 || echo 20)}" ;;
  esac
  # stack-serve supervises the services as a deployment would: one that exits by itself
  # is started again (its lines in <fault>.supervisor, then in the report).
  serve_args=(--supervise "$out/$fault.supervisor")
  [[ $fault != pipeline-proc-kill ]] || serve_args+=(--pipeline-processes 2)
  coproc STACK { "$bin/stack-serve" "${serve_args[@]}" 2>"$out/$fault.stack-serve.log"; }
  stack_pid=$STACK_PID stack_in="${STACK[1]}" stack_out="${STACK[0]}"
  read -r -t 180 -u "$stack_out" endpoints || { echo "[chaos] the stack did not start (see $out/$fault.stack-serve.log)" >&2; exit 1; }
  # The stack's endpoints, read once: ep[prefix], ep[payment], ep[pids.payment], ...
  declare -A ep=()
  while IFS='=' read -r key value; do ep[$key]="$value"; done < <(python3 - "$endpoints" <<'EOF'
import json, sys
for key, value in json.loads(sys.argv[1]).items():
    if isinstance(value, dict):
        for name, v in value.items():
            print(f"{key}.{name}={v}")
    elif isinstance(value, list):
        print(f"{key}={' '.join(value)}")
    else:
        print(f"{key}={value}")
EOF
)
  prefix="${ep[prefix]}"
  echo "[chaos] $fault: stack $prefix; load $rate/s for ${duration}s; fault at ${fault_at}s for ${down}s"

  rm -f "$out/$fault.progress" "$out/$fault.lag" "$out/$fault.events" "$out/$fault.supervisor"
  "$bin/loadgen" --rate "$rate" --duration "$duration" --restock 100000 \
    --ingress-rest "${ep[ingress_rest]}" --ingress-grpc "${ep[ingress_grpc]}" \
    --accepted "$out/$fault.accepted.jsonl" \
    --json "$out/$fault.loadgen.json" >"$out/$fault.loadgen.out" 2>"$out/$fault.progress" &
  load=$!
  # The load's clock starts after the restock: wait for its first progress line.
  until grep -q ' s  sent' "$out/$fault.progress" 2>/dev/null; do
    kill -0 "$load" 2>/dev/null && { sleep 0.2; continue; }
    echo "[chaos] $fault: the load did not start (see $out/$fault.progress)" >&2
    failed_faults+=("$fault")
    exec {stack_in}>&-
    wait "$stack_pid" 2>/dev/null || true
    continue 2
  done
  t0=$(date +%s.%N)
  # Consumer lag, every second: payment's group (its own gauge) and the pipeline's input
  # (summed over the job's processes; NA when none answers).
  read -r -a pipeline_metrics <<<"${ep[pipeline_metrics]}"
  pipeline_lag() {
    local url v sum=NA
    for url in "${pipeline_metrics[@]}"; do
      v="$(metric "$url/metrics" pipeline_input_lag)"
      [[ $v == NA ]] || sum=$((${sum/NA/0} + v))
    done
    echo "$sum"
  }
  (
    while kill -0 "$load" 2>/dev/null || [[ -f "$out/.sampling" ]]; do
      echo "$(date +%s.%N) $(metric "${ep[payment]}/metrics" kafka_consumergroup_lag) $(pipeline_lag)"
      sleep 1
    done >>"$out/$fault.lag"
  ) &
  sampler=$!
  touch "$out/.sampling"
  sleep "$fault_at"

  case "$fault" in
    broker-kill | controller-kill | two-brokers)
      case "$fault" in
        broker-kill) victims=("$node") ;;
        controller-kill) victims=("$(controller)") ;;
        two-brokers) victims=(2 3) ;;
      esac
      [[ -n "${victims[0]}" ]] || { echo "[chaos] no active controller found" >&2; exit 1; }
      echo "[chaos]   kill -9 kafka-${victims[*]}"
      killed=$(date +%s.%N)
      for v in "${victims[@]}"; do kill -9 "$(pid_of "kafka-$v")"; done
      sleep "$down"
      heal_platform ;;
    broker-stop | registry-stop)
      target="$([[ $fault == broker-stop ]] && echo "kafka-$node" || echo registry)"
      stopped="$(pid_of "$target")"
      echo "[chaos]   SIGSTOP $target"
      killed=$(date +%s.%N)
      kill -STOP "$stopped"
      sleep "$down"
      kill -CONT "$stopped"
      stopped="" ;;
    partition)
      event "kafka-$node cut off from the other two (active controller: kafka-$(controller))"
      killed=$(date +%s.%N)
      netns_partition "$node"
      sleep "$down"
      event "during the partition: active controller kafka-$(controller)"
      netns_heal
      event "healed" ;;
    pipeline-proc-kill)
      pid="${ep[pids.pipeline-1]}" pid0="${ep[pids.pipeline]}"
      echo "[chaos]   kill -9 pipeline process 1 (pid $pid; process 0 is $pid0)"
      killed=$(date +%s.%N)
      kill -9 "$pid"
      # Fail-stop: process 0 should exit by itself; the restart follows either way.
      while running "$pid0" && awk -v e="$(elapsed "$killed")" -v d="$down" 'BEGIN { exit !(e < d) }'; do
        sleep 0.2
      done
      if running "$pid0"; then
        event "pipeline process 0 still running ${down} s after the kill: not fail-stop"
      else
        event "pipeline process 0 exited by itself $(elapsed "$killed") s after the kill"
      fi
      echo "restart-job pipeline" >&"$stack_in"
      read -r -t 240 -u "$stack_out" restarted || { echo "[chaos] the pipeline job did not restart" >&2; exit 1; }
      event "every process restarted: $restarted" ;;
    payment-kill | ingress-kill)
      service="${fault%-kill}"
      pid="${ep[pids.$service]}"
      echo "[chaos]   kill -9 $service (pid $pid)"
      killed=$(date +%s.%N)
      kill -9 "$pid"
      sleep "$down"
      echo "restart $service" >&"$stack_in"
      read -r -t 180 -u "$stack_out" restarted || { echo "[chaos] $service did not restart" >&2; exit 1; }
      echo "[chaos]   $restarted" ;;
  esac
  healed=$(date +%s.%N)
  echo "$t0 $killed $healed" >"$out/$fault.times"
  wait "$load" || true
  # Lag samples until the check is done (it waits for the last orders to settle).
  check=0
  "$bin/chaos-check" --prefix "$prefix" --settle-seconds 90 \
    --accepted "$out/$fault.accepted.jsonl" --views-grpc "${ep[views_grpc]}" \
    >"$out/$fault.check.json" 2>"$out/$fault.check.err" || check=$?
  rm -f "$out/.sampling"
  wait "$sampler" 2>/dev/null || true
  if [[ -s "$out/$fault.supervisor" ]]; then
    awk -v k="$killed" '{ t = $1; $1 = ""; printf "supervisor, %+.1f s after the fault:%s\n", t - k, $0 }' \
      "$out/$fault.supervisor" >>"$out/$fault.events"
  fi

  python3 deploy/chaos/report.py "$fault" "$rate" "$t0" "$killed" "$healed" \
    "$out/$fault.progress" "$out/$fault.lag" "$out/$fault.check.json" "$out/$fault.loadgen.json" \
    "$out/$fault.events" >"$out/$fault.txt" || echo "| $fault | report failed, see $out/$fault.* |" >>"$out/$fault.txt"
  cat "$out/$fault.txt"
  tail -n 1 "$out/$fault.txt" >>"$out/table.md"
  ((check == 0)) || { failed_faults+=("$fault"); cat "$out/$fault.check.err" >&2; }

  exec {stack_in}>&-
  wait "$stack_pid" 2>/dev/null || true
done

echo "[chaos] | fault | detect s | recover s | no 201 for s | 503/UNAVAILABLE answers | lost | doubled | duplicate records |"
cat "$out/table.md"
if ((${#failed_faults[@]})); then
  echo "[chaos] FAILED: ${failed_faults[*]} (see $out/<fault>.check.json)" >&2
  exit 1
fi
echo "[chaos] every fault: 0 lost, 0 doubled"
