#!/usr/bin/env bash
# `make fuzz-api`: schemathesis (every check, every phase, a bounded example count)
# against the OpenAPI documents of ingress and of the pipeline's views API, served by real
# processes: `stack-serve` (benches) starts payment, the pipeline and ingress on free
# ports with a unique topic prefix on the running cluster (KAFKA_CLIENT_CONFIG), and
# deletes its topics and subjects afterwards.
#
#   FUZZ_API_EXAMPLES  examples per operation and phase (default 50)
#   FUZZ_API_SEED      hypothesis seed (default: random, printed)
#   FUZZ_API_OUT       reports (JUnit) folder (default target/fuzz-api)
#
# schemathesis is pinned here and installed once into a virtualenv under ~/.cache (the
# machine's Python; nothing is installed system-wide).
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS_VERSION=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/orderpipeline/schemathesis-$SCHEMATHESIS_VERSION"
if [[ ! -x "$venv/bin/schemathesis" ]]; then
  echo "[fuzz-api] installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
st="$venv/bin/schemathesis"

examples="${FUZZ_API_EXAMPLES:-50}"
seed="${FUZZ_API_SEED:-$RANDOM$RANDOM}"
out="${FUZZ_API_OUT:-${CARGO_TARGET_DIR:-target}/fuzz-api}"
mkdir -p "$out"
export KAFKA_CLIENT_CONFIG="${KAFKA_CLIENT_CONFIG:-$PWD/.run/secrets/admin.conf}"

# Naming the binaries: `-p X --bin Y` alone would build only Y.
cargo build --quiet -p ingress -p payment -p pipeline -p benches \
  --bin ingress --bin payment --bin pipeline --bin stack-serve
bin="${CARGO_TARGET_DIR:-target}/debug"

# The stack serves until its standard input closes.
coproc STACK { "$bin/stack-serve" 2>"$out/stack-serve.log"; }
stack_in="${STACK[1]}"
stop() {
  exec {stack_in}>&- 2>/dev/null || true
  wait "$STACK_PID" 2>/dev/null || true
}
trap stop EXIT
if ! read -r -t 180 -u "${STACK[0]}" endpoints; then
  echo "[fuzz-api] the stack did not start; see $out/stack-serve.log" >&2
  tail -n 20 "$out/stack-serve.log" >&2
  exit 1
fi
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$endpoints" "$1"; }
echo "[fuzz-api] stack $(field prefix): ingress $(field ingress_rest), views $(field views_rest); seed $seed, $examples examples"

status=0
for api in ingress_rest views_rest; do
  base="$(field "$api")"
  name="${api%_rest}"
  # The views' /v1/stream is an endless event stream: schemathesis would wait on it
  # forever (its 400 for a bad query is a unit test of the pipeline).
  exclude=()
  [[ $name == views ]] && exclude=(--exclude-path /v1/stream)
  echo "[fuzz-api] schemathesis against $name ($base/openapi.json)"
  # From the report folder: schemathesis keeps a cache (.schemathesis/) in its working
  # directory.
  if ! (cd "$out" && "$st" --config-file "$OLDPWD/fuzz/api/schemathesis.toml" run "$base/openapi.json" \
      --checks all --phases examples,coverage,fuzzing,stateful "${exclude[@]}" \
      --max-examples "$examples" --seed "$seed" --workers 2 \
      --generation-database none --no-color \
      --report junit --report-junit-path "$name.junit.xml" \
      >"$name.txt" 2>&1); then
    status=1
    echo "[fuzz-api] $name: FAILED (full output: $out/$name.txt)" >&2
    sed -n '/^=* *FAILURES/,$p' "$out/$name.txt" | head -n 120 >&2
  fi
  # The summary: phases, failures, how many cases.
  sed -n '/^=* *SUMMARY/,$p' "$out/$name.txt" | grep -E 'generated|failures|passed|Failures|ST[0-9]|❌|✅' || true
done
exit "$status"
