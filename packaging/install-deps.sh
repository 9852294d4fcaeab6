#!/usr/bin/env bash
# Installs the Debian 12 packages Outpost needs, only those missing.
# Idempotent and quiet: prints nothing when everything is already there.
#   packaging/install-deps.sh [native] [arm64] [armhf] [tools] [fuzz]
set -euo pipefail

sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(native)

native=(build-essential cmake make pkg-config git
        libpaho-mqttpp-dev libpaho-mqtt-dev libssl-dev openssl
        mosquitto mosquitto-clients
        libsqlite3-dev sqlite3
        libboost-dev
        libprotobuf-dev protobuf-compiler
        libmbedtls-dev
        libgtest-dev libgmock-dev
        nlohmann-json3-dev libyaml-cpp-dev
        clang-format clang
        iproute2 procps systemd jq curl)
cross_libs=(libpaho-mqttpp-dev libpaho-mqtt-dev libssl-dev libsqlite3-dev
            libprotobuf-dev libmbedtls-dev)

want=()
add_arch() {
  local arch=$1
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
    need_update=1
  fi
}

need_update=0
for s in "${sets[@]}"; do
  case "$s" in
    native) want+=("${native[@]}") ;;
    arm64)  add_arch arm64; want+=(g++-aarch64-linux-gnu qemu-user binutils-aarch64-linux-gnu)
            for p in "${cross_libs[@]}"; do want+=("$p:arm64"); done ;;
    armhf)  add_arch armhf; want+=(g++-arm-linux-gnueabihf qemu-user binutils-arm-linux-gnueabihf)
            for p in "${cross_libs[@]}"; do want+=("$p:armhf"); done ;;
    tools)  want+=(debhelper dpkg-dev fakeroot lintian valgrind linux-perf python3-yaml adduser) ;;
    fuzz)   want+=(clang libclang-rt-14-dev) ;;  # make fuzz: libFuzzer, sanitizer runtimes
    *) echo "install-deps: unknown set '$s' (native, arm64, armhf, tools, fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [ "${st:0:2}" = "ii" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
