#!/bin/sh
# Install the Debian host tools a target needs, only those missing (CI machines start bare).
#   images/host-deps.sh lint    systemd-analyze (offline unit checks)
#   images/host-deps.sh image   + lintian, mmdebstrap, qemu-user (binfmt), cross gcc, mtools, bmap, qemu-system
#   images/host-deps.sh docker  + buildah, podman
#   images/host-deps.sh web     + chromium and a font (the operator page's browser tests)
#   images/host-deps.sh TARGET --print   only print the missing packages (tests; HOST_DEPS_SYSROOT
#                                        prefixes the files checked)
# Packages are installed with --no-install-recommends, so every recommended package a step really
# uses is named here (checked by file, not by command: a machine where someone installed it by hand
# would otherwise hide its absence). Exit 3: this machine cannot run the target's steps (not root,
# no binfmt_misc); any other failure is an error. Either way the last line on stderr says why.
set -eu
want=""
need() { command -v "$1" >/dev/null 2>&1 || want="$want $2"; }
need_file() { [ -e "${HOST_DEPS_SYSROOT:-}$1" ] || want="$want $2"; }
case "${1:-lint}" in
    image | docker | lint | web) ;;
    *) echo "usage: host-deps.sh lint|image|docker|web" >&2; exit 2 ;;
esac
need systemd-analyze systemd
if [ "${1:-lint}" = web ]; then
    # Debian's chromium, driven by Playwright (tests/test_web*.py; never a downloaded browser).
    need_file /usr/bin/chromium chromium
    need_file /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core
fi
if [ "${1:-lint}" != lint ] && [ "${1:-lint}" != web ]; then
    need lintian lintian
    need mmdebstrap mmdebstrap
    # mmdebstrap: "install arch-test for foreign architecture support"; the archive's keys for apt.
    need arch-test arch-test
    need_file /usr/share/keyrings/debian-archive-keyring.gpg debian-archive-keyring
    need qemu-aarch64-static qemu-user-static
    need update-binfmts binfmt-support
    need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
    # The cross compiler's C library headers (bits/libc-header-start.h) are only recommended.
    need_file /usr/aarch64-linux-gnu/include/stdio.h libc6-dev-arm64-cross
    need mcopy mtools
    need mkfs.vfat dosfstools
    need sfdisk fdisk
    need mkfs.ext4 e2fsprogs
    need zstd zstd
    need bmaptool bmap-tools
    need qemu-system-aarch64 qemu-system-arm
    # qemu's virtio-net-pci needs its option ROM ("failed to find romfile efi-virtio.rom").
    need_file /usr/lib/ipxe/qemu/efi-virtio.rom ipxe-qemu
fi
if [ "${1:-lint}" = docker ]; then
    need buildah buildah
    need podman podman
fi
if [ "${2:-}" = --print ]; then
    echo "${want# }"
    exit 0
fi
if [ -n "$want" ] && [ "$(id -u)" != 0 ]; then
    if [ "${1:-lint}" = lint ] || [ "${1:-lint}" = web ]; then
        echo "host-deps: not root, cannot install$want; the tests that need them skip" >&2
        exit 0
    fi
    echo "host-deps: not root, cannot install:$want" >&2
    exit 3
fi
if [ -n "$want" ]; then
    echo "host-deps: apt-get install$want"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $want >/dev/null
fi
if [ "${1:-lint}" != lint ] && [ "${1:-lint}" != web ]; then
    # A container or fresh VM may not have binfmt_misc mounted; update-binfmts then fails quietly.
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || {
            echo "host-deps: binfmt_misc is not mounted and cannot be (not root, or no kernel support)" >&2
            exit 3
        }
    fi
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
        echo "host-deps: cannot register qemu-aarch64 with binfmt_misc (update-binfmts --enable qemu-aarch64)" >&2
        exit 3
    }
fi
