#!/usr/bin/env bash
# Makes local stand-ins for the two images the Dockerfile starts FROM, under
# their exact names, when they are missing: `debian:bookworm-slim` and
# `rust:1-slim-bookworm`. Only for machines that reach no image registry (CI
# here); a real user's `docker build` pulls the real ones, and the Dockerfile is
# the same either way. Existing images are kept, so a second run costs nothing.
#
# Needs: a running Docker engine, debootstrap, root.
set -euo pipefail

DOCKER="${DOCKER:-docker}"
log() { printf '[base-images] %s\n' "$*" >&2; }

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# This machine's HTTPS goes through a proxy with its own CA, which the host's
# bundle holds: copy it in, and point pip at the system store, or every
# download in the build fails its certificate check.
add_host_trust() {
  local root="$1"
  mkdir -p "$root/usr/local/share/ca-certificates" "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/host-bundle.crt"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
}

make_debian_slim() {
  local root
  root="$(mktemp -d /var/tmp/pyexec-bookworm.XXXXXX)"
  log "debootstrap --variant=minbase bookworm (a stand-in for debian:bookworm-slim)"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
  # The official image's sources and its dpkg exclusions: no docs, man pages
  # or locales are installed by later apt-get calls either.
  cat > "$root/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/* \
         "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
  add_host_trust "$root"
  tar -C "$root" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  rm -rf "$root"
}

# The official rust image: the slim Debian base, ca-certificates gcc libc6-dev,
# and the toolchain under /usr/local/rustup and /usr/local/cargo on PATH. The
# toolchain is this machine's own (no other can be fetched here).
make_rust_slim() {
  local context toolchain
  context="$(mktemp -d /var/tmp/pyexec-rust.XXXXXX)"
  toolchain="$(rustc --print sysroot)"
  log "rust:1-slim-bookworm from debian:bookworm-slim and $(rustc --version)"
  mkdir -p "$context/rustup/toolchains" "$context/cargo/bin"
  cp -a "$toolchain" "$context/rustup/toolchains/stable"
  # Documentation and sources are most of a toolchain and no build needs them.
  rm -rf "$context"/rustup/toolchains/stable/share/doc "$context"/rustup/toolchains/stable/lib/rustlib/src
  for tool in cargo rustc rustdoc; do
    ln -s "../../rustup/toolchains/stable/bin/$tool" "$context/cargo/bin/$tool"
  done
  cat > "$context/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends ca-certificates gcc libc6-dev >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo --version && rustc --version
EOF
  "$DOCKER" build -q -t rust:1-slim-bookworm "$context" >/dev/null
  rm -rf "$context"
}

have_image debian:bookworm-slim || make_debian_slim
have_image rust:1-slim-bookworm || make_rust_slim
log "ready: $("$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian:bookworm-slim|rust:1-slim-bookworm) ' | tr '\n' ' ')"
