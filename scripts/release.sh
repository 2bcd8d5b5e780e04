#!/usr/bin/env bash
# make release / make deb: release tarballs and Debian packages, in $OUT (default dist/).
#
#   release.sh [--deb-only] [ARCH...]     ARCH: amd64 arm64 arm (default: all three)
#
# Per architecture: static binaries (CGO off, -trimpath, version and commit stamped),
#   meshnode-VERSION-linux-ARCH.tar.gz   bin/, install.sh, examples/ (configs, systemd units),
#                                        docs, bash completions; ./install.sh installs it
#   meshnode_VERSION_DEBARCH.deb          /usr/bin, systemd units in /usr/lib/systemd/system,
#                                        example configs (conffiles) in /etc/meshnode and
#                                        /etc/mesh-cert, docs, completions; the mesh-cert
#                                        user for the CA service
# VERSION and COMMIT come from the Makefile (scripts/version.sh). Needs go, tar, dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

GO=${GO:-go}
OUT=${OUT:-dist}
VERSION=${VERSION:-$(bash scripts/version.sh)}
COMMIT=${COMMIT:-$(bash scripts/version.sh commit)}
PKG=github.com/meshnode/meshnode/internal/version
LDFLAGS="-s -w -X $PKG.version=$VERSION -X $PKG.commit=$COMMIT"

debonly=
if [ "${1:-}" = --deb-only ]; then debonly=1; shift; fi
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 arm)

case $VERSION in [0-9]*) ;; *) echo "release: VERSION $VERSION must start with a digit (Debian)" >&2; exit 1 ;; esac
command -v dpkg-deb >/dev/null || { echo "release: dpkg-deb is missing (apt-get install dpkg)" >&2; exit 1; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
W=$(mktemp -d -t meshnode-release.XXXXXX)
trap 'rm -rf "$W"' EXIT
# Reproducible archives: every file dated the commit's time.
EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)

build() { # build GOARCH DIR
  local goarm=
  [ "$1" = arm ] && goarm=7
  CGO_ENABLED=0 GOOS=linux GOARCH=$1 GOARM=$goarm "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$2/" ./cmd/meshnode ./cmd/mesh-cert
}

# Completion scripts do not depend on the architecture: made once, by this machine's build.
build "$("$GO" env GOARCH)" "$W/host"
mkdir -p "$W/completions"
for b in meshnode mesh-cert; do "$W/host/$b" completion bash >"$W/completions/$b.bash"; done

for arch in "${arches[@]}"; do
  case $arch in
    amd64) debarch=amd64; tarch=amd64 ;;
    arm64) debarch=arm64; tarch=arm64 ;;
    arm) debarch=armhf; tarch=armv7 ;;
    *) echo "release: unknown architecture $arch (amd64, arm64, arm)" >&2; exit 1 ;;
  esac
  name=meshnode-$VERSION-linux-$tarch
  t=$W/$name
  mkdir -p "$t/bin" "$t/docs"
  build "$arch" "$t/bin"
  cp -r examples "$t/"
  cp README.md "$t/"
  cp docs/*.md "$t/docs/"
  cp -r "$W/completions" "$t/"
  cp scripts/install.sh "$t/install.sh"
  if [ -z "$debonly" ]; then
    tar -C "$W" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" -czf "$OUT/$name.tar.gz" "$name"
    echo "$OUT/$name.tar.gz"
  fi

  # The Debian package: the tarball's install.sh into a staging root, plus the control files.
  r=$W/deb-$arch
  DESTDIR=$r PREFIX=/usr SYSCONFDIR=/etc bash "$t/install.sh" >/dev/null
  mkdir -p "$r/DEBIAN"
  (cd "$r" && find etc -type f | sort | sed 's|^|/|') >"$r/DEBIAN/conffiles"
  cat >"$r/DEBIAN/control" <<CONTROL
Package: meshnode
Version: $VERSION
Architecture: $debarch
Maintainer: meshnode developers <meshnode@users.noreply.github.com>
Section: net
Priority: optional
Depends: adduser
Installed-Size: $(du -sk --exclude=DEBIAN "$r" | cut -f1)
Description: peer-to-peer overlay network compatible with Nebula 1.6
 meshnode connects hosts over encrypted peer-to-peer tunnels. A host's identity is a
 certificate signed by the network's own CA, carrying its overlay IP and groups;
 lighthouses help hosts find each other through NAT; a stateful firewall filters by
 the peer's groups. It speaks Nebula 1.6's certificate format and wire protocol.
 .
 This package contains the daemon (meshnode, run as meshnode@NAME reading
 /etc/meshnode/NAME.yml) and the certificate tool and CA service (mesh-cert,
 run as mesh-cert-serve reading /etc/mesh-cert/ca.yml). No service is enabled.
CONTROL
  cat >"$r/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
	# The CA service runs as mesh-cert, owner of /etc/mesh-cert (CA key) and its state.
	if ! getent passwd mesh-cert >/dev/null; then
		adduser --system --group --quiet --home /var/lib/mesh-cert --no-create-home mesh-cert
	fi
	if ! dpkg-statoverride --list /etc/mesh-cert >/dev/null 2>&1; then
		dpkg-statoverride --update --add mesh-cert mesh-cert 0700 /etc/mesh-cert
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null 2>&1 || true
	fi
fi
exit 0
POSTINST
  cat >"$r/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop mesh-cert-serve.service 'meshnode@*.service' >/dev/null 2>&1 || true
fi
exit 0
PRERM
  cat >"$r/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = purge ] && dpkg-statoverride --list /etc/mesh-cert >/dev/null 2>&1; then
	dpkg-statoverride --remove /etc/mesh-cert
fi
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
exit 0
POSTRM
  chmod 0755 "$r/DEBIAN/postinst" "$r/DEBIAN/prerm" "$r/DEBIAN/postrm"
  find "$r" -exec touch -h -d "@$EPOCH" {} +
  deb=$OUT/meshnode_${VERSION}_$debarch.deb
  SOURCE_DATE_EPOCH=$EPOCH dpkg-deb --root-owner-group -Zxz --build "$r" "$deb" >/dev/null
  echo "$deb"
done
