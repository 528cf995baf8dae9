#!/usr/bin/env bash
# Load benchmarks, one command per mode; each writes its table (with the
# date, the machine and this command line) into docs/benchmarks.md:
#
#   ./scripts/bench-load.sh embedded 2500 10000 19000   # one `osago` process
#   ./scripts/bench-load.sh real 2500 10000             # 2 core-apps, 2 aggregators,
#                                                       # PostgreSQL, Valkey, tansu
#   ./scripts/bench-load.sh real 2500 10000 --cores 4 40000  # --cores: for the levels after it
#   ./scripts/bench-load.sh sse 10000 19000             # core-app's SSE vs nginx + nchan
#   ./scripts/bench-load.sh real --steady 2500           # open arrivals keeping 2 500 streams
#   ./scripts/bench-load.sh real --steady --admission-rate 40 2500 10000 40000
#                                                       # overload: core-app admits 40/s
#
# Options: --sim-speed X, --response-time R (insurers' answers; default
# 50ms..200ms), --deadline D (default 60s), --kafka-fetch-wait D
# (real mode; default 10ms, the services' default), --admission-rate R (real
# mode: core-app's --admission-rate; writes the overload table), --events M
# (sse; default 20, at most 32), --publish-every D (sse: between events, default
# 100ms; open loop on both sides), --server-threads T (sse: one more core-app row, its
# runtime on T worker threads, as nginx runs one worker), --kept-alive
# (sse: one more core-app row, each stream asked for on a kept-alive
# connection after a `GET /health` on it), --h2 (sse: one more core-app
# row, the streams over HTTP/2 without TLS, 100 on each connection, as a
# proxy talking h2c to its pods sends them), --repeat K (sse: every server
# run K times in rounds; each row is the run with the median delivery p99,
# every run's p99 beside it), --aggregator-set
# path=value (real mode, repeatable: `--set path=value` for every
# aggregator, e.g. engine.poll.racers=2), --core-app-nice N (real mode:
# every core-app thread at niceness N, e.g. -10 as root, to measure its own
# pipeline stage when it is not waiting for a core), --no-write.
# Builds the release binaries first and raises the open-file limit as far
# as the hard limit allows (the generator keeps each process under 15 000
# connections and connects from 127.0.0.1..8).
set -euo pipefail
cd "$(dirname "$0")/.."

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "${1:-}" = real ]; then
    ./scripts/install-test-services.sh
fi
if [ "${1:-}" = sse ]; then
    ./scripts/install-test-services.sh --bench
fi
cargo build --release --workspace --bins --locked >&2
exec cargo bench -p osago-benches --locked --bench load -- "$@"
