#!/usr/bin/env bash
# Fleet-scale measurements of issue 18: one lighthouse (or one plain host) against many
# simulated hosts (cmd/mesh-fleet), side by side for meshnode, nebula 1.6.1 and Nebula
# 1.12.0, all with the same Nebula-format config and the same cached fleet of certificates.
#
# Everything runs in ONE network namespace this script creates and deletes: the target
# daemon listens on 127.0.0.1:4242 there (its TUN device lives there too), and the simulated
# hosts send from 127.1.x.y addresses of that namespace's loopback. Per target:
#   ramp   a fresh lighthouse; handshakes offered at each rate of -r for -S seconds, fresh
#          hosts per step, until a step falls behind (answers late or lost): handshakes per
#          lighthouse CPU second and the rate where it stops keeping up
#   join   a fresh lighthouse; the largest size of -s joins as fast as -c handshakes in flight
#          allow (time, RSS and CPU sampled when each size is reached; each host sends its
#          HostUpdateNotification and re-sends it every 60 s), then -q HostQuery/s for -Q
#          seconds from random hosts for random hosts (answers timed, addresses checked)
#   host   a fresh plain host (no lighthouse role) per size of -H: that many peers
#          handshake with it, then -i seconds idle (they answer its Test requests): RSS per
#          tunnel and the CPU its timers use
# CPU is user+system from /proc/PID/stat, memory VmRSS/VmHWM from /proc/PID/status, read by
# the generator itself. The machine is not quiet (others may share it): the load average at
# each run's start is in the JSON results.
#
# Usage: fleet.sh [-s SIZES] [-H HOSTSIZES] [-r RAMP] [-S STEPSECS] [-c CONCURRENCY] [-q QPS]
#                 [-Q QUERYSECS] [-i IDLESECS] [-o OUT.md] [-k PKIDIR] [-p PHASES] [target ...]
#   targets: meshnode nebula nebula12 (default all three; nebula12 is skipped with a message
#   when $NEBULA12, default /work/refbin/nebula12, is missing); phases: ramp,join,host.
#   $MESHNODE: the meshnode binary (default: built from ./cmd/meshnode);
#   $MESHNODE_EXTRA: YAML lines appended to meshnode's config only, e.g.
#   'handshakes: {msg1_rate: 100000}' (Nebula would ignore them, meshnode needs them known).
#   A heap profile of a loaded meshnode lighthouse is not taken: -memprofile writes after
#   shutdown has closed every tunnel, and the daemon serves no pprof endpoint.
# Needs root (network namespace, TUN device), ip, go.
set -uo pipefail

SIZES=10000,50000,100000; HSIZES=1000,10000; RAMP=250,500,1000,2000,4000; STEP=4; CONC=128
QPS=5000; QSECS=10; IDLE=30; OUT=""; PKI=${FLEET_PKI:-/var/tmp/meshnode-fleet-pki}; PHASES=ramp,join,host
usage() { sed -n '/^# Usage/,/^# Needs/p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while getopts "s:H:r:S:c:q:Q:i:o:k:p:h" opt; do
  case $opt in
    s) SIZES=$OPTARG ;; H) HSIZES=$OPTARG ;; r) RAMP=$OPTARG ;; S) STEP=$OPTARG ;; c) CONC=$OPTARG ;;
    q) QPS=$OPTARG ;; Q) QSECS=$OPTARG ;; i) IDLE=$OPTARG ;; o) OUT=$OPTARG ;; k) PKI=$OPTARG ;;
    p) PHASES=$OPTARG ;; *) usage ;;
  esac
done
shift $((OPTIND - 1))
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(meshnode nebula nebula12)

cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
[ "$(id -u)" = 0 ] || { echo "fleet.sh needs root (network namespace, TUN device)" >&2; exit 2; }

W=$(mktemp -d -t meshfleet.XXXXXX)
NS=mnfleet$$
PIDS=() # every process this script started, stopped by PID
stop_pid() { # pid: SIGTERM, then SIGKILL after 10 s
  local p=$1 i
  kill "$p" 2>/dev/null
  for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null; true
}
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && stop_pid "$p"; done
  ip netns del $NS 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

max_of() { tr ',' '\n' <<<"$1" | sort -n | tail -1; }
N=$(max_of "$SIZES"); HN=$(max_of "$HSIZES")
want_phase() { [[ ",$PHASES," == *",$1,"* ]]; }

# ---- binaries and the fleet -------------------------------------------------------------
go build -o "$W/mesh-fleet" ./cmd/mesh-fleet || { echo "fleet.sh: cannot build ./cmd/mesh-fleet" >&2; exit 2; }
if [ -z "${MESHNODE:-}" ]; then
  CGO_ENABLED=0 go build -trimpath -o "$W/meshnode" ./cmd/meshnode || { echo "fleet.sh: cannot build ./cmd/meshnode" >&2; exit 2; }
  MESHNODE=$W/meshnode
fi
NEBULA12=${NEBULA12:-/work/refbin/nebula12}
binary() {
  case $1 in
    meshnode) echo "$MESHNODE" ;;
    nebula) command -v nebula || true ;;
    nebula12) [ -x "$NEBULA12" ] && echo "$NEBULA12" ;;
  esac
}
label() { case $1 in meshnode) echo meshnode ;; nebula) echo "nebula 1.6.1" ;; nebula12) echo "nebula 1.12.0" ;; esac; }
"$W/mesh-fleet" -gen -pki "$PKI" -n "$(max_of "$N,$HN,20000")" || exit 1

# ---- namespace, configs, daemons --------------------------------------------------------
ip netns add $NS && ip -n $NS link set lo up || { echo "fleet.sh: cannot create namespace $NS" >&2; exit 2; }

config() { # target role -> config path
  local f=$W/$1-$2.yml id=lighthouse am=true tun="" listen=""
  [ "$2" = host ] && { id=host; am=false; }
  [ "$1" = nebula12 ] && { tun=", use_offloads: true"; listen=", udp_offloads: true"; }
  cat >"$f" <<YML
pki: {ca: $PKI/ca.crt, cert: $PKI/$id.crt, key: $PKI/$id.key}
static_host_map: {}
lighthouse: {am_lighthouse: $am}
listen: {host: 127.0.0.1, port: 4242$listen}
tun: {dev: fleet0, mtu: 1300$tun}
cipher: aes
logging: {level: warning, format: text}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
YML
  [ "$1" = meshnode ] && [ -n "${MESHNODE_EXTRA:-}" ] && printf '%s\n' "$MESHNODE_EXTRA" >>"$f"
  echo "$f"
}

start() { # target role [args...] -> DAEMON (its PID); 0 when it did not come up
  local t=$1 role=$2 bin i
  shift 2
  bin=$(binary "$t")
  ip netns exec $NS "$bin" -config "$(config "$t" "$role")" "$@" >"$W/$t-$role.log" 2>&1 &
  DAEMON=$!; PIDS+=($DAEMON)
  for i in $(seq 1 100); do
    kill -0 $DAEMON 2>/dev/null || break
    ip netns exec $NS ss -Huln 'sport = :4242' 2>/dev/null | grep -q . && { sleep 0.5; return 0; }
    sleep 0.1
  done
  echo "fleet.sh: $t ($role) did not start:" >&2; tail -n 5 "$W/$t-$role.log" >&2
  stop_pid $DAEMON; DAEMON=0; return 1
}

fleet() { # json-out args...
  local out=$1; shift
  ip netns exec $NS "$W/mesh-fleet" -pki "$PKI" -target 127.0.0.1:4242 -concurrency "$CONC" -o "$out" "$@" &
  local p=$!; PIDS+=($p); wait $p
}

RESULTS=()
for t in "${TARGETS[@]}"; do
  if [ -z "$(binary "$t")" ]; then echo "fleet.sh: no binary for $t, skipped" >&2; continue; fi
  L=$(label "$t")
  if want_phase ramp; then
    echo "fleet.sh: $L: ramp $RAMP/s, ${STEP}s steps" >&2
    if start "$t" lighthouse; then
      fleet "$W/$t-ramp.json" -label "$L" -pid $DAEMON -ramp "$RAMP" -ramp-step "${STEP}s" && RESULTS+=("$W/$t-ramp.json")
      stop_pid $DAEMON
    fi
  fi
  if want_phase join; then
    echo "fleet.sh: $L: $N hosts join, then $QPS queries/s for ${QSECS}s" >&2
    if start "$t" lighthouse; then
      fleet "$W/$t-join.json" -label "$L" -pid $DAEMON -n "$N" -milestones "$SIZES" -query-rate "$QPS" -query-time "${QSECS}s" &&
        RESULTS+=("$W/$t-join.json")
      stop_pid $DAEMON
    fi
  fi
  if want_phase host; then
    for n in ${HSIZES//,/ }; do
      echo "fleet.sh: $L: plain host, $n peers, ${IDLE}s idle" >&2
      if start "$t" host; then
        fleet "$W/$t-host-$n.json" -label "$L" -pid $DAEMON -mode host -n "$n" -milestones "$n" -idle "${IDLE}s" &&
          RESULTS+=("$W/$t-host-$n.json")
        stop_pid $DAEMON
      fi
    done
  fi
done

[ ${#RESULTS[@]} -gt 0 ] || { echo "fleet.sh: no results" >&2; exit 1; }
{
  echo "fleet.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load at start of each run in the JSON; concurrency $CONC"
  echo
  "$W/mesh-fleet" table "${RESULTS[@]}"
} >"$W/tables.md"
cat "$W/tables.md"
if [ -n "$OUT" ]; then
  cp "$W/tables.md" "$OUT"
  mkdir -p "$OUT.json" && cp "${RESULTS[@]}" "$OUT.json/"
fi
