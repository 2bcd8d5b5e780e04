#!/usr/bin/env bash
# Run by TestDebianPackageInstallsAndRunsAMesh (e2e/package_test.go) under
# `unshare --mount --propagation private`: installs the .deb with dpkg into this mount
# namespace only (overlays on /usr, /etc and /var whose writable layers live on a tmpfs, so
# the machine's own /usr, /etc and dpkg database never change), then runs a three-host mesh
# from the installed binaries and the installed meshnode@.service command lines, and the
# README's demo with the installed binaries. Namespaces and daemons are removed on exit;
# everything else vanishes with the mount namespace.
#
#   package-install.sh DEB REPO
set -euo pipefail
DEB=$1 REPO=$2
say() { printf '== %s\n' "$*"; }

S=$(mktemp -d -t meshnode-pkgroot.XXXXXX)
mount -t tmpfs -o mode=0700 meshnode-pkg "$S"
for d in usr etc var; do
  mkdir -p "$S/$d/upper" "$S/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$S/$d/upper,workdir=$S/$d/work" "/$d"
done
# Network namespace handles and the daemons' control sockets stay private as well.
mkdir -p /run/netns /run/meshnode
mount -t tmpfs tmpfs /run/netns
mount -t tmpfs tmpfs /run/meshnode

say "install"
[ ! -e /usr/bin/meshnode ] || { echo "meshnode is already installed on this machine; the test needs a clean /usr/bin"; exit 1; }
dpkg -i "$DEB"
dpkg-query -W -f='${Package} ${Version} ${Status}\n' meshnode
getent passwd mesh-cert
stat -c 'etc-mesh-cert %U %a' /etc/mesh-cert
stat -c 'etc-meshnode %U %a' /etc/meshnode

say "versions"
/usr/bin/meshnode version
/usr/bin/meshnode -version
/usr/bin/mesh-cert version
/usr/bin/mesh-cert -version
bash -c 'source /usr/share/bash-completion/completions/meshnode && complete -p meshnode'

UNITS=/usr/lib/systemd/system
if command -v systemd-analyze >/dev/null; then
  say "systemd-analyze verify"
  # Any message (an unknown key, a missing binary) is a failure, not only the exit status.
  out=$(systemd-analyze verify --man=no "$UNITS/meshnode@node.service" "$UNITS/mesh-cert-serve.service" 2>&1) || { echo "$out"; exit 1; }
  [ -z "$out" ] || { echo "$out"; exit 1; }
  echo "units verified"
fi

# unit_cmd KEY INSTANCE: the unit's ExecStartPre/ExecStart line for an instance, as systemd
# would run it (%i replaced).
unit_cmd() { sed -n "s/^$1=//p" "$UNITS/meshnode@.service" | sed "s/%i/$2/g"; }

say "example config through the unit's -test"
cd /etc/meshnode
mesh-cert ca -name "Package test" -out-crt ca.crt -out-key ca.key >/dev/null
mesh-cert sign -ca-crt ca.crt -ca-key ca.key -name web1 -ip 10.42.1.5/16 -groups web -out-crt host.crt -out-key host.key
cp node.yml.example node.yml
$(unit_cmd ExecStartPre node)

say "three hosts from the unit's command line"
NAMES=(alpha beta gamma)
PIDS=() NSS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
SW=mnpkg$$-sw
ip netns add "$SW"; NSS+=("$SW")
ip -n "$SW" link add br0 type bridge && ip -n "$SW" link set br0 up
for i in 0 1 2; do
  n=${NAMES[$i]} ns=mnpkg$$-${NAMES[$i]}
  ip netns add "$ns"; NSS+=("$ns")
  ip -n "$ns" link set lo up
  ip link add eth0 netns "$ns" type veth peer name "p$i" netns "$SW"
  ip -n "$SW" link set "p$i" master br0 && ip -n "$SW" link set "p$i" up
  ip -n "$ns" addr add "198.18.0.$((i + 21))/24" dev eth0 && ip -n "$ns" link set eth0 up
  mesh-cert sign -ca-crt ca.crt -ca-key ca.key -name "$n" -ip "10.42.0.$((i + 1))/24" -groups demo -out-crt "$n.crt" -out-key "$n.key"
  {
    echo "pki: {ca: /etc/meshnode/ca.crt, cert: /etc/meshnode/$n.crt, key: /etc/meshnode/$n.key}"
    echo "static_host_map:"
    for j in 0 1 2; do [ "$j" = "$i" ] || echo "  \"10.42.0.$((j + 1))\": [\"198.18.0.$((j + 21)):4242\"]"; done
    echo "listen: {host: 0.0.0.0, port: 4242}"
    echo "tun: {dev: mesh0}"
    # Several instances on one machine: one control socket each (see the unit's comment).
    echo "control: {path: /run/meshnode/$n.sock}"
    echo "firewall: {outbound: [{port: any, proto: any, host: any}], inbound: [{port: any, proto: any, host: any}]}"
  } >"$n.yml"
  $(unit_cmd ExecStartPre "$n")
  # shellcheck disable=SC2046
  ip netns exec "$ns" $(unit_cmd ExecStart "$n") >"$S/$n.log" 2>&1 &
  PIDS+=($!)
done
for i in 0 1 2; do
  for j in 0 1 2; do
    [ "$i" = "$j" ] && continue
    ok=
    for _ in $(seq 30); do
      if ip netns exec "mnpkg$$-${NAMES[$i]}" ping -n -c 1 -W 1 "10.42.0.$((j + 1))" >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.2
    done
    [ -n "$ok" ] || { tail -n 20 "$S"/*.log; echo "no ping ${NAMES[$i]} -> ${NAMES[$j]}"; exit 1; }
    echo "ping ${NAMES[$i]} -> ${NAMES[$j]} ok"
  done
done
meshnode status -control /run/meshnode/alpha.sock
meshnode ping -c 1 gamma -control /run/meshnode/alpha.sock
cleanup
PIDS=() NSS=()

say "the README's demo with the installed binaries"
cd "$REPO"
MESHNODE=/usr/bin/meshnode MESH_CERT=/usr/bin/mesh-cert DEMO_SKIP_BUILD=1 TRANSFER_MB=${TRANSFER_MB:-10} bash scripts/demo.sh

say "remove and purge"
dpkg --purge meshnode
[ ! -e /usr/bin/meshnode ] && [ ! -e "$UNITS/meshnode@.service" ] && echo "purged"
say "package test passed"
