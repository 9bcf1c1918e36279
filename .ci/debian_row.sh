#!/usr/bin/env bash
# One row of .ci/debian.sh, run inside a chroot: a fresh virtualenv for
# INTERPRETER, the package, then the README's test command.
#
#   debian_row.sh INTERPRETER wheel|sdist|nocrypto [debug]
#
# wheel: the built abi3 wheel where this interpreter accepts its tags (its
# manylinux glibc floor included), else the sdist.  sdist: always the sdist
# (PyPy; a debug build, so that our C compiles against its headers).
# nocrypto: the sdist without extras, where no cryptography wheel exists
# (PyPy 8): only tests/test_without_cryptography.py can run, alone.
# debug: `-X dev -W error`, third-party C accelerators off (aiohttp's crashes
# a debug interpreter: issue 16).
set -euo pipefail
python=$1 install=$2 mode=${3:-}
venv=/aia-ext/venv-$python
rm -rf "$venv"
"$python" -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip >/dev/null
python -c 'import platform, ssl, sys; print("ROW", sys.implementation.name, platform.python_version(), "debug" if hasattr(sys, "gettotalrefcount") else "release", "|", ssl.OPENSSL_VERSION)'

wheel=$(ls /aia-ext/dist/*.whl 2>/dev/null | head -n 1 || true)
sdist=$(ls /aia-ext/dist/*.tar.gz 2>/dev/null | head -n 1 || true)
[ -n "$sdist" ] || sdist=/aia-ext/src
target=$sdist
if [ "$install" = wheel ] && [ -n "$wheel" ] && python -c '
import sys
from pip._vendor.packaging.tags import sys_tags
from pip._vendor.packaging.utils import parse_wheel_filename
sys.exit(0 if set(parse_wheel_filename(sys.argv[1].rsplit("/", 1)[-1])[3]) & set(sys_tags()) else 1)
' "$wheel"; then
  target=$wheel
fi
echo "installing $(basename "$target")"
cd /aia-ext/src
if [ "$install" = nocrypto ]; then
  python -m pip install -q "$target" pytest
  if python -c 'import cryptography' 2>/dev/null; then
    echo "cryptography is installed: this row is meant for an interpreter without it" >&2
    exit 1
  fi
  python -m pytest -p no:cacheprovider -q --noconftest tests/test_without_cryptography.py
  exit
fi
python -m pip install -q "$target[test]"
if [ "$mode" = debug ]; then
  export AIOHTTP_NO_EXTENSIONS=1 MULTIDICT_NO_EXTENSIONS=1 YARL_NO_EXTENSIONS=1 \
         PROPCACHE_NO_EXTENSIONS=1 FROZENLIST_NO_EXTENSIONS=1
  python -X dev -W error -m pytest -p no:cacheprovider -q
else
  python -m pytest -p no:cacheprovider -q
fi
