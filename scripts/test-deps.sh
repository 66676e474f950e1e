#!/usr/bin/env bash
# Tools only the tests need, from Debian by package name:
# - a Go toolchain (>= 1.21) that runs Go's archive/tar as the reference for our tar TOC. Debian 12 ships Go 1.19,
#   so take golang-go from bookworm-backports there;
# - Debian's chromium for the browser test of the Dagster UI (tests/ui/), driven by the `playwright` Python package
#   with executable_path=/usr/bin/chromium. Never `playwright install`: it downloads a browser build of its own.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=300)
have_go() {
  command -v go >/dev/null 2>&1 || return 1
  local v; v=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  [ "$(printf '%s\n1.21\n' "$v" | sort -V | head -1)" = "1.21" ]
}
have_chromium() { [ -x /usr/bin/chromium ]; }
have_go && have_chromium && exit 0
. /etc/os-release
# The backports suite comes from the same mirror the machine already uses for bookworm (no host named here).
debian_mirror() {
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}'; } | grep -v -- '-security' | head -n 1
}
if ! have_go && [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { echo "[test-deps] no Debian mirror found in /etc/apt to take bookworm-backports from" >&2; exit 1; }
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" > /etc/apt/sources.list.d/streamable-backports.sources
fi
"${APT[@]}" update -qq
if ! have_go; then
  echo "[test-deps] installing golang-go (Debian)" >&2
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    "${APT[@]}" install -y -qq -t bookworm-backports golang-go >/dev/null
  else
    "${APT[@]}" install -y -qq golang-go >/dev/null
  fi
fi
if ! have_chromium; then
  echo "[test-deps] installing chromium and fonts-liberation (Debian) for the UI browser test" >&2
  "${APT[@]}" install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
have_go || { echo "[test-deps] golang-go >= 1.21 is required for the Go reference tests" >&2; exit 1; }
have_chromium || { echo "[test-deps] /usr/bin/chromium is required for tests/ui" >&2; exit 1; }
