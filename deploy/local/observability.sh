# shellcheck shell=bash
# The local observability stack, sourced by deploy/local/platform.sh (which defines say,
# warn, die, launch, alive, stop, pid_of, RUN_DIR, CACHE, ROOT, HERE). Separate from
# platform.sh because it is a second job (watching the platform, not running it):
#
#   the brokers' metrics   the Prometheus JMX exporter agent in every Kafka node's JVM
#                          (jmx_agent N: the -javaagent flag; rules in
#                          deploy/monitoring/jmx/kafka-broker.yaml), on 127.0.0.1:N9404
#   Prometheus             127.0.0.1:9090 (Debian's prometheus 2.42 + promtool), scraping the
#                          agents, the registry, the services and file_sd targets; alert
#                          rules from deploy/monitoring/alerts.yaml; remote_write to
#   VictoriaMetrics        127.0.0.1:8428, the dashboards (vmui), generated from the Grafana
#                          JSON in deploy/monitoring/dashboards/
#   VictoriaLogs + vlagent 127.0.0.1:9428; vlagent ships every .run/logs/<part>/*.log
#
# Why VictoriaMetrics is fed by Prometheus' remote_write instead of scraping the targets a
# second time: one scraper means the dashboards show exactly the samples the alerts were
# evaluated on, each JMX agent (which walks MBeans per scrape) is scraped once, and a target
# added under .run/prometheus/targets/ shows up in both. Grafana itself cannot be installed
# here (docs: README.md, Monitoring), so vmui renders the same panels.
#
# Everything runtime lives in $RUN_DIR: prometheus/ (config, rules, targets/, data/),
# victoriametrics/ (data/, dashboards/), victorialogs/, vlagent/; process logs in
# $RUN_DIR/logs/<name>/<name>.log like every other part. The Go tools are built once into
# Go's bin folder (~/go/bin); OBSERVABILITY=0 skips the stack (the JMX agents stay
# attached: they cost nothing until scraped).

MONITORING="$ROOT/deploy/monitoring"
# Go's own default GOBIN: outside the clone, so a fresh clone on a warm machine (CI) reuses
# the binaries; go version -m tells their versions apart.
OBS_BIN="${OBS_BIN:-$(go env GOBIN 2>/dev/null || true)}"
OBS_BIN="${OBS_BIN:-${GOPATH:-$HOME/go}/bin}"
JMX_VERSION="$(sed -n 's:.*<jmx.exporter.version>\(.*\)</jmx.exporter.version>.*:\1:p' "$HERE/pom.xml")"
JMX_JAR="$CACHE/jmx/jmx_prometheus_javaagent-$JMX_VERSION.jar"
VM_VERSION=v1.151.0
VL_VERSION=v1.52.2
PROM_URL="http://127.0.0.1:9090"
VM_URL="http://127.0.0.1:8428"
VL_URL="http://127.0.0.1:9428"
VLAGENT_PORT=9429
# Start order; stopped in reverse.
OBS_PARTS=(victoria-logs vlagent victoria-metrics prometheus)
DASHBOARD_URL="$VM_URL/vmui/#/dashboards"
LOGS_UI_URL="$VL_URL/select/vmui/"

obs_enabled() { [[ "${OBSERVABILITY:-1}" != 0 ]]; }

# jmx_fetch: the JMX exporter agent jar, once (the version is pinned in pom.xml).
jmx_fetch() {
  [[ -f "$JMX_JAR" ]] && return 0
  say "fetching the Prometheus JMX exporter agent $JMX_VERSION (first run only)"
  mvn -B -f "$HERE/pom.xml" dependency:copy \
    -Dartifact="io.prometheus.jmx:jmx_prometheus_javaagent:$JMX_VERSION" \
    -DoutputDirectory="$CACHE/jmx" | grep -E 'Download(ed|ing) from|BUILD|ERROR' || true
  [[ -f "$JMX_JAR" ]] || die "the JMX exporter agent was not fetched (see the Maven output above)"
}

# jmx_agent N: the -javaagent flag of node N (metrics on 127.0.0.1:N9404, loopback only).
jmx_agent() {
  echo "-javaagent:$JMX_JAR=127.0.0.1:${1}9404:$MONITORING/jmx/kafka-broker.yaml"
}

# go_tool NAME PACKAGE VERSION: builds NAME into $OBS_BIN with `go install` unless the
# binary there was built from that module version (`go version -m` says which). A minute
# or two on 2 cores the first time; Go's build cache makes a rebuild take seconds.
go_tool() {
  local name="$1" pkg="$2" version="$3"
  if [[ -x "$OBS_BIN/$name" ]]; then
    # Without Go the version cannot be read: take the binary as it is.
    command -v go >/dev/null || return 0
    go version -m "$OBS_BIN/$name" 2>/dev/null |
      grep -qE "^[[:space:]]+mod[[:space:]].*[[:space:]]$version([[:space:]]|\$)" && return 0
  fi
  command -v go >/dev/null ||
    die "$name is missing and Go is not installed: install Go 1.24+ (https://go.dev/dl/), then \`make up\` builds it (GOBIN=$OBS_BIN go install $pkg@$version)"
  say "building $name $version with go install into $OBS_BIN (first run only, 1-2 minutes; progress below)"
  mkdir -p "$OBS_BIN"
  GOBIN="$OBS_BIN" go install -v "$pkg@$version" 2>&1 | grep -E '^go: downloading github.com/VictoriaMetrics|/app/' || true
  [[ -x "$OBS_BIN/$name" ]] || die "go install $pkg@$version failed (run it by hand to see why)"
}

# obs_install: what the stack needs, installed or named.
obs_install() {
  local missing=()
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v promtool >/dev/null || missing+=(promtool)
  command -v python3 >/dev/null || missing+=(python3)
  if ((${#missing[@]})); then
    die "${missing[*]} not found: run \`apt-get install -y --no-install-recommends prometheus python3\` (or OBSERVABILITY=0 make up to start without the monitoring stack)"
  fi
  go_tool victoria-metrics github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics "$VM_VERSION"
  go_tool victoria-logs github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs "$VL_VERSION"
  go_tool vlagent github.com/VictoriaMetrics/VictoriaLogs/app/vlagent "$VL_VERSION"
}

# obs_render: the generated config: Prometheus' config and rules, vmui's dashboards.
# Regenerated on every `up` (cheap), checked by promtool before anything starts.
obs_render() {
  local prom="$RUN_DIR/prometheus"
  mkdir -p "$prom/targets" "$prom/data" "$RUN_DIR/victoriametrics/dashboards"
  python3 "$MONITORING/generate.py" prometheus --run "$RUN_DIR" --out "$prom" ||
    die "generating the Prometheus config from deploy/monitoring/ failed (see above)"
  python3 "$MONITORING/generate.py" vmui --out "$RUN_DIR/victoriametrics/dashboards" ||
    die "generating the vmui dashboards from deploy/monitoring/dashboards/ failed (see above)"
  promtool check config --syntax-only "$prom/prometheus.yml" >/dev/null 2>&1 ||
    die "$prom/prometheus.yml is not valid: $(promtool check config "$prom/prometheus.yml" 2>&1 | tail -n 3)"
}

# obs_wait NAME URL: polls URL until it answers (timeout READY_TIMEOUT).
obs_wait() {
  local name="$1" url="$2" deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    alive "$name" || die "$name exited: see $RUN_DIR/logs/$name/$name.log"
    ((SECONDS < deadline)) || die "$name was not ready after ${READY_TIMEOUT}s: see $RUN_DIR/logs/$name/$name.log"
    sleep 0.3
  done
}

# obs_start NAME CMD...: launches NAME unless it runs; logs to .run/logs/NAME/NAME.log.
obs_start() {
  local name="$1"; shift
  alive "$name" && return 0
  mkdir -p "$RUN_DIR/logs/$name"
  launch "$name" "$RUN_DIR/logs/$name/$name.log" "$@"
}

obs_up() {
  obs_enabled || { warn "OBSERVABILITY=0: no Prometheus, dashboards or log store"; return 0; }
  obs_install
  obs_render
  say "starting the observability stack (Prometheus, VictoriaMetrics, VictoriaLogs + vlagent)"
  obs_start victoria-logs "$OBS_BIN/victoria-logs" -httpListenAddr="127.0.0.1:${VL_URL##*:}" \
    -storageDataPath="$RUN_DIR/victorialogs" -retentionPeriod=7d -loggerLevel=WARN
  obs_wait victoria-logs "$VL_URL/health"
  # Every part's log: services write JSON lines (time, level, message, service, order_id,
  # trace_id, ...), the Kafka nodes too (deploy/local/log4j2.properties); the registry's
  # text lines keep the read time and their `file`. Rolled files (*.log.1) are not re-read.
  mkdir -p "$RUN_DIR/vlagent"
  obs_start vlagent "$OBS_BIN/vlagent" -httpListenAddr="127.0.0.1:$VLAGENT_PORT" \
    -tmpDataPath="$RUN_DIR/vlagent" -remoteWrite.url="$VL_URL/internal/insert" \
    -fileCollector.glob="$RUN_DIR/logs/*/*.log" \
    -fileCollector.excludeGlob="$RUN_DIR/logs/vlagent/*.log" \
    -fileCollector.refreshInterval=1s -fileCollector.streamFields=service,file \
    -loggerLevel=WARN
  obs_wait vlagent "http://127.0.0.1:$VLAGENT_PORT/health"
  # Instant queries normally hide the newest 30 s (samples still arriving); remote_write
  # delivers within a second or two here, so 5 s keeps the panels close to live.
  obs_start victoria-metrics "$OBS_BIN/victoria-metrics" -httpListenAddr="127.0.0.1:${VM_URL##*:}" \
    -storageDataPath="$RUN_DIR/victoriametrics/data" -retentionPeriod=7d \
    -vmui.customDashboardsPath="$RUN_DIR/victoriametrics/dashboards" \
    -search.latencyOffset=5s -loggerLevel=WARN
  obs_wait victoria-metrics "$VM_URL/health"
  obs_start prometheus prometheus --config.file="$RUN_DIR/prometheus/prometheus.yml" \
    --storage.tsdb.path="$RUN_DIR/prometheus/data" --storage.tsdb.retention.time=7d \
    --web.listen-address="127.0.0.1:${PROM_URL##*:}" --web.enable-lifecycle --log.level=warn
  obs_wait prometheus "$PROM_URL/-/ready"
  # A running Prometheus keeps its old config: reload the one just generated.
  curl -fsS -X POST "$PROM_URL/-/reload" >/dev/null || warn "Prometheus did not reload its config"
}

obs_down() {
  local parts=() i
  for ((i = ${#OBS_PARTS[@]} - 1; i >= 0; i--)); do parts+=("${OBS_PARTS[i]}"); done
  stop "${parts[@]}"
}

# obs_urls: printed at the end of `up`.
obs_urls() {
  obs_enabled || return 0
  echo "  dashboards         $DASHBOARD_URL (VictoriaMetrics vmui)"
  echo "  Prometheus         $PROM_URL (alerts: $PROM_URL/alerts, targets: $PROM_URL/targets)"
  echo "  logs               $LOGS_UI_URL (VictoriaLogs; one order: make logs ORDER=<id>)"
  echo "  broker metrics     http://127.0.0.1:19404/metrics, :29404, :39404 (JMX agents)"
}

# obs_status: what Prometheus sees (the processes are listed by platform.sh status).
obs_status() {
  alive prometheus || return 0
  echo "  scrape targets (up/all by job) and firing alerts:"
  python3 "$MONITORING/check.py" status --prometheus "$PROM_URL" 2>&1 | sed 's/^/    /' || true
}

# obs_clean: the stored metrics and logs, with vlagent's read positions (`make clean`;
# the Go tools stay).
obs_clean() {
  rm -rf "$RUN_DIR/prometheus" "$RUN_DIR/victoriametrics" "$RUN_DIR/victorialogs" "$RUN_DIR/vlagent"
}
