#!/usr/bin/env bash
# The local platform: a real 3-node Kafka cluster (KRaft, combined broker+controller) and
# Apicurio Registry, assembled from Maven Central because our machines have no Docker engine.
#
#   platform.sh up       fetch what is missing, format once, start, wait until ready, apply topics
#   platform.sh down     stop exactly what `up` started (by pid), data kept
#   platform.sh status   processes, brokers, controller quorum, under-replicated partitions, registry
#   platform.sh clean    down, then wipe data and logs (the jar cache is kept)
#   platform.sh fetch    only fetch the jars (progress shown)
#
# Everything runtime lives under $RUN_DIR (default <repo>/.run): conf/, data/, logs/, pids/.
# Jars live in Maven's cache (~/.m2) and deploy/local/.cache (git-ignored).
# Readiness is polled with a timeout, never slept for; a part that fails to start is named
# with its log file.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RUN_DIR="${RUN_DIR:-$ROOT/.run}"
CACHE="$HERE/.cache"
KAFKA_LIBS="$CACHE/kafka-libs"
APICURIO_HOME="$CACHE/apicurio/app"
NODES=(1 2 3)
BOOTSTRAP="127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
REGISTRY_URL="${REGISTRY_URL:-http://127.0.0.1:8081}"
REGISTRY_MGMT_PORT="${REGISTRY_MGMT_PORT:-8082}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
# The profile the operator tool (busctl) is built in; `make test` uses dev to share the
# test build, `make up` uses release together with the services.
CARGO_PROFILE="${CARGO_PROFILE:-release}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
profile_dir() { echo "$TARGET_DIR/$([[ $CARGO_PROFILE == dev ]] && echo debug || echo "$CARGO_PROFILE")"; }

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")"
APICURIO_VERSION="$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$HERE/pom.xml")"

say() { printf '\033[1m[platform]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[platform] error:\033[0m %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- fetch
fetch() {
  command -v java >/dev/null || die "java not found: install a JDK 17+ (apt-get install openjdk-17-jdk-headless)"
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
  if [[ ! -f "$KAFKA_LIBS/.complete-$KAFKA_VERSION" ]]; then
    say "fetching Kafka $KAFKA_VERSION jars from Maven Central (first run only; progress below)"
    rm -rf "$KAFKA_LIBS"
    mvn -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$KAFKA_LIBS" | grep -E 'Download(ed|ing) from|BUILD|ERROR' || true
    [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "Kafka jars were not fetched (see the Maven output above)"
    touch "$KAFKA_LIBS/.complete-$KAFKA_VERSION"
  fi
  if [[ ! -f "$APICURIO_HOME/.complete-$APICURIO_VERSION" ]]; then
    say "fetching Apicurio Registry $APICURIO_VERSION (about 160 MB, first run only)"
    rm -rf "$CACHE/apicurio"
    mvn -B -f "$HERE/pom.xml" dependency:copy \
      -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -DoutputDirectory="$CACHE/apicurio" | grep -E 'Download(ed|ing) from|BUILD|ERROR' || true
    local tarball="$CACHE/apicurio/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
    [[ -f "$tarball" ]] || die "Apicurio was not fetched (see the Maven output above)"
    mkdir -p "$APICURIO_HOME"
    tar -xzf "$tarball" -C "$APICURIO_HOME"
    rm -f "$tarball"
    [[ -f "$APICURIO_HOME/quarkus-run.jar" ]] || die "Apicurio tarball has no quarkus-run.jar"
    touch "$APICURIO_HOME/.complete-$APICURIO_VERSION"
  fi
}

busctl() {
  local bin; bin="$(profile_dir)/busctl"
  if [[ ! -x "$bin" || -n "$(find "$ROOT/eventbus" "$ROOT/schemas" "$ROOT/deploy/topics.toml" -newer "$bin" -print -quit 2>/dev/null)" ]]; then
    say "building busctl (the operator tool) with cargo --profile $CARGO_PROFILE"
    (cd "$ROOT" && cargo build -q --profile "$CARGO_PROFILE" -p eventbus --bin busctl) || die "cargo build of busctl failed"
  fi
  "$bin" "$@"
}

# ---------------------------------------------------------------- processes
pidfile() { echo "$RUN_DIR/pids/$1.pid"; }

# alive NAME: the pid in NAME's pidfile is running and is still the process we started
# (its command line carries our run folder), so a recycled pid is never signalled.
alive() {
  local f; f="$(pidfile "$1")"
  [[ -f "$f" ]] || return 1
  local pid; pid="$(cat "$f")"
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF -- "$RUN_DIR" ||
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -- "ORDERPIPELINE_RUN=$RUN_DIR"
}

# launch NAME LOGFILE CMD...: start CMD detached in its own session, record its pid.
launch() {
  local name="$1" log="$2"; shift 2
  mkdir -p "$RUN_DIR/pids" "$(dirname "$log")"
  nohup setsid "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

# stop NAME...: TERM, wait up to 60 s, then KILL; only our own processes.
stop() {
  local name pids=() names=()
  for name in "$@"; do
    if alive "$name"; then
      pids+=("$(cat "$(pidfile "$name")")"); names+=("$name")
      kill -TERM "$(cat "$(pidfile "$name")")" 2>/dev/null || true
    fi
  done
  [[ ${#pids[@]} -gt 0 ]] || return 0
  say "stopping ${names[*]}"
  local deadline=$((SECONDS + 60)) pid
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS > deadline)); then
        say "pid $pid did not stop within 60 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  done
  for name in "${names[@]}"; do rm -f "$(pidfile "$name")"; done
}

# ---------------------------------------------------------------- kafka
JAVA_COMMON=(-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:ParallelGCThreads=1 -XX:ConcGCThreads=1
  -XX:CICompilerCount=2 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)

kafka_java() { java "${JAVA_COMMON[@]}" -Xms128m -Xmx256m -cp "$KAFKA_LIBS/*" "$@"; }

render_node() {
  local n="$1"
  mkdir -p "$RUN_DIR/conf" "$RUN_DIR/data/kafka-$n" "$RUN_DIR/logs/kafka-$n"
  sed -e "s|@NODE@|$n|g" -e "s|@DATA@|$RUN_DIR/data/kafka-$n|g" \
    "$HERE/kafka-node.properties.template" >"$RUN_DIR/conf/kafka-$n.properties"
}

format_nodes() {
  local id_file="$RUN_DIR/data/cluster.id"
  mkdir -p "$RUN_DIR/data"
  if [[ ! -f "$id_file" ]]; then
    kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$id_file"
  fi
  local id n; id="$(cat "$id_file")"
  for n in "${NODES[@]}"; do
    render_node "$n"
    if [[ ! -f "$RUN_DIR/data/kafka-$n/meta.properties" ]]; then
      say "formatting kafka-$n (cluster id $id)"
      kafka_java -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$RUN_DIR/logs/kafka-$n" \
        kafka.tools.StorageTool format -t "$id" -c "$RUN_DIR/conf/kafka-$n.properties" \
        >>"$RUN_DIR/logs/kafka-$n/format.log" 2>&1 ||
        die "formatting kafka-$n failed: see $RUN_DIR/logs/kafka-$n/format.log"
    fi
  done
}

start_kafka() {
  local n started=0
  for n in "${NODES[@]}"; do
    if alive "kafka-$n"; then continue; fi
    render_node "$n"
    launch "kafka-$n" "$RUN_DIR/logs/kafka-$n/stdout.log" \
      java "${JAVA_COMMON[@]}" -Xms512m -Xmx512m \
      -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$RUN_DIR/logs/kafka-$n" \
      -Dorderpipeline.run="$RUN_DIR" -cp "$KAFKA_LIBS/*" kafka.Kafka "$RUN_DIR/conf/kafka-$n.properties"
    started=1
  done
  ((started)) && say "started Kafka nodes; waiting for 3 brokers (timeout ${READY_TIMEOUT}s)"
  local logs=() ; for n in "${NODES[@]}"; do logs+=("$RUN_DIR/logs/kafka-$n/server.log"); done
  busctl --bootstrap "$BOOTSTRAP" wait --brokers 3 --timeout "$READY_TIMEOUT" ||
    die "the Kafka cluster did not become ready: see ${logs[*]}"
  for n in "${NODES[@]}"; do
    alive "kafka-$n" || die "kafka-$n is not running: see $RUN_DIR/logs/kafka-$n/server.log and stdout.log"
  done
}

# ---------------------------------------------------------------- registry
# java_at_least N: prints a java binary of major version N or newer. Apicurio 3.3 is built
# for Java 21; Kafka runs on the default JDK 17. Looks at $REGISTRY_JAVA, then every JDK
# under /usr/lib/jvm (the machine image ships a Temurin JDK beside the distribution's).
java_at_least() {
  local want="$1" j v
  for j in ${REGISTRY_JAVA:-} "$(command -v java)" /usr/lib/jvm/*/bin/java; do
    [[ -x "$j" ]] || continue
    v="$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    if [[ -n "$v" && "${v%%.*}" -ge "$want" ]]; then echo "$j"; return 0; fi
  done
  return 1
}

start_registry() {
  if ! alive registry; then
    local rjava
    rjava="$(java_at_least 21)" ||
      die "Apicurio Registry $APICURIO_VERSION needs Java 21 or newer, and none was found (set REGISTRY_JAVA=/path/to/bin/java)"
    mkdir -p "$RUN_DIR/logs/registry"
    say "starting Apicurio Registry $APICURIO_VERSION on $REGISTRY_URL (storage: kafkasql on the local cluster)"
    launch registry "$RUN_DIR/logs/registry/registry.log" \
      "$rjava" "${JAVA_COMMON[@]}" -Xms128m -Xmx512m -Dorderpipeline.run="$RUN_DIR" \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="${REGISTRY_URL##*:}" \
      -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$REGISTRY_MGMT_PORT" \
      -Dapicurio.storage.kind=kafkasql -Dapicurio.kafkasql.bootstrap.servers="$BOOTSTRAP" \
      -Dapicurio.ccompat.use-canonical-hash=true \
      -jar "$APICURIO_HOME/quarkus-run.jar"
  fi
  local deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null "http://127.0.0.1:$REGISTRY_MGMT_PORT/health/ready" 2>/dev/null; do
    alive registry || die "the registry exited: see $RUN_DIR/logs/registry/registry.log"
    ((SECONDS < deadline)) || die "the registry was not ready after ${READY_TIMEOUT}s: see $RUN_DIR/logs/registry/registry.log"
    sleep 0.5
  done
  # Apicurio's default compatibility is NONE; the project's contract is BACKWARD.
  curl -fsS -X PUT -H 'Content-Type: application/json' -d '{"compatibility":"BACKWARD"}' \
    "$REGISTRY_URL/apis/ccompat/v7/config" >/dev/null ||
    die "could not set the registry's global compatibility: see $RUN_DIR/logs/registry/registry.log"
  say "registry ready: $REGISTRY_URL/apis/ccompat/v7 (global compatibility BACKWARD)"
}

# ---------------------------------------------------------------- services
# The services of the workspace, in start order: name, readiness URL. A service joins
# `make up` as soon as its crate has a binary (src/main.rs).
SERVICES=("payment http://127.0.0.1:8085/readyz" "pipeline http://127.0.0.1:8090/readyz" "ingress http://127.0.0.1:8080/readyz")

present_services() {
  local entry
  for entry in "${SERVICES[@]}"; do
    [[ -f "$ROOT/${entry%% *}/src/main.rs" ]] && echo "$entry"
  done
  return 0
}

register_schemas() {
  say "registering the event schemas (all versions, idempotent)"
  busctl schemas register || die "schema registration failed (registry log: $RUN_DIR/logs/registry/registry.log)"
}

start_services() {
  local entries=() entry name url bin
  mapfile -t entries < <(present_services)
  ((${#entries[@]})) || return 0
  local names=(); for entry in "${entries[@]}"; do names+=("${entry%% *}"); done
  say "building ${names[*]} (cargo --profile $CARGO_PROFILE)"
  (cd "$ROOT" && cargo build -q --profile "$CARGO_PROFILE" $(printf -- '-p %s ' "${names[@]}")) ||
    die "cargo build of the services failed"
  local dir; dir="$(profile_dir)"
  for entry in "${entries[@]}"; do
    name="${entry%% *}"; url="${entry#* }"; bin="$dir/$name"
    if ! alive "$name"; then
      mkdir -p "$RUN_DIR/logs/$name"
      # ORDERPIPELINE_RUN marks the process as ours for `alive` and `down`.
      # A service's local settings, if any, come from deploy/local/services/<name>.toml.
      local cfg=() upper; upper="$(tr '[:lower:]' '[:upper:]' <<<"$name")"
      [[ -f "$HERE/services/$name.toml" ]] && cfg=("${upper}_CONFIG=$HERE/services/$name.toml")
      launch "$name" "$RUN_DIR/logs/$name/$name.log" env ORDERPIPELINE_RUN="$RUN_DIR" "${cfg[@]}" \
        KAFKA_BOOTSTRAP="$BOOTSTRAP" REGISTRY_URL="$REGISTRY_URL" "$bin"
    fi
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -fsS -o /dev/null "$url" 2>/dev/null; do
      alive "$name" || die "$name exited: see $RUN_DIR/logs/$name/$name.log"
      ((SECONDS < deadline)) || die "$name was not ready after ${READY_TIMEOUT}s: see $RUN_DIR/logs/$name/$name.log"
      sleep 0.3
    done
    say "$name ready (${url%/readyz})"
  done
}

# ---------------------------------------------------------------- commands
up() {
  local t0=$SECONDS
  fetch
  format_nodes
  start_kafka
  say "applying deploy/topics.toml"
  busctl --bootstrap "$BOOTSTRAP" topics apply --file "$ROOT/deploy/topics.toml"
  start_registry
  register_schemas
  [[ "${PLATFORM_ONLY:-0}" == 1 ]] || start_services
  say "up in $((SECONDS - t0)) s; logs in $RUN_DIR/logs"
  echo "  Kafka              $BOOTSTRAP"
  echo "  schema registry    $REGISTRY_URL/apis/ccompat/v7"
  if [[ "${PLATFORM_ONLY:-0}" != 1 ]]; then
    alive ingress && echo "  ingress            http://127.0.0.1:8080 (REST, /openapi.json)  127.0.0.1:50051 (gRPC)"
    alive payment && echo "  payment            http://127.0.0.1:8085 (/metrics, /readyz)"
    alive pipeline && echo "  pipeline views     http://127.0.0.1:8090/v1/inventory  127.0.0.1:50052 (gRPC)"
  fi
  return 0
}

down() {
  local entry names=()
  for entry in "${SERVICES[@]}"; do names+=("${entry%% *}"); done
  stop "${names[@]}"
  stop registry
  stop kafka-1 kafka-2 kafka-3
  say "platform down (data kept in $RUN_DIR/data)"
}

status() {
  local name
  local names=(kafka-1 kafka-2 kafka-3 registry) entry
  for entry in "${SERVICES[@]}"; do names+=("${entry%% *}"); done
  for name in "${names[@]}"; do
    if alive "$name"; then
      printf '  %-10s running  pid %-7s rss %s MiB\n' "$name" "$(cat "$(pidfile "$name")")" \
        "$(( $(awk '/VmRSS/{print $2}' "/proc/$(cat "$(pidfile "$name")")/status") / 1024 ))"
    else
      printf '  %-10s stopped\n' "$name"
    fi
  done
  alive kafka-1 || alive kafka-2 || alive kafka-3 || return 0
  busctl --bootstrap "$BOOTSTRAP" status --registry "$REGISTRY_URL" || true
  echo "  controller quorum:"
  kafka_java -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$RUN_DIR/logs" \
    org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$BOOTSTRAP" describe --status 2>/dev/null |
    sed 's/^/    /' || echo "    (quorum not reachable)"
  if curl -fsS -o /dev/null "http://127.0.0.1:$REGISTRY_MGMT_PORT/health/ready" 2>/dev/null; then
    echo "  registry: ready ($REGISTRY_URL, compatibility $(curl -fsS "$REGISTRY_URL/apis/ccompat/v7/config" | sed 's/.*"compatibilityLevel":"\([A-Z_]*\)".*/\1/'))"
  else
    echo "  registry: NOT ready"
  fi
}

clean() {
  down
  rm -rf "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/conf" "$RUN_DIR/pids"
  say "wiped $RUN_DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  clean) clean ;;
  fetch) fetch ;;
  busctl) shift; busctl "$@" ;;
  *) echo "usage: $0 up|down|status|clean|fetch" >&2; exit 2 ;;
esac
