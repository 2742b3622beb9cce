#!/usr/bin/env bash
# Make a self-signed TLS certificate and key for a test or a small deployment, and print the
# SHA-256 fingerprint that clients pin.
#
#   scripts/make-cert.sh [-d DAYS] [OUT_DIR] [NAME_OR_IP ...]
#
# OUT_DIR defaults to ./tls; it receives server.crt and server.key (mode 600). The certificate
# names localhost, 127.0.0.1 and ::1 plus every NAME_OR_IP given, so clients that verify
# against it as a CA file (instead of pinning) can check the host name too.
# Then: meeting-server --tls-cert OUT_DIR/server.crt --tls-key OUT_DIR/server.key
set -euo pipefail

days=825
if [ "${1:-}" = "-d" ]; then
    days=$2
    shift 2
fi
out=${1:-tls}
[ $# -gt 0 ] && shift

command -v openssl >/dev/null || { echo "make-cert: openssl is not installed" >&2; exit 1; }

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
        san="$san,IP:$name"
    else
        san="$san,DNS:$name"
    fi
done
cn=${1:-localhost}

mkdir -p "$out"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -nodes \
    -days "$days" -subj "/CN=$cn/O=Real-Time Meeting" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$out/server.key" -out "$out/server.crt" 2>/dev/null
chmod 644 "$out/server.crt"

fingerprint=$(openssl x509 -in "$out/server.crt" -noout -fingerprint -sha256 | cut -d= -f2)
echo "certificate: $out/server.crt"
echo "key:         $out/server.key"
echo "names:       $san"
echo "valid for:   $days days"
echo "SHA-256 fingerprint (pin this in the client):"
echo "$fingerprint"
