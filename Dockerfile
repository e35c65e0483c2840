# loramux server image: Debian 12 packages only (the same install script as CI), CPU LibTorch.
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install_deps.sh scripts/install_deps.sh
RUN ./scripts/install_deps.sh
COPY . .
RUN ./scripts/build.sh

FROM debian:12
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      libtorch1.13 libopenblas0-openmp libgrpc++1.51 libprotobuf32 libprometheus-cpp-core1.0 \
      libre2-9 libcpp-httplib0.11 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/loramux_server /usr/local/bin/loramux_server
COPY --from=build /src/tests/data/llama-tiny /opt/loramux/models/llama-tiny
EXPOSE 50051 9090
VOLUME /var/lib/loramux/store
ENTRYPOINT ["/usr/local/bin/loramux_server", "--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9090", \
            "--adapter_store=/var/lib/loramux/store"]
CMD ["--model_dir=/opt/loramux/models/llama-tiny"]
