#!/usr/bin/env bash
# Measures what the Redis path adds per request against the in-memory stores
# (p50/p99, same run): starts a private redis-server on a free port (no
# persistence, temporary folder), runs examples/redis_bench.rs in release
# mode against it, then stops it. Uses PYEXEC_REDIS_URL instead when set
# (e.g. to measure a real Memorystore instance from a VM in its network).
# BENCH_ITERATIONS (default 5000) sets the sample size.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --quiet --release --example redis_bench
if [ -z "${PYEXEC_REDIS_URL:-}" ]; then
  dir="$(mktemp -d)"
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >/dev/null &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  export PYEXEC_REDIS_URL="redis://127.0.0.1:$port"
fi
./target/release/examples/redis_bench
