#!/bin/sh
# The lint-only recipes run for real against a Debian bookworm arm64 root (the one the Pi image is
# built from): the sdm-style installer, the pi-gen stage's install step with a stand-in on_chroot,
# and the Jetson script with a stand-in Linux_for_Tegra folder. Then the units are verified
# offline against that root's own systemd unit set.
#
#   images/recipes-test.sh ROOTFS.tar GATEWAY.deb
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tar_=${1:?usage: recipes-test.sh ROOTFS.tar GATEWAY.deb}
deb=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
work=$(mktemp -d "${TMPDIR:-/tmp}/gwrecipes.XXXXXX")
trap 'rm -rf "$work"' EXIT
t0=$(date +%s)
root="$work/root"
mkdir -p "$root"
tar -C "$root" --numeric-owner -xpf "$tar_"
echo "== sdm-style installer"
printf 'hostname: pi-1\ncloud: {endpoint: "tcp://cloud.example:7000", insecure: true}\n' >"$work/s.yaml"
"$here/install/gateway-install.sh" --firstboot --settings "$work/s.yaml" "$root" "$deb"
[ -f "$root/boot/firmware/gateway-settings.yaml" ]
echo "== the installed package carries the whole product (every runtime pin, compiled modules, RTU + CAN + model)"
chk="$root/tmp/product"
mkdir -p "$chk/models"
cp "$here/product_probe.py" "$here/../packaging/runtime-requirements.txt" "$here/docker/check-full.yaml" \
    "$here/../examples/truck.dbc" "$chk/"
cp "$here/../examples/models/bearing_ae.tflite" "$here/../examples/models/bearing_ae.ref.json" "$chk/models/"
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin GATEWAY_REQUIRE_NATIVE=1 chroot "$root" "$@"; }
in_root /opt/gateway/bin/python -I /tmp/product/product_probe.py /tmp/product/runtime-requirements.txt
out=$(in_root /opt/gateway/bin/gateway check /tmp/product/check-full.yaml 2>&1) \
    || { printf '%s\n' "$out" >&2; echo "recipes: gateway check (RTU + CAN + model) failed in the root" >&2; exit 1; }
printf '%s\n' "$out" | grep -q "model bearing_ae: self-test passed" \
    || { printf '%s\n' "$out" >&2; echo "recipes: the model was not self-tested" >&2; exit 1; }
echo "recipes: gateway check passed on Modbus RTU + CAN (DBC) + a TFLite model self-test"
rm -rf "$chk"
echo "== pi-gen stage install step"
ROOTFS=$root DEB=$deb "$here/pi-gen/check.sh"
echo "== Jetson recipe against a stand-in BSP"
ROOTFS=$root DEB=$deb "$here/jetson/check.sh"
echo "== Jetson route: compiled extensions for Python 3.10 (cross-built, checked without running)"
py=${PYTHON:-$here/../.venv/bin/python}
"$py" "$here/jetson/native_wheel.py" build --python 3.10 --arch arm64 --out "$work/jetson" >/dev/null
libpy=$(find /usr/lib /root/.pyenv/versions -name 'libpython3.10.so.1.0' 2>/dev/null | head -n 1)
[ -n "$libpy" ] || echo "recipes: no libpython3.10 on this host: C API symbol check skipped"
"$py" "$here/jetson/native_wheel.py" verify ${libpy:+--libpython "$libpy"} "$work"/jetson/edge_gateway-*-cp310-cp310-linux_aarch64.whl
echo "== a package for another Python is refused with the remedy"
dpkg-deb -R "$deb" "$work/deb310"
sed -i 's/python3 (>= 3.11), python3 (<< 3.12)/python3 (>= 3.10), python3 (<< 3.11)/' "$work/deb310/DEBIAN/control"
dpkg-deb --root-owner-group -Zgzip -z1 -b "$work/deb310" "$work/edge-gateway-py310.deb" >/dev/null
if out=$("$here/install/gateway-install.sh" "$root" "$work/edge-gateway-py310.deb" 2>&1); then
    echo "recipes: a python3.10 package was accepted by a python3.11 root" >&2; exit 1
fi
printf '%s\n' "$out" | grep -q 'build_deb.py --python' || { echo "no remedy in: $out" >&2; exit 1; }
echo "== systemd-analyze verify in the arm64 root"
out=$(systemd-analyze verify --man=no --root="$root" gateway.service gateway-firstboot.service 2>&1)
[ -z "$out" ] || { printf '%s\n' "$out" >&2; exit 1; }
echo "recipes-test: all checks passed in $(($(date +%s) - t0))s"
echo "recipes-test: 8 passed, 0 failed"
