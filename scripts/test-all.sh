#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test of every crate,
# including the tests on real PostgreSQL, Valkey and a Kafka-protocol broker
# (each test starts private instances on free loopback ports). Works from a
# fresh clone: missing service binaries are installed first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test-all: cargo is missing: install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi

echo "== service binaries (PostgreSQL, Redis/Valkey, tansu)"
./scripts/install-test-services.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build (binaries the end-to-end tests run as processes)"
cargo build --workspace --bins --locked

echo "== cargo test (workspace)"
cargo test --workspace --locked --no-fail-fast

echo "== benchmarks build"
cargo bench --workspace --locked --no-run

echo "== poll scheduler benchmark (paused-clock simulation, seconds; keeps it from rotting)"
cargo bench -p osago-benches --locked --bench poll_scheduler
