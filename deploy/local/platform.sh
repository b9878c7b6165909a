#!/usr/bin/env bash
# The local platform: a real 3-node Kafka cluster (KRaft, combined broker+controller) and
# Apicurio Registry, assembled from Maven Central because our machines have no Docker engine.
#
#   platform.sh up       fetch what is missing, make secrets, format once, start, wait until
#                        ready, apply topics and ACLs, start the registry, the monitoring
#                        stack (deploy/local/observability.sh) and the services
#   platform.sh down     stop exactly what `up` started (by pid), data kept
#   platform.sh status   processes, brokers, controller quorum, under-replicated partitions, registry
#   platform.sh clean    down, then wipe data, logs and secrets (the jar cache is kept)
#   platform.sh acls     apply deploy/acls.toml to the running cluster (`up` does it too)
#   platform.sh fetch    only fetch the jars (progress shown)
#   platform.sh build    build busctl, dlq, the services and the demo (one cargo invocation)
#   platform.sh busctl ARGS  the operator tool, as User:admin
#
# Security. SECURITY=sasl_ssl (the default): clients authenticate with SCRAM-SHA-512 over
# TLS on the usual ports, the nodes talk to each other over mutual TLS, and every request
# is authorized against ACLs (deploy/acls.toml). SECURITY=plaintext keeps the open cluster
# of old, labelled INSECURE. The mode is fixed when the data is formatted
# (.run/data/security); switching modes needs `make clean`.
#
# The contract with the Rust side: every Rust process reads KAFKA_CLIENT_CONFIG, the path
# of a librdkafka properties file .run/secrets/<principal>.conf (bootstrap.servers,
# security.protocol, sasl.mechanisms, sasl.username, sasl.password, ssl.ca.location), in
# both modes. busctl runs as admin; each service as itself (ingress, payment, pipeline).
#
# Everything runtime lives under $RUN_DIR (default <repo>/.run): conf/, data/, logs/, pids/,
# secrets/ (0700, files 0600; never commit, never print). Jars live in Maven's cache (~/.m2)
# and deploy/local/.cache (git-ignored). Readiness is polled with a timeout, never slept
# for; a part that fails to start is named with its log file.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RUN_DIR="${RUN_DIR:-$ROOT/.run}"
CACHE="$HERE/.cache"
KAFKA_LIBS="$CACHE/kafka-libs"
APICURIO_HOME="$CACHE/apicurio/app"
NODES=(1 2 3)
# A second cluster beside the first (the chaos harness, deploy/chaos/): KAFKA_HOSTS gives
# each node its own loopback address (e.g. "127.0.0.2 127.0.0.3 127.0.0.4", which the
# brokers' certificate names), REGISTRY_HOST the registry's, with its own RUN_DIR; the
# ports stay the same, so the two never collide. Unset, everything is on 127.0.0.1.
read -r -a KAFKA_HOSTS <<<"${KAFKA_HOSTS:-127.0.0.1 127.0.0.1 127.0.0.1}"
((${#KAFKA_HOSTS[@]} == ${#NODES[@]})) || { echo "KAFKA_HOSTS needs ${#NODES[@]} addresses" >&2; exit 1; }
host_of() { echo "${KAFKA_HOSTS[$(($1 - 1))]}"; }
# KAFKA_NODE_PREFIX: an optional command each node is started under, @NODE@ standing for
# its number (the chaos harness: "ip netns exec chaos-k@NODE@", a network namespace per
# node, so that one node can be cut off from the others). Unset: the nodes start as is.
KAFKA_NODE_PREFIX="${KAFKA_NODE_PREFIX:-}"
# KAFKA_HOSTS outside 127.0.0.1-4 (which the nodes' certificate always names): they are
# added to its names, and a certificate without them is issued again.
EXTRA_SAN_IPS=() EXTRA_SAN=""
for h in "${KAFKA_HOSTS[@]}"; do
  [[ " 127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.4 ${EXTRA_SAN_IPS[*]} " == *" $h "* ]] ||
    { EXTRA_SAN_IPS+=("$h"); EXTRA_SAN+=",IP:$h"; }
done
REGISTRY_HOST="${REGISTRY_HOST:-127.0.0.1}"
BOOTSTRAP="$(host_of 1):19092,$(host_of 2):29092,$(host_of 3):39092"
REGISTRY_URL="${REGISTRY_URL:-http://$REGISTRY_HOST:8081}"
REGISTRY_MGMT_PORT="${REGISTRY_MGMT_PORT:-8082}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
SECRETS="$RUN_DIR/secrets"
# The SCRAM users, created when the data is formatted, one random password each. admin is
# a super user (operator tools, topics, ACLs, tests, benchmarks); the others get exactly
# what deploy/acls.toml grants them.
PRINCIPALS=(admin ingress payment pipeline registry)
# The mode the data was formatted with.
MODE_FILE="$RUN_DIR/data/security"
# The consumer-group prefix of the registry's kafkasql storage (granted in deploy/acls.toml).
REGISTRY_GROUP_PREFIX="apicurio-registry-"
# The cargo profile busctl, the services and the demo are built in: dev by default (the
# test build, minutes from a fresh clone); the Makefile passes PROFILE. `up` records it in
# $RUN_DIR/profile so that `make demo` and `make status` use what `make up` built.
CARGO_PROFILE="${CARGO_PROFILE:-dev}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
profile_dir() { echo "$TARGET_DIR/$([[ $CARGO_PROFILE == dev ]] && echo debug || echo "$CARGO_PROFILE")"; }

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")"
APICURIO_VERSION="$(sed -n 's:.*<apicurio.version>\(.*\)</apicurio.version>.*:\1:p' "$HERE/pom.xml")"

# The monitoring stack (Prometheus, dashboards, log store) and the brokers' JMX agent.
# shellcheck source=deploy/local/observability.sh
source "$HERE/observability.sh"

say() { printf '\033[1m[platform]\033[0m %s\n' "$*"; }
warn() { printf '\033[1;33m[platform] %s\033[0m\n' "$*"; }
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
  jmx_fetch
}

# ---------------------------------------------------------------- binaries
# Everything `up` and `make demo` run is built by ONE cargo invocation: cargo resolves
# features per invocation, so building busctl, the services and the demo one by one would
# compile the shared crates (eventbus, servicekit, ...) again for each feature set.
# PLATFORM_ONLY=1 (`make test`) builds the same set: a smaller set would resolve the
# dependencies' features differently (tokio, hyper, ...) and each `up` would then rebuild
# what the one before it built.
# Cargo shows its own progress (crates compiled of the total) on the terminal.
BUILT=0
build_binaries() {
  ((BUILT)) && return 0
  local bins=(busctl dlq) pkgs=(eventbus) entry
  while read -r entry; do bins+=("${entry%% *}"); pkgs+=("${entry%% *}"); done < <(present_services)
  bins+=(demo); pkgs+=(benches)
  # PLATFORM_BUILD=0: take the binaries as they are when all are there (the chaos
  # harness's heal, which must not wait for cargo while a fault is on).
  if [[ "${PLATFORM_BUILD:-1}" == 0 ]]; then
    local bin missing=0
    for bin in "${bins[@]}"; do [[ -x "$(profile_dir)/$bin" ]] || missing=1; done
    ((missing)) || { BUILT=1; return 0; }
  fi
  say "building ${bins[*]} (cargo --profile $CARGO_PROFILE)" >&2
  (cd "$ROOT" && cargo build --profile "$CARGO_PROFILE" $(printf -- '-p %s ' "${pkgs[@]}") \
    $(printf -- '--bin %s ' "${bins[@]}")) >&2 || die "cargo build failed (see above)"
  BUILT=1
}

# busctl ARGS...: the operator tool, as User:admin (KAFKA_CLIENT_CONFIG=admin.conf).
busctl() {
  local bin; bin="$(profile_dir)/busctl"
  # On stderr: callers capture busctl's stdout (acls render). Outside `up`, the binary
  # is rebuilt when the sources it is made of changed.
  if [[ ! -x "$bin" || -n "$(find "$ROOT/eventbus" "$ROOT/schemas" "$ROOT/deploy/topics.toml" -newer "$bin" -print -quit 2>/dev/null)" ]]; then
    build_binaries
  fi
  KAFKA_CLIENT_CONFIG="$SECRETS/admin.conf" REGISTRY_URL="$REGISTRY_URL" "$bin" "$@"
}

# ---------------------------------------------------------------- security mode
# MODE: sasl_ssl or plaintext. `up` takes it from $SECURITY (choose_mode), every other
# command from what the data was formatted with (recorded_mode).
MODE=""

# formatted_mode: the mode the data was formatted with; empty before the first format.
# Data formatted before secure mode existed has no record: it is plaintext.
formatted_mode() {
  if [[ -f "$MODE_FILE" ]]; then
    cat "$MODE_FILE"
  elif compgen -G "$RUN_DIR/data/kafka-*/meta.properties" >/dev/null; then
    echo plaintext
  fi
}

# choose_mode: MODE from $SECURITY (default sasl_ssl). Data formatted in the other mode is
# refused: its SCRAM users, listeners and ACLs would not match.
choose_mode() {
  local want have
  want="$(tr '[:upper:]' '[:lower:]' <<<"${SECURITY:-sasl_ssl}")"
  case "$want" in
    sasl_ssl | plaintext) ;;
    *) die "SECURITY=${SECURITY:-} is not a mode: use sasl_ssl (the default) or plaintext" ;;
  esac
  have="$(formatted_mode)"
  if [[ -n "$have" && "$have" != "$want" ]]; then
    die "the data in $RUN_DIR/data was formatted with SECURITY=$have, and this run asks for SECURITY=$want: run \`make clean\` first (it wipes data, logs and secrets), or keep SECURITY=$have"
  fi
  MODE="$want"
}

recorded_mode() {
  MODE="$(formatted_mode)"
  [[ -n "$MODE" ]] || MODE="$(tr '[:upper:]' '[:lower:]' <<<"${SECURITY:-sasl_ssl}")"
}

# ---------------------------------------------------------------- secrets
# $SECRETS (0700, every file 0600; made on the first `up`, wiped by `clean`):
#   ca.key, ca.crt          the cluster's own CA; clients trust ca.crt only
#   broker.pem              the nodes' key (PKCS#8) + certificate (CN=broker) + CA. Only the
#                           Kafka nodes read it; presenting it on a mutual-TLS listener is
#                           the only way to be User:broker (a super user)
#   <principal>.password    SCRAM password (openssl rand), fixed once the data is formatted
#   <principal>.conf        librdkafka client config (kcat -F, KAFKA_CLIENT_CONFIG). SCRAM
#                           against Kafka 4 needs librdkafka >= 2.6.1 (older ones send a
#                           wrong nonce, librdkafka#4895): Debian 12's kcat 1.7.1 links
#                           2.0.2 and is refused with "invalid credentials"
#   <principal>.properties  Java client config (Kafka tools' --command-config)
#   registry.application.properties  the registry's Kafka settings and password (Quarkus)
# No secret is ever printed or put on a command line: the format step passes the SCRAM
# users through a java @argfile here, the registry reads its file via quarkus.config.locations.

# secret_file NAME: stdin to $SECRETS/NAME, mode 0600, replaced atomically.
secret_file() {
  local tmp; tmp="$(umask 077 && mktemp "$SECRETS/.$1.XXXXXX")"
  cat >"$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$SECRETS/$1"
}

password() { cat "$SECRETS/$1.password"; }

ensure_ca() {
  [[ -s "$SECRETS/ca.key" && -s "$SECRETS/ca.crt" ]] && return 0
  say "creating the cluster's certificate authority ($SECRETS/ca.crt)"
  rm -f "$SECRETS/broker.pem"  # signed by a previous CA, if any
  (umask 077 && openssl req -x509 -new -newkey rsa:3072 -nodes -sha256 -days 3650 \
    -subj "/CN=orderpipeline local CA" -keyout "$SECRETS/ca.key" -out "$SECRETS/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign") >/dev/null 2>&1 ||
    die "openssl could not create the CA in $SECRETS"
}

# ensure_broker_cert: the nodes' key and certificate; (re)issued when missing, not signed
# by the current CA, or expiring within 30 days (running nodes keep theirs until restarted).
ensure_broker_cert() {
  local pem="$SECRETS/broker.pem"
  if [[ -s "$pem" ]] &&
    openssl verify -CAfile "$SECRETS/ca.crt" <(openssl x509 -in "$pem") >/dev/null 2>&1 &&
    openssl x509 -in "$pem" -noout -checkend $((30 * 86400)) >/dev/null 2>&1 &&
    has_extra_sans "$pem"; then
    return 0
  fi
  say "issuing the Kafka nodes' certificate (CN=broker; SAN IP:127.0.0.1-4$EXTRA_SAN, DNS:localhost)"
  local work; work="$(umask 077 && mktemp -d "$SECRETS/.broker.XXXXXX")"
  if ! (
    umask 077
    openssl req -new -newkey rsa:2048 -nodes -keyout "$work/broker.key" -subj "/CN=broker" \
      -out "$work/broker.csr" &&
      printf '%s\n' \
        "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,IP:127.0.0.4$EXTRA_SAN,DNS:localhost" \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" >"$work/ext" &&
      openssl x509 -req -in "$work/broker.csr" -CA "$SECRETS/ca.crt" -CAkey "$SECRETS/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -extfile "$work/ext" \
        -out "$work/broker.crt" &&
      # Kafka's PEM reader takes an unencrypted PKCS#8 key ("BEGIN PRIVATE KEY").
      grep -q 'BEGIN PRIVATE KEY' "$work/broker.key" &&
      cat "$work/broker.key" "$work/broker.crt" "$SECRETS/ca.crt" >"$work/broker.pem"
  ) >/dev/null 2>&1; then
    rm -rf "$work"
    die "openssl could not issue the broker certificate in $SECRETS"
  fi
  secret_file broker.pem <"$work/broker.pem"
  rm -rf "$work"
}

# has_extra_sans PEM: the certificate names every address of EXTRA_SAN_IPS.
has_extra_sans() {
  ((${#EXTRA_SAN_IPS[@]})) || return 0
  local names ip; names="$(openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null)"
  for ip in "${EXTRA_SAN_IPS[@]}"; do [[ "$names" == *"IP Address:$ip"* ]] || return 1; done
}

# ensure_passwords: a random SCRAM password per principal. Once the data is formatted they
# are fixed (the cluster keeps their SCRAM hashes): a lost one cannot be made again here.
ensure_passwords() {
  local p formatted; formatted="$(formatted_mode)"
  for p in "${PRINCIPALS[@]}"; do
    [[ -s "$SECRETS/$p.password" ]] && continue
    [[ "$formatted" != sasl_ssl ]] ||
      die "$SECRETS/$p.password is missing, but the cluster was formatted with it: run \`make clean\` first"
    openssl rand -hex 24 | secret_file "$p.password"
  done
}

# write_client_configs: <principal>.conf and .properties for every principal in MODE, and
# the registry's Quarkus config. Rewritten on every run (same content: idempotent).
write_client_configs() {
  local p
  for p in "${PRINCIPALS[@]}"; do
    if [[ "$MODE" == sasl_ssl ]]; then
      secret_file "$p.conf" <<CONF
# librdkafka client config of User:$p, written by deploy/local/platform.sh. Secret.
# kcat -F $SECRETS/$p.conf -L ; busctl and the services read it via KAFKA_CLIENT_CONFIG.
bootstrap.servers=$BOOTSTRAP
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$p
sasl.password=$(password "$p")
ssl.ca.location=$SECRETS/ca.crt
CONF
      secret_file "$p.properties" <<CONF
# Java client config of User:$p, written by deploy/local/platform.sh. Secret.
# Kafka's tools: --bootstrap-server $BOOTSTRAP --command-config $SECRETS/$p.properties
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$p" password="$(password "$p")";
ssl.truststore.type=PEM
ssl.truststore.location=$SECRETS/ca.crt
CONF
    else
      secret_file "$p.conf" <<CONF
# librdkafka client config, written by deploy/local/platform.sh.
# SECURITY=plaintext: INSECURE, no TLS, no authentication (every client is anonymous).
bootstrap.servers=$BOOTSTRAP
security.protocol=PLAINTEXT
CONF
      secret_file "$p.properties" <<CONF
# Java client config, written by deploy/local/platform.sh. SECURITY=plaintext: INSECURE.
security.protocol=PLAINTEXT
CONF
    fi
  done
  # apicurio.kafka.common.* goes to every Kafka client of the registry's kafkasql storage
  # (its producers, consumers and admin client), see Apicurio's KafkaSqlConfiguration.
  if [[ "$MODE" == sasl_ssl ]]; then
    secret_file registry.application.properties <<CONF
# Kafka settings of Apicurio Registry (User:registry), written by platform.sh. Secret.
# Read through -Dquarkus.config.locations, so the password is not on the command line.
apicurio.kafka.common.security.protocol=SASL_SSL
apicurio.kafka.common.sasl.mechanism=SCRAM-SHA-512
apicurio.kafka.common.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="registry" password="$(password registry)";
apicurio.kafka.common.ssl.truststore.type=PEM
apicurio.kafka.common.ssl.truststore.location=$SECRETS/ca.crt
# Apicurio turns host name verification off by default; the nodes' certificate names
# 127.0.0.1, so keep Kafka's default (verify).
apicurio.kafka.common.ssl.endpoint.identification.algorithm=https
CONF
  else
    secret_file registry.application.properties <<CONF
# Kafka settings of Apicurio Registry, written by platform.sh. SECURITY=plaintext: INSECURE.
apicurio.kafka.common.security.protocol=PLAINTEXT
CONF
  fi
}

ensure_secrets() {
  mkdir -p "$RUN_DIR"
  (umask 077 && mkdir -p "$SECRETS")
  chmod 700 "$SECRETS"
  if [[ "$MODE" == sasl_ssl ]]; then
    command -v openssl >/dev/null || die "openssl not found: install it (apt-get install openssl)"
    ensure_ca
    ensure_broker_cert
    ensure_passwords
  fi
  write_client_configs
  find "$SECRETS" -type f ! -perm 600 -exec chmod 600 {} +
  find "$SECRETS" -type d ! -perm 700 -exec chmod 700 {} +
}

# ---------------------------------------------------------------- processes
pidfile() { echo "$RUN_DIR/pids/$1.pid"; }

# proc_start PID: the process's start time (clock ticks since boot, field 22 of
# /proc/PID/stat); fails when there is no such process or it is a zombie. The start time
# stays the same across exec, and a recycled pid has another one.
proc_start() {
  local stat fields
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"  # the fields after "(comm)", which may itself contain spaces
  read -r -a fields <<<"$stat"
  [[ "${fields[0]:-}" != Z && -n "${fields[19]:-}" ]] || return 1
  echo "${fields[19]}"
}

# pid_of NAME: the pid recorded for NAME.
pid_of() { local pid _; read -r pid _ <"$(pidfile "$1")"; echo "$pid"; }

# alive NAME: the process in NAME's pidfile runs and is still the one we started. The
# pidfile holds "pid start-time", and the start time must match: a recycled pid is never
# signalled, and nothing depends on the command line or environment, which change at the
# exec right after launch (reading them raced with it and once reported a live service as
# exited). A pidfile of an older platform.sh holds just a pid: then, as before, its
# command line or environment must name our run folder.
alive() {
  local f pid="" start="" now
  f="$(pidfile "$1")"
  [[ -f "$f" ]] || return 1
  read -r pid start <"$f" || [[ -n "$pid" ]] || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  now="$(proc_start "$pid")" || return 1
  if [[ -n "$start" ]]; then
    [[ "$now" == "$start" ]]
    return
  fi
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$RUN_DIR" ||
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -- "ORDERPIPELINE_RUN=$RUN_DIR"
}

# launch NAME LOGFILE CMD...: start CMD detached in its own session; record its pid and
# start time, read from the forked child at once.
launch() {
  local name="$1" log="$2"; shift 2
  mkdir -p "$RUN_DIR/pids" "$(dirname "$log")"
  nohup setsid "$@" >>"$log" 2>&1 </dev/null &
  local pid=$! start
  start="$(proc_start "$pid")" || start=""
  echo "$pid $start" >"$(pidfile "$name")"
}

# stop NAME...: TERM, wait up to 60 s, then KILL; only our own processes.
stop() {
  local name pids=() names=()
  for name in "$@"; do
    if alive "$name"; then
      pids+=("$(pid_of "$name")"); names+=("$name")
      kill -TERM "$(pid_of "$name")" 2>/dev/null || true
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

# kafka_tool ARGS...: a Kafka CLI tool (or AclSync.java) logging to .run/logs/tools/.
kafka_tool() {
  mkdir -p "$RUN_DIR/logs/tools"
  kafka_java -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$RUN_DIR/logs/tools" "$@"
}

# render_node N: node N's config: the template with the listener/security block of MODE.
render_node() {
  local n="$1" conf="$RUN_DIR/conf/kafka-$1.properties"
  mkdir -p "$RUN_DIR/conf" "$RUN_DIR/data/kafka-$n" "$RUN_DIR/logs/kafka-$n"
  sed -e "/^@LISTENERS@\$/{r $HERE/kafka-listeners-$MODE.properties" -e "d;}" \
    "$HERE/kafka-node.properties.template" |
    sed -e "s|@NODE@|$n|g" -e "s|@DATA@|$RUN_DIR/data/kafka-$n|g" -e "s|@SECRETS@|$SECRETS|g" |
    # Node k's listeners are 127.0.0.1:k909x in the templates: each moves to its host.
    sed -e "s|127\.0\.0\.1:1909|$(host_of 1):1909|g" -e "s|127\.0\.0\.1:2909|$(host_of 2):2909|g" \
      -e "s|127\.0\.0\.1:3909|$(host_of 3):3909|g" >"$conf"
  if grep -v '^#' "$conf" | grep -q '@[A-Z]*@'; then die "unfilled placeholder in $conf"; fi
}

# format_nodes: formats each node once. In sasl_ssl mode this is where the SCRAM users are
# created: the credentials live in the metadata log, so the first one (admin) cannot be
# added any later. The passwords reach the tool through a java @argfile (0600, removed
# right after), never through its command line.
format_nodes() {
  local id_file="$RUN_DIR/data/cluster.id"
  mkdir -p "$RUN_DIR/data"
  if [[ ! -f "$id_file" ]]; then
    kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$id_file"
  fi
  local id n p; id="$(cat "$id_file")"
  for n in "${NODES[@]}"; do
    render_node "$n"
    [[ -f "$RUN_DIR/data/kafka-$n/meta.properties" ]] && continue
    say "formatting kafka-$n (cluster id $id, SECURITY=$MODE)"
    echo "$MODE" >"$MODE_FILE"
    {
      printf '%s\n' kafka.tools.StorageTool format -t "$id" -c "\"$RUN_DIR/conf/kafka-$n.properties\""
      if [[ "$MODE" == sasl_ssl ]]; then
        for p in "${PRINCIPALS[@]}"; do
          printf -- '--add-scram\nSCRAM-SHA-512=[name=%s,password=%s]\n' "$p" "$(password "$p")"
        done
      fi
    } | secret_file format.args
    if ! kafka_java -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$RUN_DIR/logs/kafka-$n" \
      "@$SECRETS/format.args" >>"$RUN_DIR/logs/kafka-$n/format.log" 2>&1; then
      rm -f "$SECRETS/format.args"
      die "formatting kafka-$n failed: see $RUN_DIR/logs/kafka-$n/format.log"
    fi
    rm -f "$SECRETS/format.args"
  done
}

start_kafka() {
  local n started=0
  for n in "${NODES[@]}"; do
    if alive "kafka-$n"; then continue; fi
    render_node "$n"
    local prefix=()
    [[ -z "$KAFKA_NODE_PREFIX" ]] || read -r -a prefix <<<"${KAFKA_NODE_PREFIX//@NODE@/$n}"
    launch "kafka-$n" "$RUN_DIR/logs/kafka-$n/stdout.log" \
      "${prefix[@]}" java "${JAVA_COMMON[@]}" -Xms512m -Xmx512m "$(jmx_agent "$n" | sed "s|=127\.0\.0\.1:|=$(host_of "$n"):|")" -Dorderpipeline.service="kafka-$n" \
      `# every GC pause with its wall time, for the benchmark's per-step pause totals` \
      "-Xlog:gc:file=$RUN_DIR/logs/kafka-$n/gc.log:time,uptime:filecount=2,filesize=10m" \
      -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$RUN_DIR/logs/kafka-$n" \
      -Dorderpipeline.run="$RUN_DIR" -cp "$KAFKA_LIBS/*" kafka.Kafka "$RUN_DIR/conf/kafka-$n.properties"
    started=1
  done
  ((started)) && say "started Kafka nodes; waiting for 3 brokers (timeout ${READY_TIMEOUT}s)"
  local logs=() ; for n in "${NODES[@]}"; do logs+=("$RUN_DIR/logs/kafka-$n/server.log"); done
  busctl --bootstrap "$BOOTSTRAP" wait --brokers 3 --timeout "$READY_TIMEOUT" ||
    die "the Kafka cluster did not become ready (asked as User:admin with $SECRETS/admin.conf): see ${logs[*]}"
  for n in "${NODES[@]}"; do
    alive "kafka-$n" || die "kafka-$n is not running: see $RUN_DIR/logs/kafka-$n/server.log and stdout.log"
  done
}

# ---------------------------------------------------------------- acls
# apply_acls: makes the cluster's ACLs exactly deploy/acls.toml. busctl validates and
# renders the file, one binding per line; AclSync.java (Kafka's Java Admin API, as
# User:admin) creates the missing bindings, deletes all others and prints each change.
apply_acls() {
  if [[ "$MODE" != sasl_ssl ]]; then
    warn "SECURITY=plaintext: no authorizer, deploy/acls.toml is not applied (INSECURE)"
    return 0
  fi
  local bindings principal changes
  bindings="$(busctl acls render --file "$ROOT/deploy/acls.toml")" ||
    die "deploy/acls.toml is not valid (see above)"
  # Every principal it names needs SCRAM credentials, which are made at format time.
  for principal in $(cut -d' ' -f1 <<<"$bindings" | sort -u); do
    [[ " ${PRINCIPALS[*]} " == *" ${principal#User:} "* ]] ||
      die "deploy/acls.toml names $principal, which has no SCRAM credentials (platform.sh PRINCIPALS: ${PRINCIPALS[*]}; adding one needs \`make clean\`)"
  done
  say "applying deploy/acls.toml ($(grep -c . <<<"$bindings") bindings, as User:admin)"
  changes="$(kafka_tool "$HERE/AclSync.java" --bootstrap-server "$BOOTSTRAP" \
    --command-config "$SECRETS/admin.properties" <<<"$bindings")" ||
    die "applying the ACLs failed (see above; client log: $RUN_DIR/logs/tools/server.log)"
  if [[ -n "$changes" ]]; then
    sed 's/^/  /' <<<"$changes"
  else
    echo "  ACLs unchanged"
  fi
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
    say "starting Apicurio Registry $APICURIO_VERSION on $REGISTRY_URL (storage: kafkasql on the local cluster$([[ "$MODE" == sasl_ssl ]] && echo ", as User:registry"))"
    # Its Kafka security settings and password come from a 0600 file in .run/secrets
    # (quarkus.config.locations), never from the command line. The topics and the group
    # prefix are stated here because deploy/acls.toml grants exactly these. It logs JSON
    # lines (Apicurio ships quarkus-logging-json) with service=registry, for VictoriaLogs.
    launch registry "$RUN_DIR/logs/registry/registry.log" \
      "$rjava" "${JAVA_COMMON[@]}" -Xms128m -Xmx512m -Dorderpipeline.run="$RUN_DIR" \
      -Dquarkus.config.locations="$SECRETS/registry.application.properties" \
      -Dquarkus.http.host="$REGISTRY_HOST" -Dquarkus.http.port="${REGISTRY_URL##*:}" \
      -Dquarkus.management.host="$REGISTRY_HOST" -Dquarkus.management.port="$REGISTRY_MGMT_PORT" \
      -Dquarkus.log.console.json=true -Dquarkus.log.console.json.additional-field.service.value=registry \
      -Dapicurio.storage.kind=kafkasql -Dapicurio.kafkasql.bootstrap.servers="$BOOTSTRAP" \
      -Dapicurio.kafkasql.topic=kafkasql-journal -Dapicurio.kafkasql.snapshots.topic=kafkasql-snapshots \
      -Dapicurio.events.kafka.topic=registry-events \
      -Dapicurio.kafkasql.consumer.group-prefix="$REGISTRY_GROUP_PREFIX" \
      -Dapicurio.ccompat.use-canonical-hash=true \
      -jar "$APICURIO_HOME/quarkus-run.jar"
  fi
  local deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null "http://$REGISTRY_HOST:$REGISTRY_MGMT_PORT/health/ready" 2>/dev/null; do
    alive registry || die "the registry exited: see $RUN_DIR/logs/registry/registry.log"
    ((SECONDS < deadline)) || die "the registry was not ready after ${READY_TIMEOUT}s: see $RUN_DIR/logs/registry/registry.log (and kafka-authorizer.log in $RUN_DIR/logs/kafka-*/ for denied requests)"
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
# `make up` as soon as its crate has a binary (src/main.rs). Its Kafka principal has the
# same name (PRINCIPALS, deploy/acls.toml).
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
  build_binaries
  local dir; dir="$(profile_dir)"
  for entry in "${entries[@]}"; do
    name="${entry%% *}"; url="${entry#* }"; bin="$dir/$name"
    if ! alive "$name"; then
      mkdir -p "$RUN_DIR/logs/$name"
      [[ -f "$SECRETS/$name.conf" ]] ||
        die "$SECRETS/$name.conf is missing: $name has no Kafka principal (platform.sh PRINCIPALS)"
      # Each service connects as its own principal (KAFKA_CLIENT_CONFIG=<name>.conf).
      # ORDERPIPELINE_RUN marks the process as ours. A service's local settings, if any,
      # come from deploy/local/services/<name>.toml. Logs are JSON lines, which vlagent
      # ships to VictoriaLogs (order_id, trace_id, topic, ... become searchable fields).
      local cfg=() upper; upper="$(tr '[:lower:]' '[:upper:]' <<<"$name")"
      [[ -f "$HERE/services/$name.toml" ]] && cfg=("${upper}_CONFIG=$HERE/services/$name.toml")
      launch "$name" "$RUN_DIR/logs/$name/$name.log" env ORDERPIPELINE_RUN="$RUN_DIR" "${cfg[@]}" \
        "${upper}__TELEMETRY__FORMAT=json" \
        KAFKA_CLIENT_CONFIG="$SECRETS/$name.conf" \
        KAFKA_BOOTSTRAP="$BOOTSTRAP" REGISTRY_URL="$REGISTRY_URL" "$bin"
    fi
  done
  # All started at once, then waited for: each one's start (the pipeline's replay, the
  # transactional producers' fencing) overlaps the others'.
  for entry in "${entries[@]}"; do
    name="${entry%% *}"; url="${entry#* }"
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
  choose_mode
  if [[ "$MODE" == plaintext ]]; then
    warn "SECURITY=plaintext: INSECURE cluster: no TLS, no authentication, no ACLs"
  else
    say "SECURITY=sasl_ssl: clients SCRAM-SHA-512 over TLS, nodes mutual TLS, ACLs from deploy/acls.toml"
  fi
  fetch
  build_binaries
  ensure_secrets
  [[ "${PLATFORM_ONLY:-0}" == 1 ]] || echo "$CARGO_PROFILE" >"$RUN_DIR/profile"
  format_nodes
  start_kafka
  say "applying deploy/topics.toml"
  busctl --bootstrap "$BOOTSTRAP" topics apply --file "$ROOT/deploy/topics.toml" ||
    die "applying deploy/topics.toml failed (see above)"
  apply_acls
  start_registry
  register_schemas
  obs_up
  [[ "${PLATFORM_ONLY:-0}" == 1 ]] || start_services
  say "up in $((SECONDS - t0)) s; logs in $RUN_DIR/logs"
  if [[ "$MODE" == sasl_ssl ]]; then
    echo "  Kafka              $BOOTSTRAP (SASL_SSL, SCRAM-SHA-512; CA $SECRETS/ca.crt)"
    echo "  admin config       $SECRETS/admin.conf (kcat -F, KAFKA_CLIENT_CONFIG)"
    echo "                     $SECRETS/admin.properties (Kafka tools: --command-config)"
  else
    echo "  Kafka              $BOOTSTRAP (PLAINTEXT: INSECURE, anyone on this host can do anything)"
    echo "  admin config       $SECRETS/admin.conf (KAFKA_CLIENT_CONFIG), $SECRETS/admin.properties"
  fi
  echo "  schema registry    $REGISTRY_URL/apis/ccompat/v7"
  if [[ "${PLATFORM_ONLY:-0}" != 1 ]]; then
    alive ingress && echo "  ingress            http://127.0.0.1:8080 (REST, /openapi.json)  127.0.0.1:50051 (gRPC)"
    alive payment && echo "  payment            http://127.0.0.1:8085 (/metrics, /readyz)"
    alive pipeline && echo "  pipeline views     http://127.0.0.1:8090/v1/inventory  127.0.0.1:50052 (gRPC)"
  fi
  obs_urls
  return 0
}

down() {
  local entry names=()
  for entry in "${SERVICES[@]}"; do names+=("${entry%% *}"); done
  stop "${names[@]}"
  obs_down
  stop registry
  stop kafka-1 kafka-2 kafka-3
  say "platform down (data kept in $RUN_DIR/data)"
}

status() {
  local name
  local names=(kafka-1 kafka-2 kafka-3 registry) entry
  for entry in "${SERVICES[@]}"; do names+=("${entry%% *}"); done
  names+=("${OBS_PARTS[@]}")
  for name in "${names[@]}"; do
    if alive "$name"; then
      printf '  %-16s running  pid %-7s rss %s MiB\n' "$name" "$(pid_of "$name")" \
        "$(( $(awk '/VmRSS/{print $2}' "/proc/$(pid_of "$name")/status" 2>/dev/null || echo 0) / 1024 ))"
    else
      printf '  %-16s stopped\n' "$name"
    fi
  done
  alive kafka-1 || alive kafka-2 || alive kafka-3 || return 0
  if [[ "$MODE" == sasl_ssl ]]; then
    echo "  security: sasl_ssl (admin config $SECRETS/admin.conf, $SECRETS/admin.properties)"
  else
    echo "  security: plaintext (INSECURE)"
  fi
  busctl --bootstrap "$BOOTSTRAP" status --registry "$REGISTRY_URL" || true
  echo "  controller quorum:"
  local quorum=(org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$BOOTSTRAP")
  [[ -f "$SECRETS/admin.properties" ]] && quorum+=(--command-config "$SECRETS/admin.properties")
  kafka_tool "${quorum[@]}" describe --status 2>/dev/null | sed 's/^/    /' ||
    echo "    (quorum not reachable)"
  if curl -fsS -o /dev/null "http://$REGISTRY_HOST:$REGISTRY_MGMT_PORT/health/ready" 2>/dev/null; then
    echo "  registry: ready ($REGISTRY_URL, compatibility $(curl -fsS "$REGISTRY_URL/apis/ccompat/v7/config" | sed 's/.*"compatibilityLevel":"\([A-Z_]*\)".*/\1/'))"
  else
    echo "  registry: NOT ready"
  fi
  obs_status
}

clean() {
  down
  rm -rf "$RUN_DIR/data" "$RUN_DIR/logs" "$RUN_DIR/conf" "$RUN_DIR/pids" "$SECRETS"
  obs_clean
  say "wiped $RUN_DIR (data, logs, secrets)"
}

acls() {
  alive kafka-1 || alive kafka-2 || alive kafka-3 || die "the cluster is not running: \`make up\` first"
  [[ -f "$SECRETS/admin.properties" ]] || die "$SECRETS/admin.properties is missing: \`make up\` writes it"
  apply_acls
}

case "${1:-}" in
  up) up ;;
  down) recorded_mode; down ;;
  status) recorded_mode; status ;;
  clean) clean ;;
  acls) recorded_mode; acls ;;
  fetch) fetch ;;
  busctl) shift; recorded_mode; busctl "$@" ;;
  build) build_binaries ;;
  *) echo "usage: $0 up|down|status|clean|acls|fetch|build|busctl ARGS..." >&2; exit 2 ;;
esac
