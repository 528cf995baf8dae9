#!/usr/bin/env bash
# Load benchmark, embedded mode: the whole system in one release `osago`
# process (eight simulated insurers at real speed), and the load generator
# with N virtual users for each N given (default 2500). Prints one markdown
# row per N, with the server's peak RSS and CPU time.
#
#   ./scripts/bench-load.sh 2500 10000
#
# Needs `ulimit -n` of 20000 or more for N above ~10 000 (the script raises
# the soft limit as far as the hard limit allows).
set -euo pipefail
cd "$(dirname "$0")/.."

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p osago -p osago-loadgen --locked >&2
port=18080
levels=("$@")
[ "${#levels[@]}" -gt 0 ] || levels=(2500)

for users in "${levels[@]}"; do
    RUST_LOG=warn ./target/release/osago --listen "127.0.0.1:${port}" \
        --rate-limit-per-minute 0 --heartbeat 15s >/tmp/osago-bench-server.log 2>&1 &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:${port}/health" >/dev/null && break
        sleep 0.1
    done
    ramp=$(( users / 10 > 250 ? users / 10 : 250 ))
    echo "== embedded, ${users} users, ramp ${ramp}/s" >&2
    ./target/release/loadgen --target "http://127.0.0.1:${port}" --users "$users" \
        --ramp "$ramp" --source-ips 8 --timeout 120s --watch "osago=${server}" || true
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    port=$((port + 1))
done
