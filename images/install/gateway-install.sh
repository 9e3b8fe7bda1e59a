#!/bin/sh
# Install the edge-gateway package into an existing root file system or Raspberry Pi image
# (sdm-style customisation, without booting it).
#
#   gateway-install.sh [--settings FILE] [--firstboot] TARGET GATEWAY.deb
#
# TARGET is a root directory (a mounted image root, a Jetson Linux_for_Tegra/rootfs, a Debian arm64
# chroot) or a Raspberry Pi OS / Debian .img file, whose partitions are then loop-mounted
# (partition 2 at /, partition 1 at /boot/firmware; needs losetup, so not in containers).
# --settings copies a gateway-settings.yaml to the boot partition (/boot/firmware); --firstboot
# enables gateway-firstboot.service, which applies that file at boot.
# A foreign-architecture root runs dpkg under qemu-user (binfmt_misc must be enabled).
set -eu
here=$(cd "$(dirname "$0")" && pwd)

settings=""
firstboot=0
while [ $# -gt 2 ]; do
    case "$1" in
        --settings) settings=$2; shift 2 ;;
        --firstboot) firstboot=1; shift ;;
        *) break ;;
    esac
done
[ $# -eq 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
target=$1
deb=$2
die() { echo "gateway-install: $*" >&2; exit 1; }
[ -f "$deb" ] || die "$deb: no such package"
[ -z "$settings" ] || [ -f "$settings" ] || die "$settings: no such settings file"

install_root() {
    root=$1
    [ -f "$root/etc/os-release" ] || die "$root does not look like a root file system (no etc/os-release)"
    [ -x "$root/usr/bin/dpkg" ] || die "$root has no dpkg: only Debian-family roots are supported"
    want_arch=$(dpkg-deb -f "$deb" Architecture)
    have_arch=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" dpkg --print-architecture) \
        || die "cannot run programs in $root (for arm64 on x86-64: apt-get install qemu-user-static binfmt-support)"
    [ "$want_arch" = "$have_arch" ] || die "$deb is for $want_arch, $root is $have_arch"
    pydep=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -n 's/.*python3 (>= \([0-9.]*\)).*/\1/p')
    [ -x "$root/usr/bin/python$pydep" ] \
        || die "$root has no python$pydep; build the package for its python3 (packaging/build_deb.py --python X.Y)"
    cp "$deb" "$root/tmp/edge-gateway.deb"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 chroot "$root" dpkg -i /tmp/edge-gateway.deb
    rm -f "$root/tmp/edge-gateway.deb"
    if [ "$firstboot" = 1 ]; then
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" systemctl enable gateway-firstboot.service
    fi
    if [ -n "$settings" ]; then
        mkdir -p "$root/boot/firmware"
        install -m 0600 "$settings" "$root/boot/firmware/gateway-settings.yaml"
    fi
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" /opt/gateway/bin/gateway --help >/dev/null \
        || die "the installed gateway does not start in $root"
    # The compiled modules must load under the root's own python3 (on a Jetson rootfs: 3.10).
    cp "$here/../product_probe.py" "$root/tmp/gateway-product-probe.py"
    if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$root" \
        /opt/gateway/bin/python3 -I /tmp/gateway-product-probe.py; then
        echo "gateway-install: WARNING: the compiled modules do not load in $root; the gateway runs on" \
            "its pure-Python twins (slower). Build the package with compiled extensions for $root's python3." >&2
    fi
    rm -f "$root/tmp/gateway-product-probe.py"
    echo "gateway-install: edge-gateway $(dpkg-deb -f "$deb" Version) installed in $root"
}

if [ -d "$target" ]; then
    install_root "$target"
    exit 0
fi
[ -f "$target" ] || die "$target: neither a directory nor an image file"
command -v losetup >/dev/null || die "losetup not found (util-linux)"
mnt=$(mktemp -d)
loop=$(losetup --find --show --partscan "$target") || die "cannot attach $target to a loop device"
cleanup() {
    umount "$mnt/boot/firmware" 2>/dev/null || true
    umount "$mnt" 2>/dev/null || true
    losetup -d "$loop" 2>/dev/null || true
    rmdir "$mnt" 2>/dev/null || true
}
trap cleanup EXIT
mount "${loop}p2" "$mnt"
mkdir -p "$mnt/boot/firmware"
mount "${loop}p1" "$mnt/boot/firmware"
install_root "$mnt"
