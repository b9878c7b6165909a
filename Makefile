# The order pipeline: one entry point for people and CI.
#
#   make up      the local platform: 3 Kafka nodes (KRaft), Apicurio Registry, topics,
#                ACLs, schemas, then the services (each logging to .run/logs/<name>/).
#                Secure by default (SASL_SSL + SCRAM, mutual TLS between nodes, ACLs);
#                SECURITY=plaintext make up for the INSECURE open cluster (after make clean)
#   make acls    apply deploy/acls.toml to the running cluster (make up does it too)
#   make schemas register all event schemas in the registry
#   make status  processes, brokers, controller quorum, under-replicated partitions, registry
#   make down    stops exactly what `make up` started; data is kept
#   make clean   down, then wipes data, logs and secrets
#   make test    unit + integration tests against the real local platform (started if needed)
#   make lint    cargo fmt --check and clippy -D warnings
#   make demo    a realistic stream of orders against `make up`, the inventory view live
#   make bench   pipeline vs Kafka's floor (BENCH_MODE=full|short, BENCH_OUT=dir; benches/README.md)
#   make bench-recovery  the pipeline's recovery after kill -9 at 100k, 1M and 5M events of
#                history, with and without snapshots, and its RSS (RECOVERY_MODE=full|short,
#                RECOVERY_ARGS=..., RECOVERY_OUT=dir; benches/README.md)
#   make test-monitoring      promtool: the generated Prometheus config and the alert rules'
#                unit tests, the dashboards generate (offline; `make test` runs it first)
#   make test-k8s  deploy/strimzi (each environment), the Helm chart, the Dockerfile and
#                .gitlab-ci.yml through kubeconform, helm lint, kubernetes-validate, hadolint,
#                check-jsonschema and a local kube-apiserver's dry runs, each with broken
#                copies that must fail (deploy/k8s/validate.sh; `make test` runs it last)
#   make check-observability  needs `make up` and traffic (`make demo`): every panel and alert
#                names metrics the live Prometheus has, one order's log lines are found in
#                VictoriaLogs, the dashboard page renders in headless Chromium
#   make logs ORDER=<order id> (or TRACE=<trace id>)  that order's log lines, all services
#   make fuzz    cargo-fuzz (nightly) on the decoders and request parsers, FUZZ_SECONDS each
#                (default 45); fuzz/README.md
#   make fuzz-api  schemathesis (every check and phase) against ingress's and the views
#                API's OpenAPI documents, on services it starts (needs the cluster up)
#   make chaos   faults under load on a second cluster of its own (root: brokers in
#                network namespaces, 10.213.0.2-4; target/chaos/run), then the
#                exactly-once checks (CHAOS=quick|full|ci; CHAOS_FAULTS="broker-kill
#                broker-stop controller-kill two-brokers payment-kill ingress-kill
#                registry-stop partition pipeline-proc-kill"; deploy/chaos/run.sh)
#   make soak    the services under a fixed load for DURATION (default 10m) at RATE orders/s
#                (default 20) on a stack of their own on the running cluster; RSS, fds,
#                threads, lag and client p99 per interval, fails on growth (target/soak/;
#                deploy/soak/README.md)
#
# `make up` also starts the monitoring stack (deploy/local/observability.sh): Prometheus
# :9090, dashboards (VictoriaMetrics) :8428/vmui, logs (VictoriaLogs) :9428/select/vmui.
#
# Runtime files (config, data, logs, pids, secrets) live in .run/ ; jar caches in
# deploy/local/.cache. Credentials: .run/secrets/<principal>.conf (librdkafka: kcat -F and
# every Rust process via KAFKA_CLIENT_CONFIG) and .run/secrets/<principal>.properties (Java
# tools); principals admin, ingress, payment, pipeline, registry.

SHELL := /bin/bash
PLATFORM := deploy/local/platform.sh
export KAFKA_BOOTSTRAP ?= 127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092
export REGISTRY_URL ?= http://127.0.0.1:8081

# Tests, benchmarks and the demo connect as the super user admin (they create and delete
# their own topics, groups and transactional ids).
ADMIN_CLIENT_CONFIG := $(CURDIR)/.run/secrets/admin.conf
test bench bench-recovery demo: export KAFKA_CLIENT_CONFIG ?= $(ADMIN_CLIENT_CONFIG)

# One build profile for `make up`, `make demo`, `make test` and the operator tool: the dev
# profile, so a newcomer's first `make up` compiles in minutes and the tests reuse it (the
# services keep up with the demo's load in it). `make bench` always builds release;
# PROFILE=release make up runs the services fully optimised, and `make demo` then uses the
# profile `make up` recorded in .run/profile.
PROFILE ?= $(or $(shell cat .run/profile 2>/dev/null),dev)
export CARGO_PROFILE ?= $(PROFILE)
PROFILE_DIR := $(if $(filter dev,$(CARGO_PROFILE)),debug,$(CARGO_PROFILE))

.PHONY: up down status clean acls test test-unit lint fmt schemas bench bench-recovery demo \
	test-monitoring test-k8s check-observability logs fuzz fuzz-api chaos soak test-soak

up:
	@$(PLATFORM) up

down:
	@$(PLATFORM) down

status:
	@$(PLATFORM) status

clean:
	@$(PLATFORM) clean

# Makes the cluster's ACLs exactly deploy/acls.toml (prints each change; nothing if none).
acls:
	@$(PLATFORM) acls

# Registers every version of every event schema under `<topic>-value` (idempotent;
# `make up` does it too). Services refuse to start while their schemas are missing.
schemas:
	@$(PLATFORM) busctl schemas register

# Tests share one dev build with the operator tool; the platform is started if it is not
# running and left running afterwards (CI stops it with `make down`).
# test-k8s runs last: CI builds its tools in the background meanwhile.
test: test-monitoring test-soak
	@PLATFORM_ONLY=1 $(PLATFORM) up
	cargo test --workspace --no-fail-fast
	@$(MAKE) --no-print-directory test-k8s

test-unit:
	cargo test --workspace --lib

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench: export CARGO_PROFILE = release
bench:
	@PLATFORM_ONLY=1 $(PLATFORM) up
	cargo build --release -p ingress -p payment -p pipeline -p benches
	$${CARGO_TARGET_DIR:-target}/release/pipeline-bench --mode $(or $(BENCH_MODE),full) --out $(or $(BENCH_OUT),target/bench)

# Release build of the job and the benchmark; the cluster and registry (`make up`'s
# platform part) must run. Writes recovery.md and recovery.json into RECOVERY_OUT.
bench-recovery: export CARGO_PROFILE = release
bench-recovery:
	@PLATFORM_ONLY=1 $(PLATFORM) up
	cargo build --release -p pipeline -p benches --bin pipeline --bin recovery-bench
	$${CARGO_TARGET_DIR:-target}/release/recovery-bench --mode $(or $(RECOVERY_MODE),full) \
		--out $(or $(RECOVERY_OUT),target/bench-recovery) $(RECOVERY_ARGS)

# Needs `make up`. Sends orders over REST and gRPC (some declined, changed, cancelled)
# and restocks, and redraws the pipeline's inventory view in place.
demo:
	@$(PLATFORM) build
	@$${CARGO_TARGET_DIR:-target}/$(PROFILE_DIR)/demo $(DEMO_ARGS)

# ---------------------------------------------------------------- monitoring
# deploy/monitoring/ holds each definition once (alerts.yaml as a PrometheusRule, Grafana
# dashboards); generate.py derives what the local tools read. Offline checks: promtool on
# the generated config and rules, the rules' unit tests (tests/alerts.test.yaml), and
# the scripts' own unit tests (tests/test_scripts.py).
MONITORING_OUT := $(or $(CARGO_TARGET_DIR),target)/monitoring
test-monitoring:
	@command -v promtool >/dev/null || { echo "promtool not found: apt-get install -y --no-install-recommends prometheus" >&2; exit 1; }
	@rm -rf $(MONITORING_OUT) && mkdir -p $(MONITORING_OUT)/run/prometheus/targets
	@python3 deploy/monitoring/generate.py prometheus --run $(MONITORING_OUT)/run --out $(MONITORING_OUT)/run/prometheus
	@python3 deploy/monitoring/generate.py vmui --out $(MONITORING_OUT)/vmui
	promtool check config $(MONITORING_OUT)/run/prometheus/prometheus.yml
	@cp $(MONITORING_OUT)/run/prometheus/rules.yml $(MONITORING_OUT)/alerts.rules.yml
	@cp deploy/monitoring/tests/alerts.test.yaml $(MONITORING_OUT)/
	promtool test rules $(MONITORING_OUT)/alerts.test.yaml
	python3 -m unittest discover -v -s deploy/monitoring/tests -p 'test_*.py'

# ---------------------------------------------------------------- kubernetes
# deploy/strimzi, deploy/helm, deploy/images and .gitlab-ci.yml (deploy/k8s/validate.sh
# says what runs; deploy/k8s/README.md is the operator guide). Needs the tools of
# deploy/k8s/tools/build.sh (without the API server binaries it skips the server dry runs
# and says so; REQUIRE_K8S_APISERVER=1 makes that a failure) and ../shared/k8s-schemas
# (skipped with the reason when absent).
test-k8s:
	deploy/k8s/validate.sh

# The live checks (deploy/monitoring/check.py): run after `make up` and some traffic.
check-observability:
	python3 deploy/monitoring/check.py all

logs:
	@python3 deploy/monitoring/check.py order-logs $(if $(ORDER),--order '$(ORDER)') $(if $(TRACE),--trace '$(TRACE)')

# ---------------------------------------------------------------- fuzzing
# fuzz/ is its own crate (nightly, outside the workspace); fuzz/run.sh writes the seed
# corpus with benches' fuzz-seeds, builds the targets and runs each for FUZZ_SECONDS.
fuzz:
	@fuzz/run.sh

# schemathesis 4 (pinned, in a venv under ~/.cache) against both OpenAPI documents, on
# services started with a unique topic prefix on the running cluster (stack-serve).
fuzz-api: export KAFKA_CLIENT_CONFIG ?= $(ADMIN_CLIENT_CONFIG)
fuzz-api:
	@fuzz/api/run.sh

# A cluster of its own (never the shared one); per fault a stack on it, loadgen (retrying
# 503s with the same key), the fault, the heal, benches' chaos-check (0 lost, 0 doubled,
# views = reference); the table in target/chaos/report/table.md. CHAOS_KEEP=1 leaves the
# chaos cluster up for the next run.
chaos:
	@deploy/chaos/run.sh

# ---------------------------------------------------------------- soak
# deploy/soak/soak.py: a stack of its own (benches' stack-serve: unique topic prefix, free
# ports, deleted afterwards) on the running cluster, loadgen at RATE orders/s for DURATION
# in SOAK_INTERVAL runs (each its own p99), every process sampled every SOAK_SAMPLE; exits
# non-zero on growth of RSS/fds/threads, unbounded lag or p99, failed requests. Writes
# soak.md, soak.json, samples.csv and intervals.csv to SOAK_OUT (target/soak).
soak: export KAFKA_CLIENT_CONFIG ?= $(ADMIN_CLIENT_CONFIG)
soak:
	@PLATFORM_ONLY=1 $(PLATFORM) up
	cargo build -p ingress -p payment -p pipeline -p benches --bin ingress --bin payment \
		--bin pipeline --bin stack-serve --bin loadgen
	python3 deploy/soak/soak.py --duration $(or $(DURATION),10m) --rate $(or $(RATE),20)

# The soak verdict's own tests (synthetic steady and leaking series; offline).
test-soak:
	python3 -m unittest discover -v -s deploy/soak/tests -p 'test_*.py'
