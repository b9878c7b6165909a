# shellcheck shell=bash
# Sourced by deploy/k8s/*.sh and deploy/strimzi/validate.sh: where the tools and schemas
# are. Sets root, schemas, k8s_bin; defines say, die, find_tool, kubeconform_check.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# The JSON schemas of Strimzi, KEDA and prometheus-operator kinds and the CRDs (data the
# CI machine lays beside the clone; a user's machine may not have it).
schemas="${K8S_SCHEMAS:-$root/../shared/k8s-schemas}"
# Where deploy/k8s/tools/build.sh puts kube-apiserver, kubectl and helm.
k8s_bin="${K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/orderpipeline/k8s-bin}"

say() { echo "[k8s] $*"; }
die() { echo "[k8s] $*" >&2; exit 1; }

# find_tool NAME: the path of NAME from the k8s bin folder, PATH or Go's bin folder;
# nothing when absent.
find_tool() {
  local name="$1" gobin
  if [[ -x "$k8s_bin/$name" ]]; then echo "$k8s_bin/$name"; return; fi
  if command -v "$name" >/dev/null; then command -v "$name"; return; fi
  gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
  if [[ -x "$gobin/$name" ]]; then echo "$gobin/$name"; fi
}

# kubeconform_check [FLAG...] FILE...: strict (unknown fields are errors), every kind must
# have a schema in $schemas (offline: core kinds have none there, so callers -skip them
# and check them with kubernetes-validate and the API server instead).
kubeconform_check() {
  local kubeconform
  kubeconform="$(find_tool kubeconform)"
  [[ -n "$kubeconform" ]] || die "kubeconform not found: go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0"
  "$kubeconform" -strict -summary -schema-location "$schemas/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json" "$@"
}
