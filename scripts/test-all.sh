#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test of every crate,
# including the tests on real PostgreSQL, Valkey and a Kafka-protocol broker
# (each test starts private instances on free loopback ports), the doc
# tests (the README's embedding example among them), the examples, and
# packaging of the three library crates. Works from a fresh clone: missing
# service binaries are installed first. Prints each stage's time.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test-all: cargo is missing: install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi

suite_start=$SECONDS
stage() {
    local name="$1"
    shift
    echo "== $name"
    local start=$SECONDS
    "$@"
    echo "== $name: $((SECONDS - start)) s"
}

# The embedded binary compiles no broker, database or cache client and no
# service binary package (cargo features; issue 11).
embedded_deps() {
    local tree
    tree=$(cargo tree --locked -p osago -e normal --prefix none)
    for crate in osago-aggregator rdkafka sqlx redis deadpool-redis opentelemetry; do
        if grep -q "^$crate v" <<<"$tree"; then
            echo "test-all: osago depends on $crate" >&2
            return 1
        fi
    done
}

stage "service packages (PostgreSQL, Redis/Valkey, stunnel, Chromium, deploy checks)" \
    ./scripts/install-test-services.sh --packages

# tansu and cargo-deny are pinned tools built once from crates.io into a
# cache outside the clone: ~25 min of a fresh 2-core machine, nothing once
# cached. That build runs in the background at low priority while the
# stages up to the workspace build run, so it takes the CPU they leave idle
# (downloads, build scripts, links); the stage before cargo deny waits for
# it.
tools_log=$(mktemp "${TMPDIR:-/tmp}/osago-tools.XXXXXX")
tools_start=$SECONDS
# setsid: its own process group, so a failed stage stops the whole build.
setsid nice -n 10 ./scripts/install-test-services.sh --tools >"$tools_log" 2>&1 &
tools_pid=$!
stop_tools() { kill -TERM -- "-$tools_pid" 2>/dev/null || true; }
trap stop_tools EXIT
wait_tools() {
    if ! wait "$tools_pid"; then
        cat "$tools_log" >&2
        echo "test-all: building tansu or cargo-deny failed (its output above)" >&2
        return 1
    fi
    trap - EXIT
    grep '^install-test-services:' "$tools_log" || true
    rm -f "$tools_log"
    echo "test-all: tansu and cargo-deny ready $((SECONDS - tools_start)) s after their build started"
}
stage "cargo fmt --check" cargo fmt --all -- --check
stage "the embedded binary's dependencies" embedded_deps
stage "cargo clippy (all targets, warnings are errors)" \
    cargo clippy --workspace --all-targets --locked -- -D warnings
stage "cargo build (binaries the end-to-end tests run as processes)" \
    cargo build --workspace --bins --locked
stage "deploy bundle (compose, kustomize, alert rules, dashboard)" ./scripts/check-deploy.sh
stage "pinned tools (tansu, cargo-deny): waiting for the background build" wait_tools
stage "cargo deny check licenses bans sources" \
    "${OSAGO_CARGO_DENY_BIN:-$HOME/.cache/osago/cargo-deny-0.20.2/bin/cargo-deny}" \
        deny --locked check licenses bans sources
stage "cargo test (unit, integration and end-to-end tests)" \
    cargo test --workspace --locked --no-fail-fast --lib --bins --tests \
        -- --skip a_hundred_thousand_hostile_inputs
stage "fuzz and property counts (hostile input; counts printed)" \
    cargo test --locked -p osago-tests --test hostile_input \
        a_hundred_thousand_hostile_inputs -- --nocapture
stage "cargo test --doc (rustdoc examples and the README's)" \
    cargo test --workspace --locked --no-fail-fast --doc
stage "example: custom insurer through the intake" \
    cargo run --locked -q -p osago-examples --example custom_insurer
stage "example: webhook sink without Kafka" \
    cargo run --locked -q -p osago-examples --example webhook_sink
# Packaging checks what a publish would ship (metadata, files inside each
# crate, versions on path dependencies); --no-verify: the build it would
# repeat is the one above.
stage "cargo package (osago-core, osago-aggregator-lib, osago-transport)" \
    cargo package --locked --no-verify --allow-dirty \
        -p osago-core -p osago-aggregator-lib -p osago-transport
# The benchmarks are built and linked in the test profile, whose
# dependencies the tests above already built (a release build of them took
# 8-15 min on a fresh 2-core machine), and the poll scheduler's simulation
# runs on a few requests, so neither rots unseen. The figures come from
# the benchmark commands (docs/benchmarks.md), in release.
stage "benchmarks build (test profile)" \
    cargo test --workspace --locked --benches --no-run
stage "poll scheduler benchmark, smoke run (paused-clock simulation)" \
    cargo test -p osago-benches --locked --bench poll_scheduler -- smoke

echo "== all stages passed in $((SECONDS - suite_start)) s"
