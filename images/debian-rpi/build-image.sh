#!/bin/sh
# Assemble the flashable Raspberry Pi image (Pi 3/3+/4/400/CM4/Zero 2 W, arm64, Debian bookworm):
#
#   images/debian-rpi/build-image.sh ROOTFS.tar GATEWAY.deb OUTDIR
#
# Writes OUTDIR/gateway-rpi-arm64.img.zst and .bmap, plus the kernel and initrd for qemu boot tests.
# Partitions (MBR, as the Pi's boot ROM wants):
#   1  RASPIFIRM  FAT32  256 MiB  firmware, kernel, initrd, config.txt, cmdline.txt, gateway-settings
#   2  RASPIROOT  ext4            Debian + the edge-gateway package (read-only with READONLY_ROOT=1)
#   3  GWDATA     ext4   256 MiB  /var/lib/gateway: config/ (= /etc/gateway) and queue/
# No loop devices: sfdisk on a file, mkfs.vfat + mtools, mkfs.ext4 -d, dd into place.
set -eu

rootfs=${1:?usage: build-image.sh ROOTFS.tar GATEWAY.deb OUTDIR}
deb=${2:?usage: build-image.sh ROOTFS.tar GATEWAY.deb OUTDIR}
out=${3:?usage: build-image.sh ROOTFS.tar GATEWAY.deb OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
name=${IMAGE_NAME:-gateway-rpi-arm64}
readonly_root=${READONLY_ROOT:-0}
boot_mib=256
data_mib=${DATA_MIB:-256}

work="$out/work"
root="$work/root"
rm -rf "$work"
mkdir -p "$root" "$work/boot" "$work/data"

echo "== unpack $rootfs"
tar -C "$root" --numeric-owner -xpf "$rootfs"

echo "== install $(basename "$deb") in the arm64 root (qemu-user)"
cp "$deb" "$root/tmp/gateway.deb"
chroot_run() {
    # env -i: none of the host's PIP_*, proxy or locale settings leak into the target.
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 chroot "$root" "$@"
}
chroot_run dpkg -i /tmp/gateway.deb
rm -f "$root/tmp/gateway.deb"
chroot_run systemctl enable gateway-firstboot.service systemd-networkd.service systemd-timesyncd.service
chroot_run /opt/gateway/bin/gateway --help >/dev/null

echo "== image settings"
install -m 0644 "$here/files/fstab" "$root/etc/fstab"
if [ "$readonly_root" = 1 ]; then
    sed -i 's|^LABEL=RASPIROOT\( */ *ext4 *\)[^ ]*|LABEL=RASPIROOT\1ro,noatime|' "$root/etc/fstab"
    cat "$here/files/fstab.readonly" >>"$root/etc/fstab"
fi
install -m 0644 "$here/files/50-wired.network" "$root/etc/systemd/network/50-wired.network"
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d" \
    "$root/etc/systemd/journald.conf.d"
install -m 0644 "$here/files/wait-online.conf" \
    "$root/etc/systemd/system/systemd-networkd-wait-online.service.d/gateway.conf"
install -m 0644 "$here/files/journald.conf" "$root/etc/systemd/journald.conf.d/gateway.conf"
echo gateway >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tgateway\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$root/etc/hosts"
# The config lives on the data partition, so reflashing the root keeps it.
rm -rf "$root/etc/gateway"
ln -s /var/lib/gateway/config "$root/etc/gateway"

echo "== data partition tree"
gid=$(awk -F: '$1 == "gateway" {print $3}' "$root/etc/group")
uid=$(awk -F: '$1 == "gateway" {print $3}' "$root/etc/passwd")
[ -n "$uid" ] && [ -n "$gid" ] || { echo "no gateway user in the root" >&2; exit 1; }
install -d -o 0 -g "$gid" -m 0750 "$work/data/config"
install -d -o "$uid" -g "$gid" -m 0750 "$work/data/queue"
rm -rf "${root:?}/var/lib/gateway/"*

echo "== boot partition tree"
kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)
[ -f "$kernel" ] && [ -f "$initrd" ] || { echo "no kernel/initrd in the root" >&2; exit 1; }
if [ -f "$root/boot/firmware/config.txt" ]; then
    cp -a "$root/boot/firmware/." "$work/boot/"
else
    echo "raspi-firmware did not populate /boot/firmware" >&2
    exit 1
fi
rm -rf "${root:?}/boot/firmware/"*
install -m 0644 "$here/gateway-settings.example.yaml" "$work/boot/gateway-settings.example.yaml"
cp "$kernel" "$out/$name.vmlinuz"
cp "$initrd" "$out/$name.initrd"

echo "== assemble $name.img"
root_mib=$(du -s --block-size=1M "$root" | cut -f1)
root_mib=$((root_mib + root_mib / 4 + 128))
start=8192 # 4 MiB alignment, as SD cards like it
boot_s=$((boot_mib * 2048))
root_s=$((root_mib * 2048))
data_s=$((data_mib * 2048))
img="$out/$name.img"
rm -f "$img" "$img.zst" "$img.bmap"
truncate -s $(((start + boot_s + root_s + data_s) * 512)) "$img"
sfdisk --quiet "$img" <<EOF
label: dos
unit: sectors
start=$start, size=$boot_s, type=c, bootable
start=$((start + boot_s)), size=$root_s, type=83
start=$((start + boot_s + root_s)), size=$data_s, type=83
EOF
mkfs.vfat -n RASPIFIRM -F 32 -C "$work/boot.img" $((boot_mib * 1024)) >/dev/null
mcopy -s -i "$work/boot.img" "$work/boot/"* ::/
mkfs.ext4 -q -L RASPIROOT -d "$root" "$work/root.img" "${root_mib}M"
mkfs.ext4 -q -L GWDATA -d "$work/data" "$work/data.img" "${data_mib}M"
dd if="$work/boot.img" of="$img" bs=512 seek=$start conv=notrunc,sparse status=none
dd if="$work/root.img" of="$img" bs=512 seek=$((start + boot_s)) conv=notrunc,sparse status=none
dd if="$work/data.img" of="$img" bs=512 seek=$((start + boot_s + root_s)) conv=notrunc,sparse status=none
rm -rf "$work"

echo "== bmap + zstd"
bmaptool -q create -o "$img.bmap" "$img"
zstd -q -T0 -6 --rm "$img"
ls -l "$img.zst" "$img.bmap"
