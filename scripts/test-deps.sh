#!/usr/bin/env bash
# Tools only the tests need: a Go toolchain (>= 1.21) that runs Go's archive/tar as the reference
# for our tar TOC. Debian 12 ships Go 1.19, so take golang-go from bookworm-backports there.
set -euo pipefail
have_go() {
  command -v go >/dev/null 2>&1 || return 1
  local v; v=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  [ "$(printf '%s\n1.21\n' "$v" | sort -V | head -1)" = "1.21" ]
}
have_go && exit 0
export DEBIAN_FRONTEND=noninteractive
. /etc/os-release
# The backports suite comes from the same mirror the machine already uses for bookworm (no host named here).
debian_mirror() {
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}'; } | grep -v -- '-security' | head -n 1
}
if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { echo "[test-deps] no Debian mirror found in /etc/apt to take bookworm-backports from" >&2; exit 1; }
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" > /etc/apt/sources.list.d/streamable-backports.sources
fi
echo "[test-deps] installing golang-go (Debian)" >&2
apt-get update -qq
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  apt-get install -y -qq -t bookworm-backports golang-go >/dev/null
else
  apt-get install -y -qq golang-go >/dev/null
fi
have_go || { echo "[test-deps] golang-go >= 1.21 is required for the Go reference tests" >&2; exit 1; }
