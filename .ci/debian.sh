#!/usr/bin/env bash
# The test suite on the CPythons, PyPys and OpenSSLs that Debian ships, and the
# Linux wheels' builds, each in a chroot made with debootstrap from the Debian
# package registry (issues 16 and 21).
#
#   sudo .ci/debian.sh [--wheels DIR] [--sdist FILE] [CHROOT...]
#   sudo .ci/debian.sh --build OUTDIR --sdist FILE [CHROOT...]
#
# CHROOT is one of:
#   bullseye        Debian 11, x86_64: CPython 3.9, OpenSSL 1.1.1, glibc 2.31
#   stable          Debian 13: CPython 3.13, PyPy 3.11, OpenSSL 3.5
#   testing         CPython 3.14, the 3.15 debug build (-X dev -W error; valgrind), PyPy, OpenSSL 3.6
#   stable-nogcc    Debian 13 without a C compiler or the Python headers
#   bullseye-arm64  Debian 11, aarch64, under qemu-user emulation
# (bullseye stable testing stable-nogcc bullseye-arm64 by default).  Chroots live
# under $AIA_EXT_CHROOTS (default /var/tmp/aia-ext-chroots) and are reused: a
# second run only refreshes their packages when the package list below changed.
#
# Testing (the default): each row installs the package as the row says
# (debian_row.sh) from --wheels (a directory of wheels) and --sdist, or the
# checkout itself, then runs the README's test command.  Each row prints its
# interpreter and OpenSSL, then the result; the script fails when any row fails.
# --build: in each chroot, build the abi3 wheel from the sdist with that
# Debian's old glibc, repair it with auditwheel to manylinux_2_17 (refused if it
# needs newer symbols) and copy it to OUTDIR (debian_build.sh).
# Mounts are undone on every exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHROOTS=${AIA_EXT_CHROOTS:-/var/tmp/aia-ext-chroots}
MIRROR=${AIA_EXT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
WHEELS="" SDIST="" BUILD=""
while [ $# -gt 0 ]; do
  case $1 in
    --wheels) WHEELS=$(realpath "$2"); shift 2 ;;
    --sdist) SDIST=$(realpath "$2"); shift 2 ;;
    --build) mkdir -p "$2"; BUILD=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bullseye stable testing stable-nogcc bullseye-arm64)
if [ -n "$BUILD" ] && [ -z "$SDIST" ]; then
  echo "--build needs --sdist" >&2
  exit 2
fi

if [ "$(id -u)" != 0 ]; then
  echo "debian.sh needs root (debootstrap, chroot, mount)" >&2
  exit 2
fi

codename() {  # the Debian suite a chroot is made from
  case $1 in
    bullseye|bullseye-arm64) echo bullseye ;;
    stable|stable-nogcc) echo stable ;;
    *) echo "$1" ;;
  esac
}
arch() {
  case $1 in *-arm64) echo arm64 ;; *) echo amd64 ;; esac
}

# What each chroot installs, and the rows it runs: "INTERPRETER INSTALL [MODE]"
# (.ci/debian_row.sh says what INSTALL and MODE mean).
packages() {
  local common="ca-certificates gcc libc6-dev libssl-dev netbase openssl"
  case $1 in
    bullseye|bullseye-arm64) echo "$common python3 python3-dev python3-venv" ;;
    stable) echo "$common python3 python3-dev python3-venv pypy3 pypy3-dev pypy3-venv" ;;
    testing) echo "$common python3.14 python3.14-dev python3.14-venv python3.15 python3.15-dev" \
                  "python3.15-venv python3.15-dbg pypy3 pypy3-dev pypy3-venv valgrind" ;;
    # No compiler and no Python headers: what a slim container has.
    stable-nogcc) echo "ca-certificates netbase openssl python3 python3-venv" ;;
    *) echo "unknown chroot: $1" >&2; return 2 ;;
  esac
}
rows() {
  case $1 in
    bullseye) echo "python3 binary" ;;
    stable) printf '%s\n' "python3 wheel" "pypy3 pick" ;;
    testing) printf '%s\n' "python3.14 wheel" "pypy3 pick nocrypto" "python3.15-dbg sdist debug" ;;
    stable-nogcc) echo "python3 nocompiler" ;;
    # Emulated (about ten times slower): the native engine on a named subset.
    bullseye-arm64) echo "python3 binary subset" ;;
  esac
}

MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -R -l "${MOUNTS[$i]}" 2>/dev/null || true
  done
  MOUNTS=()
}
trap cleanup EXIT INT TERM

bind() {  # bind SOURCE TARGET [ro]
  mkdir -p "$2"
  mount --rbind "$1" "$2"
  mount --make-rslave "$2"
  MOUNTS+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

# pip inside the chroot must reach the package index the host uses, with the
# host's configuration and CA bundle; local file:// indexes and find-links
# directories are bound at the same path (an index with its files).  No index address is written here.
PIP_FILES=(/etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip")
host_paths() {
  { env | grep '^PIP_' | cut -d= -f2-; cat "${PIP_FILES[@]}" 2>/dev/null || true
    find "${PIP_FILES[@]}" -type f -exec cat {} + 2>/dev/null || true; } \
  | tr ' \t=' '\n\n\n' | sed -n 's#^file://##; s#^\(/[^ ]*\)$#\1#p' \
  | while read -r path; do
      case $path in /etc/*|/usr/*|/root/*|/home/*) continue ;; esac
      # A PEP 503 index's pages link to files beside "simple": bind its parent.
      case $path in */simple|*/simple/) path=$(dirname "$path") ;; esac
      [ -d "$path" ] && echo "$path"
    done | sort -u
}
ca_bundles() {
  local var
  for var in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" \
             "$(pip config get global.cert 2>/dev/null || true)"; do
    [ -n "$var" ] && [ -f "$var" ] && echo "$var"
  done | sort -u
}

enter() {  # enter DIR COMMAND...: run in the chroot with a clean environment
  local dir=$1; shift
  local env=(HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
             DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1)
  local line
  while IFS= read -r line; do env+=("$line"); done < <(env | grep -E '^(PIP_|SSL_CERT_|REQUESTS_CA_BUNDLE=)' || true)
  chroot "$dir" /usr/bin/env -i "${env[@]}" "$@"
}

binfmt_for_arm64() {  # qemu-user for aarch64 binaries, registered with binfmt_misc
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    if ! command -v qemu-aarch64-static >/dev/null 2>&1 || ! command -v update-binfmts >/dev/null 2>&1; then
      { apt-get install -y -qq qemu-user-static binfmt-support >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq qemu-user-static binfmt-support >/dev/null; }; }
    fi
    [ -e /proc/sys/fs/binfmt_misc/register ] \
      || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
    || { echo "qemu-aarch64 could not be registered with binfmt_misc" >&2; return 1; }
}

prepare() {  # prepare CHROOT: create or reuse the chroot, install its packages, mount
  local suite=$1 dir="$CHROOTS/$1" wanted stamp architecture
  wanted=$(packages "$suite")
  architecture=$(arch "$suite")
  if [ "$architecture" = arm64 ]; then binfmt_for_arm64 || return 1; fi
  # debootstrap removes /debootstrap when it has finished: a chroot that still
  # has it was interrupted and is made again.
  if [ ! -x "$dir/usr/bin/apt-get" ] || [ -d "$dir/debootstrap" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
      apt-get install -y -qq debootstrap >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    fi
    echo "creating the $suite chroot in $dir"
    rm -rf "$dir"
    mkdir -p "$CHROOTS"
    if [ "$architecture" = arm64 ]; then
      # Two stages: the second runs the foreign binaries under qemu.
      { debootstrap --arch=arm64 --variant=minbase --foreign "$(codename "$suite")" "$dir" "$MIRROR" \
          && cp "$(command -v qemu-aarch64-static)" "$dir/usr/bin/" \
          && chroot "$dir" /debootstrap/debootstrap --second-stage; } \
        > "$CHROOTS/$suite.debootstrap.log" 2>&1 \
        || { tail -n 20 "$CHROOTS/$suite.debootstrap.log" >&2; return 1; }
    else
      debootstrap --variant=minbase "$(codename "$suite")" "$dir" "$MIRROR" \
        > "$CHROOTS/$suite.debootstrap.log" 2>&1 \
        || { tail -n 20 "$CHROOTS/$suite.debootstrap.log" >&2; return 1; }
    fi
  fi
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  # The tests name their servers "localhost"; minbase may not write /etc/hosts.
  grep -qs '^127\.0\.0\.1[[:space:]].*localhost' "$dir/etc/hosts" \
    || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >> "$dir/etc/hosts"
  mkdir -p "$dir/proc" "$dir/sys" "$dir/dev"
  mount -t proc proc "$dir/proc"; MOUNTS+=("$dir/proc")
  bind /sys "$dir/sys"
  bind /dev "$dir/dev"
  stamp="$dir/var/lib/aia-ext-packages"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "installing into the $suite chroot: $wanted"
    # testing's Release file may be older than its Valid-Until on a mirror snapshot.
    # shellcheck disable=SC2086
    enter "$dir" sh -c "apt-get -o Acquire::Check-Valid-Until=false update -qq \
      && apt-get install -y -qq --no-install-recommends $wanted" > "$CHROOTS/$suite.apt.log" 2>&1 \
      || { tail -n 20 "$CHROOTS/$suite.apt.log" >&2; return 1; }
    echo "$wanted" > "$stamp"
  fi
  local path bundle
  for path in "${PIP_FILES[@]}"; do
    if [ -e "$path" ]; then mkdir -p "$dir$(dirname "$path")"; cp -a "$path" "$dir$(dirname "$path")/"; fi
  done
  while read -r bundle; do
    [ -n "$bundle" ] || continue
    mkdir -p "$dir$(dirname "$bundle")"; cp -L "$bundle" "$dir$bundle"
  done < <(ca_bundles)
  while read -r path; do
    [ -n "$path" ] && bind "$path" "$dir$path" ro
  done < <(host_paths)
  # The project: its files as git sees them (tests and their data), plus artifacts.
  rm -rf "$dir/aia-ext"; mkdir -p "$dir/aia-ext/src" "$dir/aia-ext/dist"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) \
    | tar -xf - -C "$dir/aia-ext/src"
  [ -z "$WHEELS" ] || cp "$WHEELS"/*.whl "$dir/aia-ext/dist/"
  [ -z "$SDIST" ] || cp "$SDIST" "$dir/aia-ext/dist/"
}

status=0
results=()
for suite in "${SUITES[@]}"; do
  start=$SECONDS
  printf '\n=== [%5ss] Debian %s: chroot\n' "$SECONDS" "$suite"
  if ! prepare "$suite"; then
    results+=("$suite: the chroot could not be prepared"); status=1; cleanup; continue
  fi
  if [ -n "$BUILD" ]; then
    printf '\n=== [%5ss] Debian %s: building the wheel\n' "$SECONDS" "$suite"
    if enter "$CHROOTS/$suite" bash /aia-ext/src/.ci/debian_build.sh 2>&1 | tee "$CHROOTS/$suite-build.log"; then
      cp "$CHROOTS/$suite"/aia-ext/wheelhouse/*.whl "$BUILD/"
      results+=("Debian $suite build: $(cd "$CHROOTS/$suite/aia-ext/wheelhouse" && ls -- *.whl)")
    else
      results+=("Debian $suite build: FAILED (log: $CHROOTS/$suite-build.log)"); status=1
    fi
    cleanup
    printf '=== Debian %s took %ss\n' "$suite" "$((SECONDS - start))"
    continue
  fi
  while read -r python install mode; do
    printf '\n=== [%5ss] Debian %s: %s (%s)\n' "$SECONDS" "$suite" "$python" "$install"
    log="$CHROOTS/$suite-$python.log"
    if enter "$CHROOTS/$suite" bash /aia-ext/src/.ci/debian_row.sh "$python" "$install" "$mode" 2>&1 | tee "$log"; then
      results+=("Debian $suite $(grep -m1 '^ROW' "$log" | cut -d' ' -f2-)$(grep -m1 '^SUBSET' "$log" | sed 's/^/ /' || true): $(tail -n 1 "$log")")
    else
      results+=("Debian $suite $(grep -m1 '^ROW' "$log" | cut -d' ' -f2- || echo "$python"): FAILED (log: $log)")
      status=1
    fi
  done < <(rows "$suite")
  if [ "$suite" = testing ]; then
    printf '\n=== [%5ss] Debian testing: leak check of our C under valgrind (CPython 3.15 debug build)\n' "$SECONDS"
    if enter "$CHROOTS/$suite" bash -c '. /aia-ext/venv-python3.15-dbg/bin/activate && cd /aia-ext/src && bash benchmarks/valgrind.sh 3' 2>&1 | tee "$CHROOTS/valgrind.log"; then
      results+=("Debian testing CPython 3.15 debug valgrind: $(tail -n 1 "$CHROOTS/valgrind.log")")
    else
      results+=("Debian testing CPython 3.15 valgrind: FAILED"); status=1
    fi
  fi
  cleanup
  printf '=== Debian %s took %ss\n' "$suite" "$((SECONDS - start))"
done
printf '\n=== Debian rows\n'
printf '%s\n' "${results[@]}"
exit "$status"
