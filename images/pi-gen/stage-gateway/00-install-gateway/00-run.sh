#!/bin/bash -e
# pi-gen step (runs on the build host): install the edge-gateway package into the Raspberry Pi OS
# root and enable first-boot settings. Put edge-gateway_VERSION_arm64.deb (make deb) in files/.
deb=$(find files -maxdepth 1 -name 'edge-gateway_*_arm64.deb' | sort | tail -n 1)
if [ -z "${deb}" ]; then
    echo "stage-gateway: copy build/images/edge-gateway_*_arm64.deb into $(pwd)/files" >&2
    exit 1
fi
install -m 0644 "${deb}" "${ROOTFS_DIR}/tmp/edge-gateway.deb"
install -m 0644 files/gateway-settings.example.yaml "${ROOTFS_DIR}/boot/firmware/gateway-settings.example.yaml"
on_chroot <<'CHROOT'
dpkg -i /tmp/edge-gateway.deb
rm -f /tmp/edge-gateway.deb
systemctl enable gateway-firstboot.service
/opt/gateway/bin/gateway --help >/dev/null
# The whole product: compiled modules (not the pure twins) and every driver's library and LiteRT.
GATEWAY_REQUIRE_NATIVE=1 /opt/gateway/bin/python3 -I -c \
    'import gateway.impl, serial, can, cantools, ai_edge_litert.interpreter'
CHROOT
