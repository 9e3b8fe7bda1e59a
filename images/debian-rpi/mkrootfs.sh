#!/bin/sh
# Bootstrap the Debian bookworm arm64 base root file system for the Raspberry Pi image (and the
# container base) under qemu-user. Cached: the tarball is rebuilt only when this script changes.
#
#   images/debian-rpi/mkrootfs.sh OUT.tar
#
# Needs: mmdebstrap, qemu-user-static + binfmt-support (qemu-aarch64 enabled), root.
# Hooks are single-quoted on purpose: mmdebstrap expands "$1" (the root) when it runs them.
# shellcheck disable=SC2016
set -eu

out=${1:?usage: mkrootfs.sh OUT.tar}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}

# force-confold keeps the /etc/default/raspi-firmware written below (no conffile prompt).
# Kernel (with its modules: can, can_raw, vcan, the USB serial and CAN adapters), Pi firmware,
# systemd, python3 and the tools the first boot needs; iproute2 and can-utils bring a CAN bus up
# (`ip link set can0 up type can bitrate 250000`) and watch it (candump). No ssh server: the image
# has no login until its owner adds one (see images/README.md).
packages="systemd-sysv,udev,kmod,dbus,systemd-timesyncd,iproute2,can-utils,netbase,ca-certificates,\
linux-image-arm64,raspi-firmware,firmware-brcm80211,initramfs-tools,zstd,\
e2fsprogs,dosfstools,python3,python3-venv,less,procps"

# The initramfs carries only the modules listed here (MODULES=list): Pi SD/eMMC controllers and
# qemu's virtio disk. The default (MODULES=most) takes about 13 minutes per build under qemu-user.
modules="ext4 crc32c_generic vfat nls_cp437 nls_ascii mmc_block sdhci_iproc bcm2835 \
reset_raspberrypi clk_raspberrypi virtio_blk virtio_pci virtio_mmio virtio_net"

update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true

mmdebstrap --arch=arm64 --variant=apt --format=tar --components=main,non-free-firmware \
    --dpkgopt=force-confold --dpkgopt=force-confdef \
    --include="$packages" \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/default" "$1/boot/firmware"' \
    --essential-hook='echo MODULES=list > "$1/etc/initramfs-tools/conf.d/gateway-modules"' \
    --essential-hook="printf '%s\n' $modules > \"\$1/etc/initramfs-tools/modules\"" \
    --essential-hook='printf "ROOTPART=LABEL=RASPIROOT\nCONSOLES=\"ttyS1,115200 tty0\"\n" > "$1/etc/default/raspi-firmware"' \
    --customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
    --customize-hook='chroot "$1" apt-get clean' \
    "$suite" "$out" "$mirror"
