#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need. Idempotent; installing needs root.
#
#   install-deps.sh           everything `make test` uses: nebula/nebula-cert 1.6.1 (the interop
#                             ground truth for v1), iperf3 and ping (traffic), iproute2 and
#                             nftables (network-namespace hosts), adduser (the .deb's install
#                             test), postgresql (the CA service's shared store: internal/pgtest
#                             runs throwaway clusters), chromium (the CA console's browser
#                             test drives it headless) and zbar-tools (zbarimg decodes its QR
#                             codes); and nebula/nebula-cert 1.11.1 (the ground truth for v2
#                             certificates), built with go install into $MESHNODE_TOOLS/
#                             nebula-1.11.1 (default: .tools in the repo), where
#                             internal/testenv.RequireNebulaV2 finds them
#   install-deps.sh --demo    only what `make demo` uses: iproute2, ping
#   install-deps.sh --if-root as the first, but when not root only say what is missing (the
#                             suites that need it skip outside CI)
#
# Go is not a Debian package at the version needed: when it is missing this says where to get
# it and stops.
set -euo pipefail
mode=${1:-all}
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
  echo "install-deps: Go 1.26 is not on PATH: install it from https://go.dev/dl/ (tar -C /usr/local -xzf go1.26.*.linux-*.tar.gz) and add /usr/local/go/bin to PATH" >&2
  exit 1
fi
need=()
command -v ping >/dev/null || need+=(iputils-ping)
command -v ip >/dev/null || need+=(iproute2)
if [ "$mode" != --demo ]; then
  command -v nebula-cert >/dev/null || need+=(nebula)
  command -v iperf3 >/dev/null || need+=(iperf3)
  command -v nft >/dev/null || need+=(nftables)
  command -v make >/dev/null || need+=(make)
  command -v sha256sum >/dev/null || need+=(coreutils)
  command -v adduser >/dev/null || need+=(adduser)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
  command -v chromium >/dev/null || need+=(chromium)
  command -v zbarimg >/dev/null || need+=(zbar-tools)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    if [ "$mode" != --if-root ]; then
      echo "install-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
      exit 1
    fi
    echo "install-deps: missing ${need[*]}: the suites that need them skip (as root: bash scripts/install-deps.sh)" >&2
  else
    echo "install-deps: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
[ "$mode" != --demo ] || exit 0

nebula_v2=1.11.1
tools=${MESHNODE_TOOLS:-$(cd "$(dirname "$0")/.." && pwd)/.tools}
dest=$tools/nebula-$nebula_v2
for bin in nebula nebula-cert; do
  if [ -x "$dest/$bin" ] && "$dest/$bin" -version 2>/dev/null | grep -q "$nebula_v2"; then
    continue
  fi
  mkdir -p "$dest"
  GOBIN=$dest go install "github.com/slackhq/nebula/cmd/$bin@v$nebula_v2"
done
