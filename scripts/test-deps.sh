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
if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    > /etc/apt/sources.list.d/streamable-backports.sources
fi
echo "[test-deps] installing golang-go (Debian)" >&2
apt-get update -qq
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  apt-get install -y -qq -t bookworm-backports golang-go >/dev/null
else
  apt-get install -y -qq golang-go >/dev/null
fi
have_go || { echo "[test-deps] golang-go >= 1.21 is required for the Go reference tests" >&2; exit 1; }
