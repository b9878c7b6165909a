#!/usr/bin/env bash
# Throughput and p99 of POST /v1/orders at acks=all under wrk, beside a bare produce round
# trip on the same cluster, in one run. Needs the local cluster (`make up`) and wrk
# (`apt-get install -y wrk`). Creates its own topics (deleted afterwards); the real
# topics are never written.
#
#   ingress/bench/run.sh [--connections 32] [--duration 10] [--threads 1]
#
# Env: KAFKA_BOOTSTRAP, REGISTRY_URL, KAFKA_CLIENT_CONFIG (defaults: the local cluster,
# as the admin principal of .run/secrets/admin.conf when `make up` wrote it).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
exec cargo bench -p ingress --bench orders -- "$@"
