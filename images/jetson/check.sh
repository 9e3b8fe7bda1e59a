#!/bin/sh
# Lint-only check of the Jetson recipe (NVIDIA's BSP cannot be fetched here): against a stand-in
# Linux_for_Tegra folder, the script must refuse what is missing with a clear message. With
# ROOTFS=DIR (a Debian bookworm arm64 root) and DEB=FILE it also installs into that root as the
# BSP's rootfs, and checks the result.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bsp="$work/Linux_for_Tegra"
mkdir -p "$bsp"
expect_fail() {
    if out=$("$here/install-l4t.sh" "$bsp" "${DEB:-/nonexistent.deb}" 2>&1); then
        echo "jetson: expected a refusal ($1), got success" >&2; exit 1
    fi
    printf '%s' "$out" | grep -q "$1" || { echo "jetson: expected '$1' in: $out" >&2; exit 1; }
}
expect_fail "flash.sh missing"
touch "$bsp/flash.sh" "$bsp/apply_binaries.sh"
chmod +x "$bsp/flash.sh" "$bsp/apply_binaries.sh"
mkdir -p "$bsp/rootfs"
expect_fail "rootfs is empty"
echo "jetson: refusals OK"
if [ -n "${ROOTFS:-}" ] && [ -n "${DEB:-}" ]; then
    rmdir "$bsp/rootfs"
    ln -s "$(cd "$ROOTFS" && pwd)" "$bsp/rootfs"
    printf '# R36 (release), REVISION: 4.0 (stand-in)\n' >"$ROOTFS/etc/nv_tegra_release"
    printf 'hostname: jetson-1\ncloud: {endpoint: "tcp://cloud.example:7000", insecure: true}\n' >"$work/s.yaml"
    "$here/install-l4t.sh" --settings "$work/s.yaml" "$bsp" "$DEB"
    rm -f "$ROOTFS/etc/nv_tegra_release"
    [ -f "$ROOTFS/boot/gateway-settings.yaml" ]
    [ -f "$ROOTFS/etc/systemd/system/gateway-firstboot.service.d/jetson.conf" ]
    [ -L "$ROOTFS/etc/systemd/system/multi-user.target.wants/gateway.service" ]
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$ROOTFS" getent passwd gateway >/dev/null
    out=$(systemd-analyze verify --man=no --root="$ROOTFS" gateway-firstboot.service gateway.service 2>&1)
    [ -z "$out" ] || { echo "jetson: units with the drop-in do not verify: $out" >&2; exit 1; }
    echo "jetson: installed into the stand-in BSP's rootfs"
fi
