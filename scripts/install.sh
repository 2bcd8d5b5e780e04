#!/usr/bin/env bash
# Installs meshnode from a built tree: `make install` runs it from a clone (after make build),
# and a release tarball carries it as ./install.sh next to its bin/ directory.
#
#   PREFIX      /usr/local        binaries in PREFIX/bin, units in PREFIX/lib/systemd/system,
#                                 docs and completions under PREFIX/share
#   SYSCONFDIR  /etc              example configs in SYSCONFDIR/meshnode and SYSCONFDIR/mesh-cert
#   DESTDIR     (empty)           staging root prepended to every path (packaging)
#
# Example configs are installed as *.example, never over a config you wrote; the systemd
# units get the binaries' real path. Nothing is enabled or started.
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
DESTDIR=${DESTDIR:-}
BINDIR=${BINDIR:-$PREFIX/bin}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/meshnode}
COMPDIR=${COMPDIR:-$PREFIX/share/bash-completion/completions}

# The source tree: this script's directory in a tarball, the clone's root from scripts/.
SRC=$(cd "$(dirname "$0")" && pwd)
[ -d "$SRC/examples" ] || SRC=$(dirname "$SRC")
BIN=${BIN:-$SRC/bin}

for b in meshnode mesh-cert; do
  [ -x "$BIN/$b" ] || { echo "install: $BIN/$b is missing; run make build first (or use a release tarball)" >&2; exit 1; }
done

install -d -m 0755 "$DESTDIR$BINDIR" "$DESTDIR$UNITDIR" "$DESTDIR$DOCDIR/examples" "$DESTDIR$COMPDIR"
install -m 0755 "$BIN/meshnode" "$BIN/mesh-cert" "$DESTDIR$BINDIR/"

# The units name /usr/local/bin (the default PREFIX); point them at BINDIR.
for u in "$SRC"/examples/systemd/*.service; do
  sed "s|/usr/local/bin/|$BINDIR/|g" "$u" >"$DESTDIR$UNITDIR/$(basename "$u")"
  chmod 0644 "$DESTDIR$UNITDIR/$(basename "$u")"
done

# /etc/meshnode holds host keys: root only. /etc/mesh-cert holds the CA key; its unit runs as
# the mesh-cert user, to whom the packaging (or the admin, see the unit) gives the directory.
install -d -m 0700 "$DESTDIR$SYSCONFDIR/meshnode" "$DESTDIR$SYSCONFDIR/mesh-cert"
install -m 0600 "$SRC/examples/node.yml" "$DESTDIR$SYSCONFDIR/meshnode/node.yml.example"
install -m 0600 "$SRC/examples/lighthouse.yml" "$DESTDIR$SYSCONFDIR/meshnode/lighthouse.yml.example"
install -m 0600 "$SRC/examples/ca.yml" "$DESTDIR$SYSCONFDIR/mesh-cert/ca.yml.example"

install -m 0644 "$SRC/README.md" "$SRC"/docs/*.md "$DESTDIR$DOCDIR/"
install -m 0644 "$SRC"/examples/*.yml "$DESTDIR$DOCDIR/examples/"

# Shell completion, made by the binaries themselves when they run here (not when
# cross-built: a release tarball carries them pre-made in completions/).
for b in meshnode mesh-cert; do
  if [ -f "$SRC/completions/$b.bash" ]; then
    install -m 0644 "$SRC/completions/$b.bash" "$DESTDIR$COMPDIR/$b"
  elif "$BIN/$b" completion bash >"$DESTDIR$COMPDIR/$b.tmp" 2>/dev/null; then
    mv "$DESTDIR$COMPDIR/$b.tmp" "$DESTDIR$COMPDIR/$b"; chmod 0644 "$DESTDIR$COMPDIR/$b"
  else
    rm -f "$DESTDIR$COMPDIR/$b.tmp"
  fi
done

echo "installed meshnode and mesh-cert in $DESTDIR$BINDIR, units in $DESTDIR$UNITDIR,"
echo "example configs in $DESTDIR$SYSCONFDIR/meshnode and $DESTDIR$SYSCONFDIR/mesh-cert"
