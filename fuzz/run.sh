#!/usr/bin/env bash
# `make fuzz`: every cargo-fuzz target of fuzz/ for a bounded time, then a table of
# executions, corpus sizes and coverage. Fails on the first crash, with the input left in
# fuzz/artifacts/<target>/ (replay: cd fuzz && cargo +nightly fuzz run <target> <file>;
# turn it into a regression test in the crate that owns the code).
#
#   FUZZ_SECONDS   per target (default 45)
#   FUZZ_TARGETS   which (default: every target of fuzz/Cargo.toml)
#   FUZZ_TARGET_DIR  the nightly build (default ~/.cache/orderpipeline/fuzz-target)
#
# Nightly only here (cargo-fuzz needs it); the workspace builds on stable. The seed
# corpus is written by benches' `fuzz-seeds` (stable, the workspace's build), then grown
# by the fuzzers in fuzz/corpus/<target>/ (git-ignored, kept between local runs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-45}"
targets="${FUZZ_TARGETS:-event_decode rest_bodies headers grpc_messages}"
command -v cargo-fuzz >/dev/null || {
  echo "cargo-fuzz not found: cargo install cargo-fuzz --locked (and rustup toolchain install nightly)" >&2
  exit 1
}

cargo build --quiet -p benches --bin fuzz-seeds
"${CARGO_TARGET_DIR:-target}/debug/fuzz-seeds" fuzz/corpus >/dev/null

# The nightly build is kept outside the clone (FUZZ_TARGET_DIR), so a fresh clone on a
# machine that fuzzed before reuses it: cold, it is ~9 minutes of two cores.
target_dir="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orderpipeline/fuzz-target}"
cd fuzz
cargo +nightly fuzz build --target-dir "$target_dir"
mkdir -p logs
rows=()
for target in $targets; do
  log="logs/$target.log"
  echo "[fuzz] $target for ${seconds}s"
  # -rss_limit_mb: a record is at most a few MB; an input that makes a decoder hold
  # more than this is a finding (a service would do the same with one bad record).
  if ! cargo +nightly fuzz run --target-dir "$target_dir" "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
      >"$log" 2>&1; then
    echo "[fuzz] $target FAILED: see fuzz/$log and fuzz/artifacts/$target/" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 20 >&2
    exit 1
  fi
  runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')"
  cov="$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || echo '?')"
  files="$(find "corpus/$target" -type f | wc -l)"
  bytes="$(du -sb "corpus/$target" | cut -f1)"
  rows+=("$(printf '%-14s %12s %9s %8s %10s' "$target" "$runs" "$cov" "$files" "$bytes")")
done
printf '%-14s %12s %9s %8s %10s\n' target executions coverage corpus bytes
printf '%s\n' "${rows[@]}"
