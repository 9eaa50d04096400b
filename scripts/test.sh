#!/usr/bin/env bash
# Sets up this machine (idempotent) and runs the whole test suite: formatting,
# lints, unit tests and the integration tests against real nsjail.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
# The attack corpus once more with the sandbox mode forced to cold: the run
# above used each tenant policy's own mode (warm by default), and the corpus
# must hold in every mode the server has.
PYEXEC_SANDBOX_MODE=cold cargo test --test attack_corpus
