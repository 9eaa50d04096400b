#!/usr/bin/env bash
# Sets up this machine (idempotent) and runs the whole test suite: formatting,
# lints, unit tests, the integration tests against real nsjail, then the
# container image built and run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --for-tests
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
# deny.toml: banned crates (the rust_crypto JWT backend), licences, sources.
# Advisories need the RustSec database from GitHub, which CI cannot reach.
cargo deny --log-level error check bans licenses sources
# The project's own Python (the harness, the zygote, the container checks).
"${PYEXEC_PREFIX:-/opt/pyexec}/tools/bin/ruff" check nsjail tests/container
# The warm runner's own seccomp filter, run against every ABI's numbers, and
# the harness's conversion of a result to JSON.
"${PYEXEC_PREFIX:-/opt/pyexec}/python/bin/python3" -B -m unittest discover -s nsjail -p 'test_*.py'
# Every policy defaults to the warm path; the integration suite runs again
# with every run forced cold, so both modes pass every test.
cargo test --all-targets
PYEXEC_SANDBOX_MODE=cold cargo test --tests
# The image: built from the Dockerfile and run as deploy/README.md documents
# (skipped, with a loud line, only where no container engine can run).
bash scripts/container-test.sh
