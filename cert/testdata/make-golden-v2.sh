#!/usr/bin/env bash
# Regenerates the v2 golden certificates in cert/testdata/golden-v2 with the real
# nebula-cert 1.11.1 (built by scripts/install-deps.sh), plus `print -json` and `print` of
# each, which the tests compare against. Hosts are signed from fixed public keys (-in-pub),
# and Ed25519 signing is deterministic, so re-signing the same details with the same CA key
# must give the same bytes.
# Usage: bash cert/testdata/make-golden-v2.sh
set -euo pipefail
export TZ=UTC # nebula-cert prints times in the local zone
here=$(cd "$(dirname "$0")" && pwd)
nc=${MESHNODE_TOOLS:-$here/../../.tools}/nebula-1.11.1/nebula-cert
"$nc" -version | grep -q '1.11.1' || { echo "need nebula-cert 1.11.1 at $nc (bash scripts/install-deps.sh)" >&2; exit 1; }
out=$here/golden-v2
rm -rf "$out"
mkdir "$out"
cd "$out"

# v2 CAs: one with every kind of constraint (IPv4 and IPv6), one without any; a v1 CA.
"$nc" ca -version 2 -name "Golden CA v2" -duration 876000h -groups admin,web,ssh \
  -networks 10.99.0.0/16,fd99::/48 -unsafe-networks 10.200.0.0/16,fdc8::/32 \
  -out-crt ca2.crt -out-key ca2.key
"$nc" ca -version 2 -name "Open CA v2" -duration 876000h -out-crt open-ca2.crt -out-key open-ca2.key
"$nc" ca -version 1 -name "Golden CA v1" -duration 876000h -networks 10.99.0.0/16 \
  -out-crt ca1.crt -out-key ca1.key

"$nc" keygen -out-key k1.key -out-pub k1.pub
"$nc" keygen -out-key k2.key -out-pub k2.pub
# Dual stack with groups and unsafe networks, given unsorted (nebula-cert sorts them).
"$nc" sign -ca-crt ca2.crt -ca-key ca2.key -name dual -networks fd99::1/64,10.99.0.1/16 \
  -groups web,admin -unsafe-networks fdc8:0:1::/64,10.200.1.0/24 -in-pub k1.pub -out-crt dual.crt
# IPv6 only, a name with spaces and UTF-8.
"$nc" sign -ca-crt open-ca2.crt -ca-key open-ca2.key -name "v6 hôte" -networks fd42::7/64 \
  -in-pub k2.pub -out-crt v6only.crt
# A v1 host from a v2 CA, and a v2 host from a v1 CA.
"$nc" sign -version 1 -ca-crt ca2.crt -ca-key ca2.key -name v1host -networks 10.99.3.3/16 \
  -groups ssh -in-pub k2.pub -out-crt v1-by-v2.crt
"$nc" sign -ca-crt ca1.crt -ca-key ca1.key -version 2 -name v2host -networks 10.99.4.4/16 \
  -in-pub k1.pub -out-crt v2-by-v1.crt

# A bundle mixing versions, as pki.ca may hold it.
cat ca2.crt ca1.crt open-ca2.crt > bundle.crt
for c in *.crt; do
  "$nc" print -json -path "$c" > "${c%.crt}.json"
  "$nc" print -path "$c" > "${c%.crt}.txt"
done
