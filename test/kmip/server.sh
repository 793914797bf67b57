#!/usr/bin/env bash
# A throwaway PyKMIP server on 127.0.0.1 for the integration tests, with its own PKI.
#
#   test/kmip/server.sh install        install python3-pykmip if missing (needs root)
#   test/kmip/server.sh start DIR PORT [DB]  start a server; prints KEY=VALUE lines, also in
#                                      DIR/kmip.env; DB: another server's database to share
#                                      (servers that share one serve the same keys)
#   test/kmip/server.sh stop DIR       kill that server (it is throwaway: no graceful shutdown)
#
# DIR receives certs/ (CA, server and client certificates, key stores in PEM, JKS and PKCS12),
# server.conf, the server's SQLite database and its log. PyKMIP must run on Debian's python3.
set -euo pipefail

PY=/usr/bin/python3

install() {
  if "$PY" -c 'import kmip.services.server' >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    echo "PyKMIP (Debian package python3-pykmip) is not installed and this user cannot install it:" >&2
    echo "  run as root: apt-get update && apt-get install -y python3-pykmip" >&2
    exit 1
  fi
  echo "installing python3-pykmip for the KMIP integration tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q python3-pykmip >&2 || { apt-get update -q >&2 && apt-get install -y -q python3-pykmip >&2; }
}

# leaf NAME CN EXTENSIONS [CA]: a key and a certificate signed by CA (default: ca).
leaf() {
  local name=$1 cn=$2 ext=$3 ca=${4:-ca}
  openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=$cn" \
    -keyout "$CERTS/$name.key" -out "$CERTS/$name.csr" 2>/dev/null
  printf '%b' "$ext" > "$CERTS/$name.ext"
  openssl x509 -req -in "$CERTS/$name.csr" -CA "$CERTS/$ca.crt" -CAkey "$CERTS/$ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$CERTS/$name.ext" -out "$CERTS/$name.crt" 2>/dev/null
  rm -f "$CERTS/$name.csr" "$CERTS/$name.ext"
}

root_ca() {
  openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 30 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$CERTS/$1.key" -out "$CERTS/$1.crt" 2>/dev/null
}

pki() {
  [ -s "$CERTS/client.jks" ] && return 0
  mkdir -p "$CERTS"
  root_ca ca "sstable-tde test CA"
  root_ca other-ca "some other CA"
  leaf server localhost "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
  # PyKMIP wants clientAuth in the client certificate; its CN is the owner of the keys made.
  leaf client sstable-tde-test "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  leaf client-noeku sstable-tde-test-noeku "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
  leaf stranger sstable-tde-stranger "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n" other-ca
  chmod 600 "$CERTS"/*.key

  # Key and trust stores, made the ways the DSE documentation makes them.
  openssl pkcs12 -export -passout pass:storepass -inkey "$CERTS/client.key" -in "$CERTS/client.crt" \
    -out "$CERTS/client.p12"
  openssl pkcs12 -export -nokeys -passout pass:storepass -in "$CERTS/ca.crt" -out "$CERTS/trust-openssl.pfx"
  if command -v keytool >/dev/null; then
    keytool -importkeystore -noprompt -srcstoretype PKCS12 -srckeystore "$CERTS/client.p12" -srcstorepass storepass \
      -deststoretype jks -destkeystore "$CERTS/client.jks" -deststorepass storepass >/dev/null 2>&1
    keytool -importcert -noprompt -alias rootca -file "$CERTS/ca.crt" -storetype jks \
      -keystore "$CERTS/trust.jks" -storepass storepass >/dev/null 2>&1
    keytool -importkeystore -noprompt -srckeystore "$CERTS/trust.jks" -srcstorepass storepass \
      -deststoretype pkcs12 -destkeystore "$CERTS/trust-keytool.pfx" -deststorepass storepass >/dev/null 2>&1
  fi
}

start() {
  local dir=$1 port=$2 db=${3:-}
  mkdir -p "$dir/policies"
  dir=$(cd "$dir" && pwd)
  CERTS=$dir/certs
  pki
  cat > "$dir/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$port
certificate_path=$CERTS/server.crt
key_path=$CERTS/server.key
ca_path=$CERTS/ca.crt
auth_suite=TLS1.2
policy_path=$dir/policies
enable_tls_client_auth=True
tls_cipher_suites=TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384
logging_level=INFO
database_path=${db:-$dir/pykmip.db}
CONF
  # setsid: the server and its helper processes form one group, which stop kills.
  PYTHONHASHSEED=0 setsid "$PY" -W ignore /usr/bin/pykmip-server -f "$dir/server.conf" -l "$dir/server.log" \
    </dev/null >"$dir/server.out" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/server.pid"
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "the KMIP server exited at start:" >&2; tail -n 20 "$dir/server.out" "$dir/server.log" >&2 || true; exit 1
    fi
    if grep -q "Starting connection service" "$dir/server.log" 2>/dev/null &&
       (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      cat > "$dir/kmip.env" <<ENV
KMIP_PORT=$port
KMIP_DIR=$dir
KMIP_CERTS=$CERTS
KMIP_PID=$pid
ENV
      cat "$dir/kmip.env"
      return 0
    fi
    sleep 0.2
  done
  echo "the KMIP server did not become ready in 20 s:" >&2; tail -n 20 "$dir/server.log" >&2 || true
  stop "$dir"; exit 1
}

stop() {
  local pid
  pid=$(cat "$1/server.pid" 2>/dev/null) || return 0
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$1/server.pid"
}

case "${1:-}" in
  install) install ;;
  start) install; start "$2" "$3" "${4:-}" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 install | start DIR PORT [DB] | stop DIR" >&2; exit 2 ;;
esac
