# loramux server image: Debian 12 packages only, CPU LibTorch. Built and run by
# scripts/test_container.sh with Debian's podman (see scripts/container_setup.sh for the set-up):
#
#   podman build --isolation chroot --format docker -v "$(ccache --get-config cache_dir)":/ccache \
#     -t loramux:latest .
#   podman run --runtime runc --network host -v loramux-store:/var/lib/loramux/store \
#     -v /path/to/model:/models/base:ro loramux:latest --model_dir=/models/base
# (without --model_dir: the built-in demo model, tests/data/llama-tiny).
#
# The build-time volume on /ccache is optional: with the host's compiler cache the build stage
# mostly hits it (build.sh sets CCACHE_BASEDIR, so /src and the host's checkout share entries).
# `--format docker` keeps the HEALTHCHECK (the OCI format has none).

# --- build stage: compilers and headers, the same install script as the README and CI ---------
FROM docker.io/library/debian:12 AS build
WORKDIR /src
COPY scripts/install_deps.sh scripts/install_deps.sh
RUN ./scripts/install_deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
ENV CCACHE_DIR=/ccache
# A failed build fails this step (only the cache statistics are optional), so no layer without
# the binaries is ever cached.
RUN ccache -z >/dev/null && ./scripts/build.sh loramux_server loramux \
 && { ccache -s | grep -E "Hits|Misses" || true; }

# --- runtime stage: runtime libraries only (no compilers, no headers, no -dev packages) ------
FROM docker.io/library/debian:12
# The shared libraries the two binaries link (readelf -d NEEDED, mapped to their packages), and
# OpenBLAS as the system BLAS: Debian's LibTorch multiplies through libblas.so.3 and the
# reference BLAS is ~60x slower.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libtorch1.13 libopenblas0-openmp libgomp1 libabsl20220623 libgrpc++1.51 libgrpc29 \
      libprotobuf32 libprometheus-cpp-core1.0 libre2-9 libcpp-httplib0.11 libssl3 \
      libsimdjson14 libpcre2-8-0 libutf8proc2 ca-certificates >/dev/null \
 && for alt in $(update-alternatives --get-selections | awk '/^lib(blas|lapack)\.so\.3/ {print $1}'); do \
      update-alternatives --set "$alt" \
        "$(update-alternatives --list "$alt" | grep openblas-openmp | head -n1)" >/dev/null; \
    done \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
# A non-root user owns the adapter store; models are mounted read-only.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/loramux --shell /usr/sbin/nologin loramux \
 && mkdir -p /var/lib/loramux/store /models \
 && chown -R loramux:loramux /var/lib/loramux
COPY --from=build /src/build/loramux_server /usr/local/bin/loramux_server
COPY --from=build /src/build/client/loramux /usr/local/bin/loramux
# The built-in demo model (tests/data/llama-tiny), used when no --model_dir is given.
COPY --from=build /src/tests/data/llama-tiny /opt/loramux/models/llama-tiny
USER loramux
WORKDIR /var/lib/loramux
VOLUME ["/var/lib/loramux/store", "/models"]
# Where the server listens: gRPC (Inference, Adapters, grpc.health.v1, reflection) and
# Prometheus /metrics. The HEALTHCHECK follows LORAMUX_GRPC_PORT; with `--network host` pick
# free ports (and LORAMUX_HOST=127.0.0.1 to stay on loopback).
ENV LORAMUX_HOST=0.0.0.0 LORAMUX_GRPC_PORT=50051 LORAMUX_METRICS_PORT=9090
EXPOSE 50051 9090
# gRPC health (grpc.health.v1.Health/Check), not a TCP poke: NOT_SERVING while draining.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD /usr/local/bin/loramux health --server "127.0.0.1:${LORAMUX_GRPC_PORT}" --timeout_s 4 --retries 0
# SIGTERM drains running streams for --drain_timeout_s (30 s; give the orchestrator's grace
# period a few seconds more, e.g. `podman stop -t 40`, terminationGracePeriodSeconds: 40).
STOPSIGNAL SIGTERM
# The shell only expands the addresses and then becomes the server (exec: it gets the signals).
# Arguments are more flags, which win over these: --model_dir=/models/... for a mounted model
# (the built-in demo model otherwise), --flagfile=..., --admin_token_file=...
ENTRYPOINT ["/bin/sh", "-c", "exec /usr/local/bin/loramux_server \
  --listen=${LORAMUX_HOST}:${LORAMUX_GRPC_PORT} --metrics_listen=${LORAMUX_HOST}:${LORAMUX_METRICS_PORT} \
  --adapter_store=/var/lib/loramux/store --drain_timeout_s=30 \
  --model_dir=/opt/loramux/models/llama-tiny \"$@\"", "loramux_server"]
CMD []
