#!/usr/bin/env bash
# Regenerates the golden certificates in cert/testdata/golden with the real nebula-cert
# 1.6.1, plus `nebula-cert print -json` of each, which the tests compare against.
# Usage: bash cert/testdata/make-golden.sh   (needs nebula-cert on PATH)
set -euo pipefail
export TZ=UTC # nebula-cert prints times in the local zone
cd "$(dirname "$0")"
nebula-cert -version | grep -q '1.6.1' || { echo "need nebula-cert 1.6.1" >&2; exit 1; }
out=golden
rm -rf "$out"
mkdir "$out"
cd "$out"

# A CA with every kind of constraint, and one without any.
nebula-cert ca -name "Golden CA" -duration 87600h -groups admin,web,ssh \
  -ips 10.99.0.0/16,192.168.0.0/16 -subnets 10.200.0.0/16,172.16.0.0/12 \
  -out-crt ca.crt -out-key ca.key
nebula-cert ca -name "Open CA" -duration 87600h -out-crt open-ca.crt -out-key open-ca.key

# Hosts: groups and subnets; a bare host; a host whose key was made with keygen.
nebula-cert sign -ca-crt ca.crt -ca-key ca.key -name host1 -ip 10.99.0.1/16 \
  -groups admin,web -subnets 10.200.1.0/24,172.16.5.0/24 -out-crt host1.crt -out-key host1.key
nebula-cert sign -ca-crt ca.crt -ca-key ca.key -name bare -ip 192.168.7.9/24 -duration 1h \
  -out-crt bare.crt -out-key bare.key
nebula-cert keygen -out-key pubhost.key -out-pub pubhost.pub
nebula-cert sign -ca-crt open-ca.crt -ca-key open-ca.key -name "pub host é" -ip 10.1.2.3/8 \
  -groups "a b",c -in-pub pubhost.pub -out-crt pubhost.crt

# A bundle of both CAs, as pki.ca would hold it.
cat ca.crt open-ca.crt > bundle.crt
for c in *.crt; do
  nebula-cert print -json -path "$c" > "${c%.crt}.json"
  nebula-cert print -path "$c" > "${c%.crt}.txt"
done
