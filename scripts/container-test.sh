#!/usr/bin/env bash
# Builds the image from the Dockerfile as it is and runs it as deploy/README.md
# documents, then checks it through the published port (tests/container/checks.py):
# health and readiness, the seed README's examples, a timeout and a memory
# limit, the gateway's own cgroup limits out of its reach, docker stop draining
# a run, a tenant folder mounted from the host with a hot reload, and a
# flagless run naming the flags it lacks. Prints the image's size per layer
# and the cold start. Run by scripts/test.sh after the main suite, as root.
#
# Skipped, with a loud line, only when no container engine can run here.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[container-test] %s\n' "$*" >&2; }
skip() {
  printf '\n!!!! CONTAINER TEST SKIPPED: %s !!!!\n\n' "$*" >&2
  exit 0
}

# Debian's engine. Its own client is used, since another `docker` earlier on
# PATH (a newer client without the buildx plugin) cannot build on it.
if [ ! -x /usr/sbin/dockerd ] || ! command -v debootstrap >/dev/null; then
  log "installing docker.io and debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io debootstrap iptables >/dev/null \
    || skip "docker.io could not be installed"
fi
export DOCKER=/usr/bin/docker
if ! "$DOCKER" info >/dev/null 2>&1; then
  # No systemd on these machines: the daemon is started by hand, defaults kept.
  log "starting dockerd (log: /var/log/pyexec-dockerd.log)"
  nohup /usr/sbin/dockerd >/var/log/pyexec-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 /var/log/pyexec-dockerd.log >&2; skip "dockerd does not start on this machine"; }
fi
log "engine: $("$DOCKER" version --format 'server {{.Server.Version}}, client {{.Client.Version}}'), cgroup $("$DOCKER" info --format '{{.CgroupVersion}}')"

bash scripts/container-base-images.sh

log "docker build -t pyexec ."
build_started=$(date +%s)
"$DOCKER" build -t pyexec . >/tmp/pyexec-docker-build.log 2>&1 \
  || { tail -40 /tmp/pyexec-docker-build.log >&2; exit 1; }
log "built in $(( $(date +%s) - build_started )) s"

printf '\nimage pyexec: %s\n' "$("$DOCKER" image inspect -f '{{.Size}}' pyexec | awk '{ printf "%.1f MB", $1 / 1e6 }')"
"$DOCKER" history --format '{{.Size}}\t{{.CreatedBy}}' pyexec \
  | awk -F'\t' '$1 != "0B" { printf "  %-8s %s\n", $1, substr($2, 1, 110) }'
echo

# The checks speak HTTP with requests (PyPI, or Debian's python3-requests).
python3 -c 'import requests' 2>/dev/null \
  || python3 -m pip install -q requests 2>/dev/null \
  || apt-get install -y -qq --no-install-recommends python3-requests >/dev/null
python3 tests/container/checks.py
