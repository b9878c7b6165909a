#!/usr/bin/env bash
# Validates deploy/strimzi/ offline with kubeconform (v0.7.0) against the Strimzi 1.2 JSON
# schemas in ../shared/k8s-schemas (strict: unknown fields are errors; a kind without a
# schema is an error, not skipped). Then proves the check can fail: copies with a
# misspelled field, an unsupported authentication type and an unknown ACL operation must
# each be reported invalid. `make test-k8s` runs it (and `make test` runs that).
#
# K8S_SCHEMAS overrides the schema folder. Without it (a user's machine has no ../shared)
# the script says so and exits 0: skipped, not passed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
schemas="${K8S_SCHEMAS:-$root/../shared/k8s-schemas}"
if [[ ! -d "$schemas/kafka.strimzi.io" ]]; then
  echo "[k8s] skipped: no Strimzi schemas at $schemas (CI lays ../shared beside the clone)"
  exit 0
fi

kubeconform="$(command -v kubeconform || true)"
if [[ -z "$kubeconform" ]]; then
  gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
  [[ -x "$gobin/kubeconform" ]] && kubeconform="$gobin/kubeconform"
fi
if [[ -z "$kubeconform" ]]; then
  echo "[k8s] kubeconform not found: go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0" >&2
  exit 1
fi

location="$schemas/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"
check() { "$kubeconform" -strict -summary -schema-location "$location" "$@"; }

shopt -s nullglob
files=("$here"/*.yaml "$here"/*.json)
echo "[k8s] $kubeconform on ${files[*]#"$root"/}"
check "${files[@]}"

# Negative cases: each broken copy must fail, with the reason kubeconform gives.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
expect_invalid() {
  local what="$1" file="$2" expr="$3" copy
  copy="$tmp/$(basename "$file")"
  sed "$expr" "$file" >"$copy"
  if cmp -s "$file" "$copy"; then
    echo "[k8s] FAIL: negative case '$what' changed nothing in $file" >&2
    exit 1
  fi
  if out="$(check "$copy" 2>&1)"; then
    echo "[k8s] FAIL: kubeconform accepted $what" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "[k8s] rejected as expected ($what): $(grep -m1 -o "at '.*" <<<"$out" | cut -c1-160)"
}
expect_invalid "misspelled field partitionz" "$here/topics-and-users.json" 's/"partitions"/"partitionz"/'
expect_invalid "authentication type scram-sha-256" "$here/kafka.yaml" 's/type: scram-sha-512/type: scram-sha-256/'
expect_invalid "ACL operation Describes" "$here/topics-and-users.json" '0,/"Describe"/s//"Describes"/'
echo "[k8s] deploy/strimzi valid; 3 broken copies rejected"
