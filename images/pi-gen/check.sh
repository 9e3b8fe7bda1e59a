#!/bin/sh
# Lint-only check of the pi-gen stage (Raspberry Pi OS cannot be fetched here):
# layout pi-gen expects, and with ROOTFS=DIR (a Debian bookworm arm64 root) and DEB=FILE, a dry run
# of the install step with pi-gen's on_chroot replaced by a plain chroot.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
stage="$here/stage-gateway"
for f in prerun.sh EXPORT_IMAGE 00-install-gateway/00-run.sh \
    00-install-gateway/files/gateway-settings.example.yaml; do
    [ -e "$stage/$f" ] || { echo "pi-gen: $stage/$f missing" >&2; exit 1; }
done
for f in prerun.sh 00-install-gateway/00-run.sh; do
    [ -x "$stage/$f" ] || { echo "pi-gen: $f must be executable (pi-gen runs it directly)" >&2; exit 1; }
done
cmp -s "$stage/00-install-gateway/files/gateway-settings.example.yaml" \
    "$here/../debian-rpi/gateway-settings.example.yaml" \
    || { echo "pi-gen: files/gateway-settings.example.yaml differs from images/debian-rpi's" >&2; exit 1; }
grep -q 'on_chroot' "$stage/00-install-gateway/00-run.sh"
echo "pi-gen: stage layout OK"
if [ -n "${ROOTFS:-}" ] && [ -n "${DEB:-}" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/files" "$ROOTFS/boot/firmware"
    cp "$DEB" "$stage/00-install-gateway/files/gateway-settings.example.yaml" "$work/files/"
    (
        cd "$work"
        ROOTFS_DIR=$ROOTFS bash -ec "
            on_chroot() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot \"\$ROOTFS_DIR\" /bin/bash -e; }
            . '$stage/00-install-gateway/00-run.sh'"
    )
    [ -L "$ROOTFS/etc/systemd/system/sysinit.target.wants/gateway-firstboot.service" ]
    echo "pi-gen: install step ran in $ROOTFS"
fi
