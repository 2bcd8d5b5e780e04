#!/usr/bin/env bash
# Installs the system packages the tests and the demo need (Debian). Idempotent; needs root.
# nebula/nebula-cert 1.6.1 are the interop ground truth; iperf3 and ping drive traffic tests;
# iproute2 and nftables build the network-namespace test hosts.
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
