#!/usr/bin/env bash
# Download pinned release binaries and verify each one against its pinned SHA-256. Image build time only.
#
# Usage: fetch-release-binaries.sh DEST_DIR COMPONENT...
#   COMPONENT is one of: buildkit containerd runc soci
#
# Read from the environment (the Dockerfiles pass their ARGs through):
#   TARGETARCH               amd64 or arm64 (set by BuildKit for every platform it builds)
#   <C>_VERSION              release version without the leading v, e.g. BUILDKIT_VERSION=0.32.2
#   <C>_SHA256_AMD64/_ARM64  SHA-256 of that release asset for that architecture
#   RELEASES_BASE_URL        default https://github.com; point it at a mirror with the same path layout
# <C> is BUILDKIT, CONTAINERD, RUNC or SOCI.
#
# Fails (non-zero, one line naming the build argument or asset) when a version or checksum is missing,
# malformed or does not match. Nothing is installed unless its checksum matched.
set -euo pipefail
shopt -s inherit_errexit # a failing $(...) must stop the script, not yield an empty value

die() {
  echo "fetch-release-binaries: $*" >&2
  exit 1
}

[ "$#" -ge 2 ] || die "usage: $0 DEST_DIR COMPONENT..."
dest=$1
shift

arch=${TARGETARCH:-}
case "$arch" in
  amd64 | arm64) ;;
  *) die "TARGETARCH must be amd64 or arm64, got '${arch}' (build with BuildKit, which sets it per platform)" ;;
esac
arch_upper=$(printf '%s' "$arch" | tr '[:lower:]' '[:upper:]')

base=${RELEASES_BASE_URL:-https://github.com}
case "$base" in
  https://*) proto='=https' ;;
  http://*) proto='=http' ;; # integrity still comes from the pinned checksum
  *) die "RELEASES_BASE_URL must start with https:// or http://, got '${base}'" ;;
esac
base=${base%/}

# The value of build argument $1; dies naming it when unset, empty or not matching regex $2.
build_arg() {
  local name=$1 pattern=$2 value
  value=${!name:-}
  [ -n "$value" ] || die "build argument ${name} is not set; pass --build-arg ${name}=... (see deploy/README.md, 'Pinned versions')"
  [[ "$value" =~ $pattern ]] || die "build argument ${name}='${value}' does not match ${pattern}"
  printf '%s' "$value"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

# fetch COMPONENT ASSET_URL -> path of the verified download
fetch() {
  local component=$1 url=$2 prefix sha file actual
  prefix=$(printf '%s' "$component" | tr '[:lower:]' '[:upper:]')
  sha=$(build_arg "${prefix}_SHA256_${arch_upper}" '^[0-9a-f]{64}$')
  file="$work/${url##*/}"
  curl --fail --silent --show-error --location --proto "$proto" --retry 3 --output "$file" "$url" \
    || die "download of ${component} from ${url} failed"
  actual=$(sha256sum "$file" | cut -d' ' -f1)
  [ "$actual" = "$sha" ] || die "checksum mismatch for ${url##*/}: expected ${sha}, got ${actual} (${prefix}_SHA256_${arch_upper})"
  printf '%s' "$file"
}

# install_from_archive ARCHIVE BINARY... : extract, then install each named binary found exactly once.
install_from_archive() {
  local archive=$1 out found count bin
  shift
  out="$work/x-${archive##*/}"
  mkdir -p "$out"
  tar -xzf "$archive" -C "$out"
  for bin in "$@"; do
    found=$(find "$out" -type f -name "$bin")
    count=$(printf '%s' "$found" | grep -c . || true)
    [ "$count" -eq 1 ] || die "${archive##*/} holds ${count} files named ${bin}, expected exactly 1"
    install -m 0755 "$found" "$dest/$bin"
  done
}

for component in "$@"; do
  case "$component" in
    buildkit)
      v=$(build_arg BUILDKIT_VERSION '^[0-9]+\.[0-9]+\.[0-9]+$')
      f=$(fetch buildkit "$base/moby/buildkit/releases/download/v$v/buildkit-v$v.linux-$arch.tar.gz")
      install_from_archive "$f" buildctl buildkitd
      ;;
    containerd)
      v=$(build_arg CONTAINERD_VERSION '^[0-9]+\.[0-9]+\.[0-9]+$')
      f=$(fetch containerd "$base/containerd/containerd/releases/download/v$v/containerd-static-$v-linux-$arch.tar.gz")
      install_from_archive "$f" containerd containerd-shim-runc-v2 ctr
      ;;
    runc)
      v=$(build_arg RUNC_VERSION '^[0-9]+\.[0-9]+\.[0-9]+$')
      f=$(fetch runc "$base/opencontainers/runc/releases/download/v$v/runc.$arch")
      install -m 0755 "$f" "$dest/runc"
      ;;
    soci)
      v=$(build_arg SOCI_VERSION '^[0-9]+\.[0-9]+\.[0-9]+$')
      f=$(fetch soci "$base/awslabs/soci-snapshotter/releases/download/v$v/soci-snapshotter-$v-linux-$arch.tar.gz")
      install_from_archive "$f" soci soci-snapshotter-grpc
      ;;
    *) die "unknown component '${component}' (expected buildkit, containerd, runc or soci)" ;;
  esac
  echo "fetch-release-binaries: ${component} ${v} (${arch}) verified"
done
