#!/bin/sh
# Install the gateway into an NVIDIA Jetson Linux (L4T) BSP's root file system before flashing.
#
#   images/jetson/install-l4t.sh [--settings FILE] Linux_for_Tegra GATEWAY.deb
#
# Order, as NVIDIA's Quick Start has it: extract the BSP and the sample rootfs into
# Linux_for_Tegra/rootfs, run `sudo ./apply_binaries.sh`, run this script, then flash
# (`sudo ./flash.sh jetson-orin-nano-devkit internal` or l4t_initrd_flash.sh). This script may run
# before apply_binaries.sh as well. The package must match the rootfs's Python: L4T r36 (Ubuntu
# 22.04) has Python 3.10, so build it with `packaging/build_deb.py --arch arm64 --python 3.10`;
# the compiled extensions for 3.10 come from images/jetson/native_wheel.py. The installer loads them
# under the rootfs's own python3 (qemu-user) and warns if they do not load.
#
# Jetsons have no FAT boot partition a PC can write, so first-boot settings are read from
# /boot/gateway-settings.yaml on the rootfs (copied there by --settings) and the config stays in
# /etc/gateway on the APP partition; the queue is in /var/lib/gateway/queue.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
settings=""
if [ "${1:-}" = --settings ]; then
    settings=$2
    shift 2
fi
[ $# -eq 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
l4t=$1
deb=$2
die() { echo "jetson: $*" >&2; exit 1; }
for f in flash.sh apply_binaries.sh rootfs; do
    [ -e "$l4t/$f" ] || die "$l4t/$f missing: point at the BSP's Linux_for_Tegra folder"
done
[ -f "$l4t/rootfs/etc/os-release" ] || die "$l4t/rootfs is empty: extract the sample rootfs first"
if [ -f "$l4t/rootfs/etc/nv_tegra_release" ]; then
    echo "jetson: apply_binaries.sh has run ($(head -n 1 "$l4t/rootfs/etc/nv_tegra_release" | cut -c1-40))"
else
    echo "jetson: apply_binaries.sh has not run yet; run it before flashing"
fi
"$here/../install/gateway-install.sh" --firstboot "$l4t/rootfs" "$deb"
dropin="$l4t/rootfs/etc/systemd/system/gateway-firstboot.service.d"
mkdir -p "$dropin"
install -m 0644 "$here/firstboot-jetson.conf" "$dropin/jetson.conf"
if [ -n "$settings" ]; then
    install -m 0600 "$settings" "$l4t/rootfs/boot/gateway-settings.yaml"
fi
echo "jetson: done; flash with $l4t/flash.sh (or tools/kernel_flash/l4t_initrd_flash.sh)"
