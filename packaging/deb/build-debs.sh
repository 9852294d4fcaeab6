#!/usr/bin/env bash
# Builds Outpost's Debian packages with debhelper (docs/packaging.md).
#
#   packaging/deb/build-debs.sh [options] ARCH...        ARCH: amd64 arm64 armhf
#
#   --out DIR           where the .deb files go (default build/deb)
#   --work DIR          staging dir per arch: DIR/<arch> (default build-pkg-<arch>)
#   --version V         Debian version (default: $DEB_VERSION, else the CMake
#                       project version, OUTPOST_VERSION)
#   --prebuilt-bin DIR  package the binaries in DIR instead of building them
#                       (one ARCH only; the packaging tests reuse the build under test)
#   --agent-only        only outpost-agent (always so for arm64 and armhf)
#   --no-lintian        skip lintian (tests); otherwise any lintian error fails
#   -jN                 parallel compile jobs
#
# Per arch, the staging dir <work>/src holds a copy of packaging/deb/debian
# plus the units, man pages, docs and conffile, and obj/, the CMake build
# (kept between runs, so a second `make deb` only rebuilds what changed).
# dpkg-buildpackage -b -a<arch> then runs dh: CMake on the source tree with
# the distribution's hardening flags (dpkg-buildflags) and, for Arm, the cross
# toolchain of cross/toolchains/ with Debian's multiarch libraries; then the
# dh_* steps (strip, shlibdeps for Depends, systemd snippets, conffiles, ...).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)

out=$src/build/deb
work=
version=${DEB_VERSION:-}
prebuilt=
agent_only=0
lintian=1
jobs=$(nproc)
arches=()

die() { echo "build-debs: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --prebuilt-bin) prebuilt=$2; shift 2 ;;
    --agent-only) agent_only=1; shift ;;
    --no-lintian) lintian=0; shift ;;
    -j*) jobs=${1#-j}; shift ;;
    amd64|arm64|armhf) arches+=("$1"); shift ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
  esac
done
[ ${#arches[@]} -gt 0 ] || die "name at least one architecture (amd64 arm64 armhf)"
[ -z "$prebuilt" ] || [ ${#arches[@]} -eq 1 ] || die "--prebuilt-bin takes one architecture"
[ -z "$prebuilt" ] || prebuilt=$(cd "$prebuilt" && pwd) || die "no such directory: $prebuilt"
for tool in dpkg-buildpackage dh lintian; do
  [ "$tool" = lintian ] && [ $lintian = 0 ] && continue
  command -v "$tool" >/dev/null || die "$tool is missing (packaging/install-deps.sh tools)"
done

# The version of the CMake project (what `outpost-agent version` prints).
project_version=$(sed -n 's/^project(outpost VERSION \([0-9][0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ -n "$project_version" ] || die "no project(outpost VERSION ...) in $src/CMakeLists.txt"
[ -n "$version" ] || version=$project_version
# A Debian version: digits first, then [A-Za-z0-9.+~] (native package: no '-').
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "'$version' is not a usable Debian version"

mkdir -p "$out"
out=$(cd "$out" && pwd)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$src" log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
maintainer=$(sed -n 's/^Maintainer: //p' "$here/debian/control")

built=()
for arch in "${arches[@]}"; do
  case "$arch" in
    amd64) triplet=x86_64-linux-gnu toolchain='' emulator=() ;;
    arm64) triplet=aarch64-linux-gnu toolchain=$src/cross/toolchains/aarch64-linux-gnu.cmake
           emulator=(qemu-aarch64 -L /) ;;
    armhf) triplet=arm-linux-gnueabihf toolchain=$src/cross/toolchains/arm-linux-gnueabihf.cmake
           emulator=(qemu-arm -L /) ;;
  esac
  profiles=
  packages=(outpost-agent)
  if [ $agent_only = 1 ] || [ "$arch" != amd64 ]; then
    profiles=pkg.outpost.nohub
  else
    packages+=(outpost-hub)
  fi
  if [ -n "$toolchain" ] && [ -z "$prebuilt" ]; then
    command -v "$triplet-g++" >/dev/null || die "$triplet-g++ is missing (packaging/install-deps.sh $arch)"
  fi

  stage=${work:+$work/$arch}
  stage=${stage:-$src/build-pkg-$arch}
  mkdir -p "$stage/src"
  stage=$(cd "$stage" && pwd)
  pkgsrc=$stage/src
  # A fresh debian/ every time (debhelper's own state included); obj/ stays.
  rm -rf "$pkgsrc/debian"
  rm -f "$stage"/outpost*.deb "$stage"/outpost_*.changes "$stage"/outpost_*.buildinfo
  cp -a "$here/debian" "$pkgsrc/debian"
  mkdir -p "$pkgsrc/debian/extra"
  cp "$here/agent.yaml" "$here"/man/*.1 "$src/docs/install.md" "$src/docs/deploy.md" "$pkgsrc/debian/extra/"
  cp "$src/packaging/systemd/outpost-agent.service" "$pkgsrc/debian/outpost-agent.service"
  cp "$src/packaging/systemd/outpost-hub.service" "$pkgsrc/debian/outpost-hub.service"
  cp "$src/packaging/systemd/outpost-hub-mosquitto.service" \
     "$pkgsrc/debian/outpost-hub.outpost-hub-mosquitto.service"
  cat > "$pkgsrc/debian/changelog" <<EOF
outpost ($version) unstable; urgency=medium

  * Outpost $project_version, built from commit $commit.

 -- $maintainer  $(date -R -u -d "@$SOURCE_DATE_EPOCH")
EOF

  echo "build-debs: $arch: ${packages[*]} $version${prebuilt:+ (prebuilt $prebuilt)}" >&2
  log=$stage/dpkg-buildpackage.log
  buildopts="parallel=$jobs${DEB_BUILD_OPTIONS:+ $DEB_BUILD_OPTIONS}"
  [ -z "$prebuilt" ] || buildopts="$buildopts noautodbgsym"
  if ! (cd "$pkgsrc" &&
        env OUTPOST_SRC="$src" OUTPOST_TOOLCHAIN="$toolchain" OUTPOST_PREBUILT_BIN="$prebuilt" \
            DEB_BUILD_OPTIONS="$buildopts" \
            dpkg-buildpackage -b -a"$arch" -d -us -uc -nc \
              ${profiles:+--build-profiles=$profiles}) >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    die "$arch: dpkg-buildpackage failed (whole log: $log)"
  fi

  for p in "${packages[@]}"; do
    deb=$stage/${p}_${version}_${arch}.deb
    [ -f "$deb" ] || die "$arch: $deb was not built (log: $log)"
    # The packaged binary must run (under qemu for Arm, with the multiarch
    # loader and libraries: -L /) and be this version.
    check=$(mktemp -d)
    dpkg-deb -x "$deb" "$check"
    bin=$check/usr/bin/$p
    got=$("${emulator[@]}" "$bin" version 2>&1) || { rm -rf "$check"; die "$deb: '$p version' failed: $got"; }
    rm -rf "$check"
    [[ "$got" == *"$project_version"* ]] || die "$deb: '$p version' says '$got', not $project_version"
    cp "$deb" "$out/"
    built+=("$out/$(basename "$deb")")
  done
  # The debug symbols (outpost-*-dbgsym_*.deb, from dh_strip) stay in $stage.
done

if [ $lintian = 1 ]; then
  echo "build-debs: lintian ${built[*]##*/}" >&2
  # Errors fail the build; warnings are printed (docs/packaging.md explains
  # every one that remains). Overrides live in debian/*.lintian-overrides.
  # Run unprivileged when we are root (lintian unpacks untrusted archives).
  as_user=()
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME=/tmp TMPDIR=/tmp)
  fi
  "${as_user[@]}" lintian --fail-on error --tag-display-limit 0 --display-info "${built[@]}" >&2 ||
    die "lintian found errors"
fi
printf '%s\n' "${built[@]}"
