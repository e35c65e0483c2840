#!/usr/bin/env bash
# The loramux image, built and run for real with Debian's podman + runc (CTest label
# `container`; scripts/test_container.sh sets up the engine with scripts/container_setup.sh):
#   - builds the Dockerfile (the host's compiler cache shared with the build stage through a
#     build-time volume) and prints the build time and the image size;
#   - the runtime stage holds no compiler, headers or -dev packages;
#   - runs it with a mounted model (tests/data/llama-tiny at /models/base, read-only) and a named
#     store volume and a read-only root filesystem: the server runs as the non-root user owning
#     the store, the image's
#     HEALTHCHECK (`loramux health`, gRPC) passes, /metrics answers;
#   - from outside the container, the CLI uploads an adapter and generates through it: the
#     golden tokens;
#   - `podman stop` (SIGTERM) drains and exits 0; a new container on the same volume serves the
#     adapter again, same version, same tokens.
# Usage: container_test.sh BUILD_DIR (holding client/loramux). Root or sudo.
set -euo pipefail
BUILD_DIR=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PODMAN="$SUDO podman"
RUN_FLAGS=(--runtime runc --network host)
IMAGE=localhost/loramux:test
NAME=loramux-test-$$
VOLUME=loramux-test-store-$$
CLI="$BUILD_DIR/client/loramux"
PYTHON=/usr/bin/python3
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
cleanup() {
  $PODMAN rm -f -v -t 0 "$NAME" >/dev/null 2>&1 || true
  $PODMAN volume rm -f "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if ! $PODMAN image exists docker.io/library/debian:12; then
  echo "container_test: no debian:12 base image; run ./scripts/container_setup.sh" >&2
  exit 1
fi

# --- build ----------------------------------------------------------------------------------
ccache_dir=$(ccache --get-config cache_dir 2>/dev/null || echo "$HOME/.cache/ccache")
: >"$BUILD_DIR/container_build.log"
mkdir -p "$ccache_dir"
start=$(date +%s)
# The build stage is tagged too (loramux-build:cache), so that pruning the previous builds'
# leftovers below keeps its layers (the installed packages) as the next build's cache; the second
# command finds every build-stage step cached.
for target in "--target build -t localhost/loramux-build:cache" "-t $IMAGE"; do
  # shellcheck disable=SC2086
  if ! $PODMAN build --isolation chroot --format docker -v "$ccache_dir:/ccache" $target \
       "$REPO" >>"$BUILD_DIR/container_build.log" 2>&1; then
    tail -n 40 "$BUILD_DIR/container_build.log" >&2
    echo "container_test: podman build failed (log: $BUILD_DIR/container_build.log)" >&2
    exit 1
  fi
done
build_seconds=$(($(date +%s) - start))
# Drop the previous builds' leftovers (GBs each).
$PODMAN image prune -f >/dev/null
size_bytes=$($PODMAN image inspect --format '{{.Size}}' "$IMAGE")
echo "image built in ${build_seconds} s; size $((size_bytes / 1024 / 1024)) MiB" \
     "($(grep -E '^ +(Hits|Misses):' "$BUILD_DIR/container_build.log" | tr -s ' ' | tr '\n' ';'))"

# --- the runtime stage: no toolchain --------------------------------------------------------
toolchain=$($PODMAN run --rm "${RUN_FLAGS[@]}" --entrypoint /bin/sh "$IMAGE" -c \
  'for t in cc gcc g++ c++ cmake protoc; do command -v $t; done;
   find /usr/include -name "*.h" 2>/dev/null | head -n 3; dpkg-query -W -f "\${Package}\n" | grep -E -- "-dev$" || true')
if [ -n "$toolchain" ]; then fail "the runtime image holds build tools or headers: $toolchain"; fi
healthcheck=$($PODMAN image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
case "$healthcheck" in
  *"loramux"*"health"*) ;;
  *) fail "the image has no HEALTHCHECK through \`loramux health\`: $healthcheck" ;;
esac

# --- run --------------------------------------------------------------------------------------
read -r port metrics_port < <($PYTHON -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
$PODMAN volume create "$VOLUME" >/dev/null
start_container() {
  # (podman logs "unable to get systemd connection" for the health timers on machines without
  # systemd; the check below runs the HEALTHCHECK itself.)
  # --read-only as in the Kubernetes Deployment (readOnlyRootFilesystem; podman mounts a tmpfs
  # on /tmp as the manifest's emptyDir does).
  $PODMAN run -d "${RUN_FLAGS[@]}" --read-only --name "$NAME" -v "$VOLUME:/var/lib/loramux/store" \
    -v "$REPO/tests/data/llama-tiny:/models/base:ro" -e LORAMUX_HOST=127.0.0.1 \
    -e "LORAMUX_GRPC_PORT=$port" -e "LORAMUX_METRICS_PORT=$metrics_port" \
    "$IMAGE" --model_dir=/models/base --dtype=float32 >/dev/null 2>"$BUILD_DIR/container_run.err"
  # The image's own HEALTHCHECK command, run by podman inside the container.
  for _ in $(seq 1 60); do
    if $PODMAN healthcheck run "$NAME" >/dev/null 2>&1; then return 0; fi
    if [ "$($PODMAN inspect --format '{{.State.Running}}' "$NAME")" != true ]; then break; fi
    sleep 1
  done
  $PODMAN logs "$NAME" 2>&1 | tail -n 30 >&2
  fail "the container's health check never passed"
  exit 1
}
start_container
uid=$($PODMAN exec "$NAME" id -u)
user=$($PODMAN exec "$NAME" id -un)
if [ "$uid" = 0 ] || [ "$user" != loramux ]; then fail "the server runs as $user (uid $uid)"; fi
server_uid=$($PODMAN exec "$NAME" sh -c 'stat -c %u /proc/1')
if [ "$server_uid" != "$uid" ]; then fail "the server process (pid 1) runs as uid $server_uid"; fi
store_owner=$($PODMAN exec "$NAME" stat -c %U /var/lib/loramux/store)
if [ "$store_owner" != loramux ]; then fail "the store volume is owned by $store_owner"; fi
# (Logs read whole before grep: `grep -q` exiting early would fail the pipe under pipefail.)
logs=$($PODMAN logs "$NAME" 2>&1)
if ! grep -q "from /models/base" <<<"$logs"; then
  fail "the server did not load the mounted model /models/base"
fi
health=$("$CLI" --server "127.0.0.1:$port" --json health)
if [ "$health" != '{"status":"SERVING"}' ]; then fail "health from outside: $health"; fi
if ! $PYTHON -c "import urllib.request,sys; sys.exit('loramux_queue_depth' not in \
    urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics', timeout=10).read().decode())"; then
  fail "/metrics does not answer on the metrics port"
fi

# --- upload and generate from outside ---------------------------------------------------------
read -r prompt golden < <($PYTHON -c "
import json
case = json.load(open('$REPO/tests/data/cases/results.json'))['generation']['llama-tiny/lora-qv-r8'][0]
print(','.join(map(str, case['input_ids'])), json.dumps(case['new_tokens']))")
version=$("$CLI" --server "127.0.0.1:$port" --json upload task \
          "$REPO/tests/data/adapters/lora-qv-r8" | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["version"])')
generate() {
  "$CLI" --server "127.0.0.1:$port" --json generate --adapter task --max_new_tokens 12 "$prompt" |
    $PYTHON -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps(r["token_ids"]), r["adapter_version"])'
}
first=$(generate)
if [ "$first" != "$golden $version" ]; then
  fail "generate through the uploaded adapter: got '$first', want '$golden $version'"
fi

# --- drain on SIGTERM, then a new container on the same volume --------------------------------
$PODMAN stop -t 40 "$NAME" >/dev/null 2>&1
exit_code=$($PODMAN inspect --format '{{.State.ExitCode}}' "$NAME")
if [ "$exit_code" != 0 ]; then fail "the server exited $exit_code on SIGTERM (want a clean drain)"; fi
logs=$($PODMAN logs "$NAME" 2>&1)
if ! grep -q draining <<<"$logs"; then fail "no drain in the server's log"; fi
$PODMAN rm -v "$NAME" >/dev/null 2>&1  # -v: and its anonymous /models volume
start_container
again=$(generate)
if [ "$again" != "$first" ]; then fail "after the restart: got '$again', want '$first'"; fi
listed=$("$CLI" --server "127.0.0.1:$port" --json get task | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["version"])')
if [ "$listed" != "$version" ]; then fail "after the restart the store holds $listed, want $version"; fi

if [ "$failures" -gt 0 ]; then
  echo "container_test: $failures check(s) failed" >&2
  exit 1
fi
echo "container_test: image built (${build_seconds} s, $((size_bytes / 1024 / 1024)) MiB), ran" \
     "as $user, healthy, served an uploaded adapter and kept it across a restart"
