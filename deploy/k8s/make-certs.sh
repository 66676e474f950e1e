#!/usr/bin/env bash
# Make the mTLS material for buildkitd (server) and buildctl (client) with openssl, then print the
# kubectl commands that load it into the cluster. Run it again (and re-apply) to rotate.
#
# Usage: deploy/k8s/make-certs.sh [-o OUT_DIR] [-d DAYS] [EXTRA_SAN...]
#   OUT_DIR   where to write (default ./.certs); created mode 0700, keys mode 0600
#   DAYS      validity of all three certificates (default 365)
#   EXTRA_SAN additional DNS names or IPs for the daemon certificate (e.g. 127.0.0.1 for port-forwarding)
#
# Writes OUT_DIR/daemon/{ca,cert,key}.pem and OUT_DIR/client/{ca,cert,key}.pem, the key names that
# buildkitd (deploy/builder/etc/buildkit/buildkitd.toml) and resources/builders/tls.py read.
# The CA private key is deleted once both certificates are signed; nothing else can be issued from it.
set -euo pipefail

NAMESPACE=streamable-builders
SERVICE=buildkitd
SERVER_NAME=buildkitd
CLIENT_NAME=streamable-dagster
DAEMON_SECRET=buildkit-daemon-certs
CLIENT_SECRET=buildkit-client-certs

out=./.certs
days=365
while getopts "o:d:h" opt; do
  case "$opt" in
    o) out=$OPTARG ;;
    d) days=$OPTARG ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "$days" =~ ^[0-9]+$ ]] || { echo "make-certs: -d DAYS must be a number, got '$days'" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make-certs: openssl is required" >&2; exit 1; }

umask 077
mkdir -p "$out/daemon" "$out/client"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The daemon certificate must match the name buildctl checks (--tlsservername buildkitd) and the
# per-pod DNS names of the headless service, for clients that dial a pod name without an override.
sans="DNS:${SERVER_NAME},DNS:${SERVICE}.${NAMESPACE}.svc,DNS:*.${SERVICE}.${NAMESPACE}.svc"
sans="${sans},DNS:*.${SERVICE}.${NAMESPACE}.svc.cluster.local"
for extra in "$@"; do
  if [[ "$extra" =~ ^[0-9.]+$ || "$extra" == *:* ]]; then
    sans="${sans},IP:${extra}"
  else
    sans="${sans},DNS:${extra}"
  fi
done

openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca-key.pem"
openssl req -x509 -new -sha256 -days "$days" -key "$work/ca-key.pem" -subj "/CN=streamable buildkit CA" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$work/ca.pem" 2>/dev/null

# issue NAME CN EXTFILE_CONTENT -> $work/NAME-{key,cert}.pem
issue() {
  local name=$1 cn=$2 ext=$3
  openssl ecparam -name prime256v1 -genkey -noout -out "$work/$name-key.pem"
  openssl req -new -sha256 -key "$work/$name-key.pem" -subj "/CN=$cn" -out "$work/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$work/$name.ext"
  openssl x509 -req -sha256 -days "$days" -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -CAcreateserial -extfile "$work/$name.ext" -out "$work/$name-cert.pem" 2>/dev/null
}

issue daemon "$SERVER_NAME" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=${sans}"
issue client "$CLIENT_NAME" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

for side in daemon client; do
  cp "$work/ca.pem" "$out/$side/ca.pem"
  cp "$work/$side-cert.pem" "$out/$side/cert.pem"
  cp "$work/$side-key.pem" "$out/$side/key.pem"
  openssl verify -CAfile "$out/$side/ca.pem" "$out/$side/cert.pem" >/dev/null
done
chmod 0600 "$out"/*/key.pem
chmod 0644 "$out"/*/ca.pem "$out"/*/cert.pem

cat <<EOF
Wrote $out/daemon and $out/client (daemon SANs: ${sans}).
Load them (the keys never leave your machine except into these secrets):
  kubectl -n ${NAMESPACE} create secret generic ${DAEMON_SECRET} --from-file=$out/daemon \\
    --dry-run=client -o yaml | kubectl apply -f -
  # client certificate, read through the API (with deploy/k8s/optional/tls-secret-reader):
  kubectl -n ${NAMESPACE} create secret generic ${CLIENT_SECRET} --from-file=$out/client \\
    --dry-run=client -o yaml | kubectl apply -f -
  # or mounted into Dagster's pods as files instead:
  kubectl -n dagster create secret generic ${CLIENT_SECRET} --from-file=$out/client \\
    --dry-run=client -o yaml | kubectl apply -f -
Then delete $out, and restart the builders to pick up a rotated daemon certificate:
  kubectl -n ${NAMESPACE} rollout restart statefulset/${SERVICE}
EOF
