#!/usr/bin/env bash
# Installs the system packages the tests and the demo need (Debian). Idempotent; the apt part
# needs root. nebula/nebula-cert 1.6.1 are the interop ground truth for v1; iperf3 and ping
# drive traffic tests; iproute2 and nftables build the network-namespace test hosts.
#
# It also builds nebula and nebula-cert 1.11.1 (the ground truth for v2 certificates) with
# go install into $MESHNODE_TOOLS/nebula-1.11.1 (default: .tools in the repo), where
# internal/testenv.RequireNebulaV2 finds them; Debian's 1.6.1 stays on PATH.
set -euo pipefail
need=()
command -v nebula-cert >/dev/null || need+=(nebula)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ping >/dev/null || need+=(iputils-ping)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v make >/dev/null || need+=(make)
command -v sha256sum >/dev/null || need+=(coreutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

nebula_v2=1.11.1
tools=${MESHNODE_TOOLS:-$(cd "$(dirname "$0")/.." && pwd)/.tools}
dest=$tools/nebula-$nebula_v2
for bin in nebula nebula-cert; do
  if [ -x "$dest/$bin" ] && "$dest/$bin" -version 2>/dev/null | grep -q "$nebula_v2"; then
    continue
  fi
  command -v go >/dev/null || { echo "install-deps: go is needed to build $bin $nebula_v2" >&2; exit 1; }
  mkdir -p "$dest"
  GOBIN=$dest go install "github.com/slackhq/nebula/cmd/$bin@v$nebula_v2"
done
