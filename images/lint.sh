#!/bin/sh
# Cheap checks of everything image-related that `make test` can afford (about 10 s warm):
# hadolint on Dockerfile.arm64, shellcheck on every shell script, systemd-analyze verify and an
# offline security score of the units against bookworm's systemd, and the lint-only recipes.
#   images/lint.sh [BIN_DIR]    BIN_DIR holds hadolint and shellcheck (default: .venv/bin)
set -eu
cd "$(dirname "$0")/.."
bin=${1:-.venv/bin}
fail=0
step() { printf 'lint-images: %s\n' "$*"; }

step "hadolint Dockerfile.arm64 images/cloud/Dockerfile"
"$bin/hadolint" Dockerfile.arm64 images/cloud/Dockerfile || fail=1

step "shellcheck"
scripts=$(find images packaging -type f \( -name '*.sh' -o -path '*/deb/post*' -o -path '*/deb/prerm' \
    -o -path '*/pi-gen/*/0*-run*' \) | sort)
# shellcheck disable=SC2086 # one word per file
"$bin/shellcheck" -x $scripts || fail=1

if ! command -v systemd-analyze >/dev/null; then
    step "SKIPPED systemd-analyze: not installed (images/host-deps.sh lint installs it as root)"
else
step "systemd-analyze verify + security (systemd $(systemd-analyze --version | head -n 1 | cut -d' ' -f2))"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lib/systemd/system" "$tmp/opt/gateway/bin"
cp -a /lib/systemd/system/. "$tmp/lib/systemd/system/"
cp packaging/systemd/*.service "$tmp/lib/systemd/system/"
# Stand-ins for the package's executables: verify checks that ExecStart= paths exist in the root.
for exe in gateway python3; do printf '#!/bin/sh\n' >"$tmp/opt/gateway/bin/$exe"; chmod 755 "$tmp/opt/gateway/bin/$exe"; done
units=$(find packaging/systemd -name '*.service' -printf '%f\n' | sort)
# shellcheck disable=SC2086
out=$(systemd-analyze verify --man=no --root="$tmp" $units 2>&1) || fail=1
# verify exits 0 on settings it ignores: any message is a failure.
if [ -n "$out" ]; then printf '%s\n' "$out"; fail=1; fi
systemd-analyze security --offline=yes --root="$tmp" --threshold=3 --no-pager gateway.service \
    | tail -n 1 || fail=1
fi

for check in images/*/check.sh; do
    [ -x "$check" ] || continue
    step "$check"
    "$check" || fail=1
done

if [ "$fail" != 0 ]; then
    step "FAILED"
    exit 1
fi
step "all passed"
