# shellcheck shell=bash
# Shared by the benchmark scripts that drive a real loramux_server: sourced, not run.
#
#   require_binaries NAME BIN...      exit 2, naming the first BIN that is not an executable
#   start_server PREFIX SERVER ARGS...
#                                     start SERVER on free loopback ports with ARGS (stdout to
#                                     PREFIX.out, stderr to PREFIX.log); set SERVER_PID, ADDR (gRPC)
#                                     and HTTP_ADDR (when it serves HTTP); exit 1 with the log if it
#                                     is not listening within 60 s
#   stop_server                       TERM, up to 15 s to drain, then KILL (safe to repeat; the
#                                     sourcing script calls it from its EXIT trap)

SERVER_PID=""
ADDR=""
# shellcheck disable=SC2034  # read by the sourcing scripts
HTTP_ADDR=""

require_binaries() {
  local name="$1" bin
  shift
  for bin in "$@"; do
    if [[ ! -x "$bin" ]]; then
      echo "$name: $bin is missing; build it first (./scripts/build.sh)" >&2
      exit 2
    fi
  done
}

start_server() {
  local prefix="$1"
  shift
  "$@" >"$prefix.out" 2>"$prefix.log" &
  SERVER_PID=$!
  ADDR=""
  for _ in $(seq 600); do
    ADDR="$(sed -n 's/^listening on //p' "$prefix.out" | head -n1)"
    [[ -n "$ADDR" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$ADDR" ]]; then
    echo "the server did not start; its log:" >&2
    cat "$prefix.log" >&2
    exit 1
  fi
  # shellcheck disable=SC2034  # read by the sourcing scripts
  HTTP_ADDR="$(sed -n 's/^http listening on //p' "$prefix.out" | head -n1)"
}

stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
