#!/usr/bin/env bash
# A real Kubernetes API server on loopback, for validating manifests the way a cluster's
# admission does (`kubectl apply --dry-run=server`, `helm install --dry-run=server`):
# Debian's etcd-server plus kube-apiserver v1.34.4 (deploy/k8s/tools/build.sh). There are
# no nodes and no controllers: nothing ever runs, objects are only admitted or refused.
#
#   deploy/k8s/apiserver.sh start   start etcd and the API server (idempotent), install the
#                                   CRDs the project's resources need; prints the kubeconfig
#   deploy/k8s/apiserver.sh stop    stop both and delete the run folder (keys, token, data)
#   deploy/k8s/apiserver.sh status  says whether it answers
#
# CRDs installed: Strimzi 1.2 and Apicurio Registry 3 (../shared/k8s-schemas/crds), and
# prometheus-operator v0.85.0 (ServiceMonitor, PodMonitor, PrometheusRule) and KEDA
# v2.21.0 (ScaledObject, TriggerAuthentication) from their Go modules' CRD files (`go mod download`: the module
# cache, no other download).
#
# Everything lives in K8S_RUN (default .run/k8s-apiserver): a fresh service-account key,
# serving certificate and admin token per start, files 0600, never committed (.run/ is
# ignored). Ports are free ones picked at start (no fixed ports). etcd's data is deleted
# by `stop`: only CRDs and namespaces are ever stored.
set -euo pipefail
# shellcheck source=deploy/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

run="${K8S_RUN:-$root/.run/k8s-apiserver}"
kubeconfig="$run/kubeconfig"
prom_operator_version=v0.85.0
keda_version=v2.21.0

kubectl_() { "$k8s_bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
alive() { [[ -f "$run/$1.pid" ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }
answers() { [[ -f "$kubeconfig" ]] && kubectl_ get --raw /readyz >/dev/null 2>&1; }

# A port nothing listens on now (the kernel's pick for port 0).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The CRD folder of a Go module's source, downloaded into the module cache if missing.
module_dir() {
  (cd / && GOFLAGS='' go mod download -json "$1") |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

stop_one() {
  local name="$1" pid
  alive "$name" || return 0
  pid="$(cat "$run/$name.pid")"
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

start() {
  if answers; then
    echo "$kubeconfig"
    return
  fi
  [[ -x "$k8s_bin/kube-apiserver" && -x "$k8s_bin/kubectl" ]] ||
    die "no kube-apiserver/kubectl in $k8s_bin: run deploy/k8s/tools/build.sh (~14 min cold, seconds warm)"
  command -v etcd >/dev/null ||
    die "etcd not found: apt-get install -y etcd-server (.ci/run does this)"
  stop_one kube-apiserver
  stop_one etcd
  rm -rf "$run"
  (umask 077 && mkdir -p "$run/certs" "$run/logs")

  local etcd_port peer_port api_port token
  etcd_port="$(free_port)"
  peer_port="$(free_port)"
  api_port="$(free_port)"
  etcd --name k8s-check --data-dir "$run/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "k8s-check=http://127.0.0.1:$peer_port" \
    >"$run/logs/etcd.log" 2>&1 &
  echo $! >"$run/etcd.pid"

  (
    umask 077
    openssl genrsa -out "$run/sa.key" 2048 2>/dev/null
    openssl rsa -in "$run/sa.key" -pubout -out "$run/sa.pub" 2>/dev/null
    token="$(openssl rand -hex 32)"
    echo "$token,admin,admin,system:masters" >"$run/tokens.csv"
    cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: check
    cluster:
      server: https://127.0.0.1:$api_port
      certificate-authority: $run/certs/apiserver.crt
users:
  - name: admin
    user:
      token: $token
contexts:
  - name: check
    context: {cluster: check, user: admin}
current-context: check
EOF
  )

  # The serving certificate is self-signed into --cert-dir (the kubeconfig trusts exactly
  # it). ServiceAccount admission is off: there is no controller to make the token secrets.
  "$k8s_bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$run/certs" \
    --token-auth-file="$run/tokens.csv" --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$run/sa.pub" \
    --service-account-signing-key-file="$run/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --disable-admission-plugins=ServiceAccount --watch-cache=false \
    >"$run/logs/kube-apiserver.log" 2>&1 &
  echo $! >"$run/kube-apiserver.pid"

  local deadline=$((SECONDS + 120))
  until answers; do
    alive etcd || die "etcd exited: $(tail -n 5 "$run/logs/etcd.log")"
    alive kube-apiserver || die "kube-apiserver exited: $(tail -n 5 "$run/logs/kube-apiserver.log")"
    ((SECONDS < deadline)) || die "the API server did not answer /readyz within 120 s ($run/logs)"
    sleep 0.5
  done
  chmod 600 "$run"/certs/* "$kubeconfig"

  # Server-side apply: the Kafka CRD (330 KB) is over client-side apply's annotation limit.
  local prom keda
  prom="$(module_dir "github.com/prometheus-operator/prometheus-operator@$prom_operator_version")/example/prometheus-operator-crd"
  keda="$(module_dir "github.com/kedacore/keda/v2@$keda_version")/config/crd/bases"
  kubectl_ apply --server-side -f "$schemas/crds/" \
    -f "$prom/monitoring.coreos.com_servicemonitors.yaml" \
    -f "$prom/monitoring.coreos.com_podmonitors.yaml" \
    -f "$prom/monitoring.coreos.com_prometheusrules.yaml" \
    -f "$keda/keda.sh_scaledobjects.yaml" -f "$keda/keda.sh_triggerauthentications.yaml" \
    >"$run/logs/crds.log"
  kubectl_ wait --for condition=established --timeout=60s crd --all >>"$run/logs/crds.log"
  kubectl_ create namespace order-pipeline >>"$run/logs/crds.log"
  say "API server $(kubectl_ version -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') on 127.0.0.1:$api_port, $(kubectl_ get crd --no-headers | wc -l) CRDs" >&2
  echo "$kubeconfig"
}

case "${1:-}" in
  start) start ;;
  stop)
    stop_one kube-apiserver
    stop_one etcd
    rm -rf "$run"
    ;;
  status)
    if answers; then say "answering ($kubeconfig)"; else say "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
