#!/usr/bin/env bash
# Validates deploy/strimzi/ offline with kubeconform (v0.7.0) against the Strimzi 1.2 JSON
# schemas in ../shared/k8s-schemas (strict: unknown fields are errors; a kind without a
# schema is an error, not skipped): the base (kafka.yaml, the generated
# topics-and-users.json) and each environment as kustomize builds it (dev, staging,
# production). Then proves the check can fail: copies with a misspelled field, an
# unsupported authentication type and an unknown ACL operation must each be reported
# invalid. deploy/k8s/validate.sh (`make test-k8s`) runs it first.
#
# K8S_SCHEMAS overrides the schema folder. Without it (a user's machine has no ../shared)
# the script says so and exits 0: skipped, not passed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=deploy/k8s/lib.sh
source "$here/../k8s/lib.sh"
if [[ ! -d "$schemas/kafka.strimzi.io" ]]; then
  say "skipped: no Strimzi schemas at $schemas (CI lays ../shared beside the clone)"
  exit 0
fi
environments=(dev staging production)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# kubectl's built-in kustomize (the API server's kubectl, or any on PATH).
kubectl="$(find_tool kubectl)"
[[ -n "$kubectl" ]] || die "kubectl not found (deploy/k8s/tools/build.sh builds it)"
for env in "${environments[@]}"; do
  "$kubectl" kustomize "$here/$env" >"$tmp/strimzi-$env.yaml"
done

say "kubeconform: deploy/strimzi/base and ${environments[*]}"
kubeconform_check "$here/base/kafka.yaml" "$here/base/topics-and-users.json" "$tmp"/strimzi-*.yaml
for env in "${environments[@]}"; do
  nodes="$(sed -n '/^kind: KafkaNodePool/,/^---/s/^  replicas: //p' "$tmp/strimzi-$env.yaml")"
  say "  $env: $(grep -c '^kind:' "$tmp/strimzi-$env.yaml") resources, $nodes node(s)"
done

# Negative cases: each broken copy must fail, with the reason kubeconform gives.
expect_invalid() {
  local what="$1" file="$2" expr="$3" copy
  copy="$tmp/broken-$(basename "$file")"
  sed "$expr" "$file" >"$copy"
  if cmp -s "$file" "$copy"; then
    die "FAIL: negative case '$what' changed nothing in $file"
  fi
  if out="$(kubeconform_check "$copy" 2>&1)"; then
    echo "$out" >&2
    die "FAIL: kubeconform accepted $what"
  fi
  say "rejected as expected ($what): $(grep -m1 -o "at '.*" <<<"$out" | cut -c1-160)"
}
expect_invalid "misspelled field partitionz" "$here/base/topics-and-users.json" 's/"partitions"/"partitionz"/'
expect_invalid "authentication type scram-sha-256" "$here/base/kafka.yaml" 's/type: scram-sha-512/type: scram-sha-256/'
expect_invalid "ACL operation Describes" "$here/base/topics-and-users.json" '0,/"Describe"/s//"Describes"/'
expect_invalid "dev overlay: node pool replicas as a string" "$tmp/strimzi-dev.yaml" '0,/^  replicas: 1$/s//  replicas: "one"/'
say "deploy/strimzi valid (base and ${#environments[@]} environments); 4 broken copies rejected"
