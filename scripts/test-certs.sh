#!/usr/bin/env bash
# Makes certificates for the Python and Node TLS tests in DIR: a private CA (ca.pem), a server
# certificate for 127.0.0.1 and localhost (server.pem, server-key.pem) and a client certificate
# (client.pem, client-key.pem), all signed by that CA, valid two days. Needs openssl.
set -euo pipefail
dir=${1:?usage: test-certs.sh DIR}
cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=lockserver-test-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
issue() { # name subject extensions
  openssl req "${ec[@]}" -keyout "$1-key.pem" -out "$1.csr" -subj "$2" 2>/dev/null
  printf '%b' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out "$1.pem" -days 2 \
    -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server /CN=localhost 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
issue client /CN=test-client 'extendedKeyUsage=clientAuth\n'
