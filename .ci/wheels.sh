#!/usr/bin/env bash
# Every artifact a release publishes, built here (issue 21):
#
#   sudo bash .ci/wheels.sh OUTDIR
#
#   aia_ext-X.tar.gz                                the sdist (it installs without a
#                                                   compiler too: a pure install)
#   aia_ext-X-py3-none-any.whl                      pure: the fallback engine only, for
#                                                   platforms no platform wheel fits
#   aia_ext-X-cp39-abi3-manylinux_2_17_x86_64...whl  built in a Debian 11 chroot (glibc
#   aia_ext-X-cp39-abi3-manylinux_2_17_aarch64...whl 2.31) and an emulated arm64 one,
#                                                   repaired by auditwheel
#
# The Linux wheels need root (debootstrap, chroot: .ci/debian.sh --build); the
# host's interpreter needs `build` (installed here into a private virtualenv).
# musllinux, macOS and Windows wheels are built by .github/workflows/release.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(realpath "$1")
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aia-ext-wheels.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log() { printf '\n=== [%5ss] wheels: %s\n' "$SECONDS" "$*"; }

"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip build twine >/dev/null

log "sdist"
"$WORK/venv/bin/python" -m build -q --sdist -o "$OUT" . >/dev/null
SDIST=$(ls "$OUT"/aia_ext-*.tar.gz)

log "pure wheel (py3-none-any)"
# From the sdist, as a release builds it; AIA_EXT_PURE leaves the extension out.
AIA_EXT_PURE=1 "$WORK/venv/bin/python" -m pip wheel -q --no-deps -w "$WORK/pure" "$SDIST"
cp "$WORK"/pure/*-py3-none-any.whl "$OUT/"

log "manylinux_2_17 wheels: x86_64 (Debian 11) and aarch64 (Debian 11 arm64, emulated)"
bash .ci/debian.sh --build "$OUT" --sdist "$SDIST" bullseye bullseye-arm64 \
  | grep -v 'is ignored: it is neither a file nor a directory'

log "twine check"
"$WORK/venv/bin/twine" check --strict "$OUT"/*
ls -l "$OUT"
