#!/bin/sh
# Install the Debian host tools a target needs, only those missing (CI machines start bare).
#   images/host-deps.sh lint    systemd-analyze (offline unit checks)
#   images/host-deps.sh image   + lintian, mmdebstrap, qemu-user (binfmt), cross gcc, mtools, bmap, qemu-system
#   images/host-deps.sh docker  + buildah, podman
set -eu
want=""
need() { command -v "$1" >/dev/null 2>&1 || want="$want $2"; }
case "${1:-lint}" in
    image | docker | lint) ;;
    *) echo "usage: host-deps.sh lint|image|docker" >&2; exit 2 ;;
esac
need systemd-analyze systemd
if [ "${1:-lint}" != lint ]; then
    need lintian lintian
    need mmdebstrap mmdebstrap
    need qemu-aarch64-static qemu-user-static
    need update-binfmts binfmt-support
    need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
    need mcopy mtools
    need mkfs.vfat dosfstools
    need sfdisk fdisk
    need zstd zstd
    need bmaptool bmap-tools
    need qemu-system-aarch64 qemu-system-arm
fi
if [ "${1:-lint}" = docker ]; then
    need buildah buildah
    need podman podman
fi
if [ -n "$want" ] && [ "$(id -u)" != 0 ]; then
    if [ "${1:-lint}" = lint ]; then
        echo "host-deps: not root, cannot install$want; lint-images skips what needs them" >&2
        exit 0
    fi
    echo "host-deps: run as root or install:$want" >&2
    exit 1
fi
if [ -n "$want" ]; then
    echo "host-deps: apt-get install$want"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $want >/dev/null
fi
if [ "${1:-lint}" != lint ]; then
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "host-deps: qemu-aarch64 binfmt is not enabled" >&2; exit 1; }
fi
