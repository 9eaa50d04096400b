#!/usr/bin/env bash
# Cold vs warm benchmark of the real server (release build), with the fork
# floor of this machine measured in the same run. `--quick` for a short run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin pyexec --example bench
exec ./target/release/examples/bench "$@"
