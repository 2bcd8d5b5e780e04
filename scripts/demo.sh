#!/usr/bin/env bash
# make demo: a three-host meshnode network on this machine, in network namespaces.
#
# What it does, step by step (run as root; `make demo` first installs iproute2 and ping when
# they are missing, with scripts/install-deps.sh --demo):
#   1. builds bin/meshnode and bin/mesh-cert with make build (skip with DEMO_SKIP_BUILD=1)
#   2. makes a certificate authority and one certificate per host with bin/mesh-cert
#   3. creates three isolated "hosts" (network namespaces) on one virtual switch, with
#      addresses in 198.18.0.0/24 (a range reserved for tests), and starts meshnode in each;
#      there is no lighthouse: every host lists the others in static_host_map
#   4. pings every host from every other host over the encrypted overlay (10.42.0.0/24), and
#      shows what one daemon reports about its tunnels (meshnode status)
#   5. sends 50 MB over TCP through the overlay and compares SHA-256 checksums at both ends
#   6. starts an intruder whose certificate comes from a different CA and shows that no host
#      lets it in
#   7. prints a summary and removes everything it created (also on Ctrl-C or failure)
#
# Nothing leaves the namespaces: no device, address or route is added to the machine itself.
# For testing this script, MESHNODE and MESH_CERT may point at other binaries with the same
# interface (e.g. MESHNODE=nebula MESH_CERT=nebula-cert DEMO_SKIP_BUILD=1).
set -uo pipefail

cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

MESHNODE=${MESHNODE:-bin/meshnode}
MESH_CERT=${MESH_CERT:-bin/mesh-cert}
TRANSFER_MB=${TRANSFER_MB:-50}
NAMES=(alpha beta gamma)

if [ -t 1 ]; then B=$'\e[1m'; G=$'\e[32m'; R=$'\e[31m'; D=$'\e[2m'; N=$'\e[0m'; else B= G= R= D= N=; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
ok()   { printf '   %s✓%s %s\n' "$G" "$N" "$*"; }
bad()  { printf '   %s✗%s %s\n' "$R" "$N" "$*"; }
note() { printf '   %s%s%s\n' "$D" "$*" "$N"; }
die()  { printf '\n%sdemo stopped:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "the demo needs root to create network namespaces (try: sudo make demo)"
for t in ip ping go; do
  command -v $t >/dev/null || die "'$t' is not installed; run: bash scripts/install-deps.sh --demo"
done

W=$(mktemp -d -t meshnode-demo.XXXXXX)
SW=mndemo$$-switch
PIDS=()
NSS=()
FAILED=0

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [ ${#PIDS[@]} -gt 0 ]; then
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for _ in $(seq 1 30); do
      local alive=0
      for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ $alive = 0 ] && break
      sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  fi
  for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if { [ ${#PIDS[@]} -gt 0 ] && [ "$code" != 0 ]; } || [ -n "${KEEP:-}" ]; then
    local keep=/tmp/meshnode-demo-logs.$$
    cp -r "$W" "$keep" 2>/dev/null && printf 'logs and configs kept in %s\n' "$keep" >&2
  fi
  rm -rf "$W"
  exit $code
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
step "1. Building meshnode and mesh-cert"
if [ -z "${DEMO_SKIP_BUILD:-}" ]; then
  # make build stamps the version (meshnode version); plain go build works as well.
  if command -v make >/dev/null; then
    make --no-print-directory -s build >/dev/null || die "the build failed (see above)"
  else
    mkdir -p bin && go build -o bin/ ./cmd/... || die "the build failed (see above)"
  fi
  ok "built bin/meshnode and bin/mesh-cert"
else
  note "build skipped (DEMO_SKIP_BUILD set)"
fi
go build -o "$W/tcpcheck" ./e2e/internal/tcpcheck || die "could not build the transfer checker"
command -v "$MESHNODE" >/dev/null || [ -x "$MESHNODE" ] || die "$MESHNODE not found"

# ---------------------------------------------------------------------------------------------
step "2. Making a certificate authority and host certificates with $(basename "$MESH_CERT")"
mkdir -p "$W/pki"
if ! "$MESH_CERT" ca -name "Demo Network" -out-crt "$W/pki/ca.crt" -out-key "$W/pki/ca.key" >"$W/pki/ca.out" 2>&1; then
  sed 's/^/   | /' "$W/pki/ca.out"
  die "mesh-cert cannot make a CA yet (this build of $MESH_CERT is not usable). Nothing to demo."
fi
ok "CA \"Demo Network\": ca.crt (public, given to every host), ca.key (secret, stays with the admin)"
for i in 0 1 2; do
  n=${NAMES[$i]}
  "$MESH_CERT" sign -ca-crt "$W/pki/ca.crt" -ca-key "$W/pki/ca.key" -name "$n" -ip "10.42.0.$((i + 1))/24" \
    -groups demo -out-crt "$W/pki/$n.crt" -out-key "$W/pki/$n.key" >"$W/pki/$n.out" 2>&1 \
    || { sed 's/^/   | /' "$W/pki/$n.out"; die "mesh-cert could not sign a certificate for $n"; }
  ok "$n: certificate for overlay address 10.42.0.$((i + 1)), signed by the CA"
done

# ---------------------------------------------------------------------------------------------
step "3. Creating three hosts on a virtual switch and starting meshnode on each"
ip netns add "$SW" && NSS+=("$SW") || die "cannot create a network namespace"
ip -n "$SW" link set lo up
ip -n "$SW" link add br0 type bridge && ip -n "$SW" link set br0 up
for i in 0 1 2; do
  n=${NAMES[$i]}; ns=mndemo$$-$n
  ip netns add "$ns" && NSS+=("$ns") || die "cannot create namespace $ns"
  ip -n "$ns" link set lo up
  ip link add eth0 netns "$ns" type veth peer name "p$i" netns "$SW" || die "cannot create a veth pair"
  ip -n "$SW" link set "p$i" master br0 && ip -n "$SW" link set "p$i" up
  ip -n "$ns" addr add "198.18.0.$((i + 11))/24" dev eth0 && ip -n "$ns" link set eth0 up
done
# node_config PKI_DIR NAME SELF_INDEX: a Nebula-format config listing every other mesh host.
node_config() {
  local dir=$1 n=$2 self=$3 j
  echo "pki: {ca: $dir/ca.crt, cert: $dir/$n.crt, key: $dir/$n.key}"
  echo "static_host_map:"
  for j in 0 1 2; do [ "$j" = "$self" ] || echo "  \"10.42.0.$((j + 1))\": [\"198.18.0.$((j + 11)):4242\"]"; done
  cat <<YML
lighthouse: {am_lighthouse: false, hosts: []}
listen: {host: 0.0.0.0, port: 4242}
tun: {dev: mesh0, mtu: 1300}
cipher: aes
logging: {level: info, format: text}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
YML
}
# meshnode answers `meshnode status` on a control socket; each host gets its own path, since
# the namespaces share one filesystem. (A stand-in daemon without -control gets no socket.)
CONTROL=0
"$MESHNODE" -h 2>&1 | grep -q -- '-control' && CONTROL=1
ctl_args() { [ "$CONTROL" = 1 ] && printf '%s\n' -control "$W/$1.sock"; }
for i in 0 1 2; do
  n=${NAMES[$i]}
  node_config "$W/pki" "$n" "$i" >"$W/$n.yml"
  mapfile -t CTL < <(ctl_args "$n")
  ip netns exec "mndemo$$-$n" "$MESHNODE" -config "$W/$n.yml" "${CTL[@]}" >"$W/$n.log" 2>&1 &
  PIDS+=($!)
  note "$n: underlay 198.18.0.$((i + 11)), overlay 10.42.0.$((i + 1)), $(basename "$MESHNODE") started (pid $!)"
done
sleep 1
for i in 0 1 2; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    FAILED=1
    bad "meshnode on ${NAMES[$i]} exited right after starting:"
    tail -n 5 "$W/${NAMES[$i]}.log" | sed 's/^/   | /'
    die "this build of $MESHNODE cannot run a host yet. Nothing to demo."
  fi
done
ok "all three daemons are running; each knows the others' underlay addresses from"
note "  its static_host_map (no lighthouse); tunnels are set up on the first packet"

# ---------------------------------------------------------------------------------------------
step "4. Pinging every host from every other host over the overlay"
declare -A RTT
PAIRS_OK=0
for i in 0 1 2; do
  for j in 0 1 2; do
    [ $i = $j ] && continue
    from=${NAMES[$i]}; to=${NAMES[$j]}; dst=10.42.0.$((j + 1))
    got=""
    # The first packets start the tunnel's handshake; allow up to 15 s for it.
    deadline=$((SECONDS + 15))
    while [ $SECONDS -lt $deadline ]; do
      if out=$(ip netns exec "mndemo$$-$from" ping -n -c 1 -W 1 "$dst" 2>&1); then
        got=$(printf '%s\n' "$out" | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p'); break
      fi
      sleep 0.2
    done
    if [ -n "$got" ]; then
      RTT[$from-$to]=$got; PAIRS_OK=$((PAIRS_OK + 1))
      ok "$from -> $to ($dst): reply in $got ms"
    else
      FAILED=1; bad "$from -> $to ($dst): no reply within 15 s"
    fi
  done
done
[ "$FAILED" = 0 ] || { for n in "${NAMES[@]}"; do note "--- $n log:"; tail -n 8 "$W/$n.log" | sed 's/^/   | /'; done; die "not every host could reach every other one"; }

if [ "$CONTROL" = 1 ]; then
  note ""
  note "what alpha's daemon reports (meshnode status):"
  "$MESHNODE" status -control "$W/alpha.sock" 2>&1 | sed 's/^/   | /'
fi

# ---------------------------------------------------------------------------------------------
step "5. Sending $TRANSFER_MB MB over TCP from alpha to gamma through the overlay"
ip netns exec "mndemo$$-gamma" "$W/tcpcheck" serve -listen 10.42.0.3:7000 -count 1 >"$W/recv.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do grep -q listening "$W/recv.out" && break; sleep 0.1; done
t0=$(date +%s%N)
if ! ip netns exec "mndemo$$-alpha" "$W/tcpcheck" send -to 10.42.0.3:7000 -bytes $((TRANSFER_MB << 20)) -seed "$$" -timeout 120s >"$W/send.out" 2>&1; then
  FAILED=1; sed 's/^/   | /' "$W/send.out"; die "the transfer failed"
fi
t1=$(date +%s%N)
for _ in $(seq 1 50); do grep -q received "$W/recv.out" && break; sleep 0.1; done
SENT=$(sed -n 's/^sent .*sha256=//p' "$W/send.out")
RECV=$(sed -n 's/^received .*sha256=//p' "$W/recv.out")
MS=$(( (t1 - t0) / 1000000 ))
MBIT=$(awk -v b=$((TRANSFER_MB << 20)) -v ms=$MS 'BEGIN { printf "%.0f", (ms > 0 ? b * 8 / ms / 1000 : 0) }')
note "sha256 sent by alpha:      $SENT"
note "sha256 received by gamma:  $RECV"
if [ -n "$SENT" ] && [ "$SENT" = "$RECV" ]; then
  ok "$TRANSFER_MB MB arrived intact in $MS ms (about $MBIT Mbit/s)"
else
  FAILED=1; bad "the checksums differ"; die "data was corrupted or lost"
fi

# ---------------------------------------------------------------------------------------------
step "6. An intruder with a certificate from a different CA tries to join"
mkdir -p "$W/evil"
if "$MESH_CERT" ca -name "Some Other Network" -out-crt "$W/evil/ca.crt" -out-key "$W/evil/ca.key" >/dev/null 2>&1 &&
   "$MESH_CERT" sign -ca-crt "$W/evil/ca.crt" -ca-key "$W/evil/ca.key" -name intruder -ip 10.42.0.66/24 \
     -groups demo -out-crt "$W/evil/intruder.crt" -out-key "$W/evil/intruder.key" >/dev/null 2>&1; then
  ns=mndemo$$-intruder
  ip netns add "$ns" && NSS+=("$ns")
  ip -n "$ns" link set lo up
  ip link add eth0 netns "$ns" type veth peer name p9 netns "$SW"
  ip -n "$SW" link set p9 master br0 && ip -n "$SW" link set p9 up
  ip -n "$ns" addr add 198.18.0.66/24 dev eth0 && ip -n "$ns" link set eth0 up
  # It trusts its own CA and knows every host's address, like a stolen config with a forged cert.
  node_config "$W/evil" intruder none >"$W/intruder.yml"
  mapfile -t CTL < <(ctl_args intruder)
  ip netns exec "$ns" "$MESHNODE" -config "$W/intruder.yml" "${CTL[@]}" >"$W/intruder.log" 2>&1 &
  PIDS+=($!); IPID=$!
  note "intruder: underlay 198.18.0.66, claims overlay 10.42.0.66, certificate signed by \"Some Other Network\""
  if ip netns exec mndemo$$-alpha ping -n -c 1 -W 1 198.18.0.66 >/dev/null 2>&1; then
    note "the intruder is on the same network segment (alpha can reach its underlay address)"
  fi
  INTRUDER=refused
  for _ in 1 2 3 4 5; do
    if ip netns exec "$ns" ping -n -c 1 -W 1 10.42.0.1 >/dev/null 2>&1; then INTRUDER=admitted; break; fi
  done
  if [ "$INTRUDER" = refused ] && ! kill -0 "$IPID" 2>/dev/null; then
    INTRUDER="not shown (the intruder's own daemon exited)"
    note "$INTRUDER:"; tail -n 3 "$W/intruder.log" | sed 's/^/   | /'
  elif [ "$INTRUDER" = refused ]; then
    ok "alpha refused the intruder: its certificate is not signed by the Demo Network CA"
  else
    FAILED=1; bad "the intruder reached alpha over the overlay"; die "a host with a foreign certificate got in"
  fi
else
  INTRUDER=skipped
  note "skipped: could not make a second CA"
fi

# ---------------------------------------------------------------------------------------------
step "Summary"
cat <<EOF
   Three hosts (alpha, beta, gamma), each with its own certificate from one CA, formed a
   full mesh of encrypted tunnels without any central server.
     pings answered:   $PAIRS_OK of 6 (every host reached every other host)
     TCP transfer:     $TRANSFER_MB MB alpha -> gamma, checksums equal, about ${MBIT} Mbit/s
     intruder:         $INTRUDER (a certificate from another CA opens no tunnel)
     logs:             daemon logs are deleted with the namespaces; run with KEEP=1 to keep them
   Cleaning up: stopping the daemons and deleting the namespaces.
EOF
exit 0
