#!/usr/bin/env bash
# Where a data-path daemon's resident memory is (issue 18): two daemons of BINARY (meshnode or
# nebula; the same Nebula-format config as bench.sh) in two network namespaces joined by a veth
# pair, one ping across the tunnel, then per daemon VmRSS, VmHWM, RssAnon, RssFile and the
# resident kB of each mapping of daemon a (its binary's text, read-only data and data, the Go
# heap arena, libc when dynamically linked). With -l it then runs iperf3 with 1 and with 4
# streams (-t SECONDS each) and prints the figures again (VmHWM is then the peak).
#
# Usage: rss.sh [-l] [-t SECONDS] BINARY
# Needs root, ip, ping, nebula-cert (and iperf3 with -l). Traffic stays inside the two
# namespaces it creates and deletes; it kills only the processes it started, by PID.
set -uo pipefail
LOAD=""; SECS=5
while getopts "lt:h" opt; do
  case $opt in l) LOAD=1 ;; t) SECS=$OPTARG ;; *) sed -n '/^# Usage/,/^# namespaces/p' "$0"; exit 2 ;; esac
done
shift $((OPTIND - 1))
BIN=${1:?usage: rss.sh [-l] [-t SECONDS] BINARY}
[ "$(id -u)" = 0 ] || { echo "rss.sh needs root (network namespaces, TUN devices)" >&2; exit 2; }
W=$(mktemp -d -t meshrss.XXXXXX); NA=mnrss$$-a; NB=mnrss$$-b; PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  ip netns del $NA 2>/dev/null; ip netns del $NB 2>/dev/null; rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add $NA && ip netns add $NB || exit 1
ip -n $NA link set lo up; ip -n $NB link set lo up
ip link add eth0 netns $NA type veth peer name eth0 netns $NB || exit 1
ip -n $NA addr add 198.18.0.1/24 dev eth0; ip -n $NB addr add 198.18.0.2/24 dev eth0
ip -n $NA link set eth0 up; ip -n $NB link set eth0 up
mkdir -p "$W/pki"
( cd "$W/pki" && nebula-cert ca -name rss -out-crt ca.crt -out-key ca.key &&
  nebula-cert sign -ca-crt ca.crt -ca-key ca.key -name a -ip 10.77.0.1/24 -out-crt a.crt -out-key a.key &&
  nebula-cert sign -ca-crt ca.crt -ca-key ca.key -name b -ip 10.77.0.2/24 -out-crt b.crt -out-key b.key ) >/dev/null || exit 1
for h in a b; do
  if [ $h = a ]; then peer=10.77.0.2; peer_ul=198.18.0.2; else peer=10.77.0.1; peer_ul=198.18.0.1; fi
  cat >"$W/$h.yml" <<YML
pki: {ca: $W/pki/ca.crt, cert: $W/pki/$h.crt, key: $W/pki/$h.key}
static_host_map: {"$peer": ["$peer_ul:4242"]}
lighthouse: {am_lighthouse: false, hosts: []}
listen: {host: 0.0.0.0, port: 4242}
tun: {dev: rss0, mtu: 1300}
cipher: aes
logging: {level: error, format: text}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
YML
done
ip netns exec $NA "$BIN" -config "$W/a.yml" >"$W/a.log" 2>&1 & PIDS+=($!); A=$!
ip netns exec $NB "$BIN" -config "$W/b.yml" >"$W/b.log" 2>&1 & PIDS+=($!); B=$!
up=""
for _ in $(seq 1 100); do ip netns exec $NA ping -n -c 1 -W 1 10.77.0.2 >/dev/null 2>&1 && { up=1; break; }; sleep 0.1; done
[ -n "$up" ] || { echo "rss.sh: the tunnel did not come up" >&2; cat "$W/a.log" "$W/b.log" >&2; exit 1; }
sleep 1
show() {
  local p
  for p in $A $B; do
    echo "  pid $p: $(awk '/^(VmRSS|VmHWM|RssAnon|RssFile):/ { printf "%s %s kB  ", $1, $2 }' /proc/$p/status)"
  done
  echo "  mappings of a with resident memory (kB):"
  awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $1 " " $2 " " ($6 == "" ? "[anon]" : $6) } /^Rss:/ && $2 >= 64 { print "    " m, $2 }' /proc/$A/smaps
}
echo "== idle, tunnel up"; show
if [ -n "$LOAD" ]; then
  ip netns exec $NB iperf3 -s -p 5201 >/dev/null 2>&1 & PIDS+=($!)
  sleep 0.3
  for P in 1 4; do
    ip netns exec $NA iperf3 -c 10.77.0.2 -p 5201 -t "$SECS" -P $P -J 2>/dev/null |
      awk -v p=$P '/"sum_received"/ { r = 1 } r && /"bits_per_second"/ { gsub(/[^0-9.e+]/, "", $2); printf "  %d stream(s): %.2f Gbit/s\n", p, $2 / 1e9; exit }'
  done
  echo "== after iperf3 1 and 4 streams"; show
fi
