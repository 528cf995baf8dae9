#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test of every crate.
# Starts whatever services the tests need (they start their own private
# instances on free loopback ports) and works from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test-all: cargo is missing: install the Rust toolchain (https://rustup.rs)" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (workspace)"
cargo test --workspace --locked --no-fail-fast

echo "== benchmarks build"
cargo bench --workspace --locked --no-run
