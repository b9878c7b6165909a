#!/usr/bin/env bash
# Throughput and p99 of POST /v1/orders at acks=all under wrk, beside a bare produce round
# trip and eventbus's publish on the same cluster, in one run (benches/src/bin/ingress-bench).
# Needs the local cluster (`make up`) and wrk (`apt-get install -y wrk`). Runs the ingress
# binary on topics of its own (deleted afterwards); the real topics are never written.
#
#   benches/wrk/ingress-bench.sh [--connections 32] [--duration 10] [--threads 1]
#
# CARGO_PROFILE picks the build (default release, as `make bench`; `dev` for a quick look).
# Env: KAFKA_BOOTSTRAP, REGISTRY_URL, KAFKA_CLIENT_CONFIG (defaults: the local cluster,
# as the admin principal of .run/secrets/admin.conf when `make up` wrote it).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
profile="${CARGO_PROFILE:-release}"
cargo build --profile "$profile" -p ingress -p benches --bin ingress --bin ingress-bench
case "$profile" in dev) dir=debug ;; *) dir="$profile" ;; esac
exec "target/$dir/ingress-bench" "$@"
