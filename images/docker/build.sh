#!/bin/sh
# Build Dockerfile.arm64 with buildah against the local base (no registry needed), then start the
# image and wait for its HEALTHCHECK command to pass against the running gateway.
#
#   images/docker/build.sh BASE_ROOTFS.tar OUTDIR
#
# buildah runs with --isolation chroot (no container runtime or daemon needed) and --format docker
# (the OCI format has no HEALTHCHECK). The wheels the build stage needs are downloaded on the host
# into packaging/wheelhouse/, so nothing inside the emulated build talks TLS.
set -eu
cd "$(dirname "$0")/../.."
base_tar=${1:?usage: build.sh BASE_ROOTFS.tar OUTDIR}
out=${2:?usage: build.sh BASE_ROOTFS.tar OUTDIR}
py=${PYTHON:-.venv/bin/python}
base_tag=localhost/gateway-base:bookworm
tag=localhost/edge-gateway:arm64
b="buildah --storage-driver vfs"

echo "== base image $base_tag from $base_tar"
# Re-importing the tarball makes a new base layer and voids every cached layer above it.
stamp="$out/container-base.stamp"
want=$(stat -c '%Y-%s' "$base_tar")
if $b inspect --type image "$base_tag" >/dev/null 2>&1 && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "unchanged, reused"
else
    ctx="$out/container-base-ctx"
    mkdir -p "$ctx"
    ln -f "$base_tar" "$ctx/rootfs.tar" 2>/dev/null || cp "$base_tar" "$ctx/rootfs.tar"
    $b build --quiet --isolation chroot --platform linux/arm64 --format docker \
        -f images/docker/Containerfile.base -t "$base_tag" "$ctx" >/dev/null
    echo "$want" >"$stamp"
fi

echo "== wheelhouse (linux/arm64 cp311 wheels of every runtime pin and their dependencies, on the host)"
plats=""
for m in 36 34 31 28 27 26 24 17; do plats="$plats --platform manylinux_2_${m}_aarch64"; done
# Every dependency has an arm64 wheel today; one that has only an sdist stops the build here, by
# name, rather than inside the emulated build (build it into a wheel on the host: pip wheel).
# shellcheck disable=SC2086,SC2046 # one word per option and per pinned requirement
"$py" -m pip download -q --only-binary=:all: $plats --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp -d packaging/wheelhouse \
    -r packaging/runtime-requirements.txt \
    $(grep -E '^(setuptools|Cython)==' requirements-dev.txt) wheel

echo "== build $tag"
t0=$(date +%s)
$b build --isolation chroot --platform linux/arm64 --format docker --layers \
    --build-arg BASE="$base_tag" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheelhouse \
    -f Dockerfile.arm64 -t "$tag" .
echo "built in $(($(date +%s) - t0))s"

echo "== image config"
$b inspect --format '{{.Docker.Config.User}} {{.Docker.Config.Volumes}} {{.Docker.Config.Healthcheck.Test}}' "$tag"
$b inspect --format '{{.Docker.Config.Healthcheck.Test}}' "$tag" | grep -q GATEWAY_HEALTH_URL \
    || { echo "HEALTHCHECK missing from the image" >&2; exit 1; }

echo "== run: gateway starts as a non-root user and its HEALTHCHECK command passes"
ctr=$($b from --quiet "$tag")
trap '$b rm "$ctr" >/dev/null 2>&1 || true' EXIT
"$py" images/docker/run_check.py "$b" "$ctr"
