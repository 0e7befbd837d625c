#!/usr/bin/env bash
# The stack's own certificate authority, and server certificates signed by it, for the
# secured services (Kafka's SASL_SSL listener, PostgreSQL's TLS).
#
#   stack/tls.sh DIR NAME [SAN ...]
#
# Creates DIR/ca.crt + DIR/ca.key once, then DIR/NAME.crt + DIR/NAME.key (a server
# certificate for the SANs; default: DNS:localhost, IP:127.0.0.1) unless they exist.
# Idempotent: a second call changes nothing, so clients keep trusting the same CA.
set -euo pipefail
dir="$1" name="$2"
shift 2
sans=("$@")
((${#sans[@]})) || sans=(DNS:localhost IP:127.0.0.1)
mkdir -p "$dir"
umask 077
if [[ ! -s "$dir/ca.crt" ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=tokendist stack CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
fi
if [[ ! -s "$dir/$name.crt" ]]; then
  san=$(IFS=,; echo "${sans[*]}")
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 825 -out "$dir/$name.crt" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
  rm -f "$dir/$name.csr"
fi
chmod 644 "$dir/ca.crt" "$dir/$name.crt"
