#!/bin/sh
# A local stand-in for python:3.11-slim-bookworm when no container registry is reachable: a minimal
# Debian bookworm arm64 root with python3 3.11 and venv, bootstrapped under qemu-user, imported as a
# `FROM scratch` + `ADD rootfs.tar` image.
#
#   images/docker/mkbase.sh OUT.tar
# Hooks are single-quoted on purpose: mmdebstrap expands "$1" (the root) when it runs them.
# shellcheck disable=SC2016
set -eu
out=${1:?usage: mkbase.sh OUT.tar}
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
mmdebstrap --arch=arm64 --variant=minbase --format=tar \
    --include=python3,python3-venv,ca-certificates,netbase \
    --customize-hook='chroot "$1" apt-get clean' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$out" "${MIRROR:-http://deb.debian.org/debian}"
