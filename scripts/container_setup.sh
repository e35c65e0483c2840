#!/usr/bin/env bash
# Prepares Debian's own container engine to build and run the loramux image without any image
# registry (none is reachable from CI): podman + buildah + runc (installed by install_deps.sh),
# containers.conf without default ulimits, and the base image docker.io/library/debian:12 made
# locally with debootstrap from Debian's archive. Safe to run again: an existing base image is kept.
#
# Why each step (found on a Debian 12 VM with cgroup v1):
#   - runc, not crun: crun refuses this cgroup layout; scripts/container_test.sh runs with
#     `--runtime runc`.
#   - `default_ulimits = []`: podman's default nofile ulimit exceeds the hard limit of a VM or
#     of a CI container, and every `podman run` would fail to set it.
#   - `podman build --isolation chroot` and `podman run --network host`: no new network
#     namespaces or CNI plugins are needed.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
BASE_IMAGE="docker.io/library/debian:12"

for tool in podman buildah runc debootstrap; do
  if ! command -v "$tool" >/dev/null; then
    echo "container_setup: $tool is missing; run ./scripts/install_deps.sh first" >&2
    exit 1
  fi
done

conf=/etc/containers/containers.conf
if ! grep -qs '^default_ulimits *= *\[\]' "$conf"; then
  $SUDO mkdir -p /etc/containers
  if grep -qs '^\[containers\]' "$conf"; then
    $SUDO sed -i 's/^\[containers\]/[containers]\ndefault_ulimits = []/' "$conf"
  else
    printf '[containers]\ndefault_ulimits = []\n' | $SUDO tee -a "$conf" >/dev/null
  fi
fi

if $SUDO podman image exists "$BASE_IMAGE"; then
  exit 0
fi
rootfs=$(mktemp -d "${TMPDIR:-/tmp}/loramux-debootstrap.XXXXXX")
trap '$SUDO rm -rf "$rootfs"' EXIT
echo "container_setup: making $BASE_IMAGE with debootstrap --variant=minbase bookworm" >&2
$SUDO debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
# The archive's security and update suites, as Debian's own image has them.
printf '%s\n' "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" |
  $SUDO tee "$rootfs/etc/apt/sources.list" >/dev/null
$SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
$SUDO tar -C "$rootfs" -c . | $SUDO podman import - "$BASE_IMAGE" >/dev/null
echo "container_setup: imported $BASE_IMAGE" >&2
