#!/usr/bin/env bash
# Sets up this machine (idempotent) and starts pyexec on :8080 (or $PORT).
# Without PYEXEC_API_KEY the server generates a key and prints it with a
# ready-to-paste curl line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --quiet --bin pyexec
exec ./target/debug/pyexec serve --nsjail-dir nsjail "$@"
