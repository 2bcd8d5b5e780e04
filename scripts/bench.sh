#!/usr/bin/env bash
# meshnode side-by-side data-plane benchmark (`make bench` runs the Go micro-benchmarks; this is
# the whole-daemon comparison behind docs/PERFORMANCE.md).
#
# Two network namespaces joined by one veth pair (198.18.0.1 <-> 198.18.0.2). Per scenario:
#   raw       traffic over the veth itself: the ceiling
#   nebula    nebula 1.6.1 from the system on both ends
#   nebula12  Nebula 1.12.0 with its offloads on (tun.use_offloads, listen.udp_offloads; the
#             control API off), from $NEBULA12, else /work/refbin/nebula12, else built with
#             ../shared/bench/nebula12/build.sh into $NEBULA12_CACHE (default ~/.cache/meshnode-bench);
#             skipped with a message when none of these works
#   meshnode  this project's daemon on both ends ($MESHNODE, else built from ./cmd/meshnode)
#   meshbase  another meshnode build, to compare against in the same run ($MESHNODE_BASE,
#             default /work/refbin/meshnode-base; skipped when missing)
# Both overlays get the same Nebula-format config: no lighthouse, static_host_map, overlay MTU
# 1300 (-m), cipher aes (-c). UDP socket buffers are left to each daemon (nebula takes the
# kernel's default, meshnode sizes its own) unless -B sets listen.read_buffer and
# listen.write_buffer (bytes) for both. Per run it measures:
#   TCP Gbit/s   iperf3, 1 stream and 4 streams, -t SECONDS each, receiver side
#   RTT ms       mean of 200 pings 10 ms apart on the idle tunnel (-n COUNT, -i SECONDS)
#   RTT load ms  mean of 100 pings 10 ms apart during a separate 1-stream iperf3 run (3 s,
#                not the measured one, so the throughput figures are not disturbed)
#   CPU s/GB     user+system CPU of both daemons (/proc/PID/stat) during the 1-stream run,
#                per GB delivered
#   idle RSS     VmRSS of both daemons, summed, once the tunnel is up and before any load (MiB)
#   peak RSS     VmHWM of both daemons, summed, after all the load (MiB)
#   UDP drops    UdpRcvbufErrors in both namespaces over the whole run (the kernel dropping
#                datagrams the daemon did not read in time)
#   retransmits  TCP retransmits iperf3's sender reports for the 1-stream run (each is a
#                packet lost somewhere in the overlay, usually one of those drops)
#   up s         start of the daemons until the first ping across the overlay succeeds
# Rounds are interleaved (raw, nebula, meshnode, raw, nebula, ...) so a machine whose speed
# drifts affects every scenario alike; the table shows median (min-max) and ratios per round:
# throughput, CPU and RSS against the -b scenario (default nebula), RTTs against nebula (1.6.1).
# -P DIR makes each meshnode daemon write a CPU profile of its whole life (start, idle, the
# load, shutdown) to DIR/SCENARIO-rROUND-{a,b}.pprof (a sends the iperf3 data, b receives it)
# and prints `go tool pprof -top` of each at the end; profiling costs a few per cent.
#
# -R N sets routines: N for both overlays (multi-queue TUN, N sockets; default 1).
# -b BASE is the scenario the throughput, CPU and RSS ratios are taken against (default nebula;
# e.g. -b nebula12). -n/-i set the idle ping count and interval (e.g. -n 1000 -i 0.005).
#
# Usage: bench.sh [-r ROUNDS] [-t SECONDS] [-m MTU] [-c CIPHER] [-B BYTES] [-R ROUTINES] [-b BASE] [-n PINGS] [-i INTERVAL] [-o OUT.md] [-P DIR] [scenario ...]
# Needs root, iperf3, ping, ip; nebula and nebula-cert for the overlays (scripts/install-deps.sh).
# Traffic stays inside the two namespaces this script creates and deletes (trap).
set -uo pipefail

ROUNDS=3; SECS=8; MTU=1300; CIPHER=aes; OUT=""; BUF=""; PROF=""; ROUTINES=1; BASE=nebula; PINGS=200; PINGI=0.01
usage() { sed -n '/^# Usage/,/^# Traffic/p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while getopts "r:t:m:c:B:R:b:n:i:o:P:h" opt; do
  case $opt in
    r) ROUNDS=$OPTARG ;; t) SECS=$OPTARG ;; m) MTU=$OPTARG ;; c) CIPHER=$OPTARG ;; B) BUF=$OPTARG ;; R) ROUTINES=$OPTARG ;; o) OUT=$OPTARG ;;
    P) PROF=$OPTARG ;; b) BASE=$OPTARG ;; n) PINGS=$OPTARG ;; i) PINGI=$OPTARG ;; *) usage ;;
  esac
done
shift $((OPTIND - 1))
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(raw nebula meshnode)

cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
[ "$(id -u)" = 0 ] || { echo "bench.sh needs root (network namespaces, TUN devices)" >&2; exit 2; }
for t in ip ping iperf3 awk; do
  command -v $t >/dev/null || { echo "bench.sh: '$t' missing; run: bash scripts/install-deps.sh" >&2; exit 2; }
done

if [ -n "$PROF" ]; then mkdir -p "$PROF" && PROF=$(cd "$PROF" && pwd) || { echo "bench.sh: cannot use -P $PROF" >&2; exit 2; }; fi
W=$(mktemp -d -t meshbench.XXXXXX)
NA=mnbench$$-a; NB=mnbench$$-b
PIDS=()   # every process this script started, killed by PID
TCK=$(getconf CLK_TCK)

stop_all() {
  local p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  for _ in $(seq 1 30); do
    local alive=0
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  PIDS=()
}
net_down() { stop_all; ip netns del $NA 2>/dev/null; ip netns del $NB 2>/dev/null; true; }
cleanup() { net_down; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

net_up() {
  ip netns add $NA && ip netns add $NB || return 1
  ip -n $NA link set lo up; ip -n $NB link set lo up
  ip link add eth0 netns $NA type veth peer name eth0 netns $NB || return 1
  ip -n $NA addr add 198.18.0.1/24 dev eth0; ip -n $NB addr add 198.18.0.2/24 dev eth0
  ip -n $NA link set eth0 up; ip -n $NB link set eth0 up
}

# ---- binaries -------------------------------------------------------------------------------
NEBULA=$(command -v nebula || true)
want() { [[ " ${SCENARIOS[*]} " == *" $1 "* ]]; }
if want meshnode && [ -z "${MESHNODE:-}" ]; then
  if CGO_ENABLED=0 go build -trimpath -o "$W/meshnode" ./cmd/meshnode 2>"$W/build.log"; then MESHNODE=$W/meshnode
  else echo "bench.sh: cannot build ./cmd/meshnode; meshnode rows will be empty" >&2; fi
fi
NEBULA12_VER=""
if want nebula12; then
  if [ -z "${NEBULA12:-}" ] && [ -x /work/refbin/nebula12 ]; then NEBULA12=/work/refbin/nebula12; fi
  if [ -z "${NEBULA12:-}" ]; then
    cache=${NEBULA12_CACHE:-$HOME/.cache/meshnode-bench}
    if [ -x "$cache/nebula12" ]; then NEBULA12=$cache/nebula12
    elif [ -f ../shared/bench/nebula12/build.sh ] && mkdir -p "$cache" &&
         bash ../shared/bench/nebula12/build.sh "$cache/nebula12" >"$W/nebula12-build.log" 2>&1; then NEBULA12=$cache/nebula12
    fi
  fi
  if [ -n "${NEBULA12:-}" ] && [ -x "$NEBULA12" ]; then
    NEBULA12_VER=$("$NEBULA12" -version 2>/dev/null | awk '{ print $2 }')
  else
    echo "bench.sh: no Nebula 1.12 (set NEBULA12=path, or make ../shared/bench/nebula12/build.sh work); the nebula12 scenario is skipped" >&2
    NEBULA12=""
  fi
fi
if want meshbase && [ -z "${MESHNODE_BASE:-}" ] && [ -x /work/refbin/meshnode-base ]; then MESHNODE_BASE=/work/refbin/meshnode-base; fi
if want nebula || want nebula12 || want meshnode || want meshbase; then
  command -v nebula-cert >/dev/null || { echo "bench.sh: nebula-cert missing (bash scripts/install-deps.sh)" >&2; exit 2; }
  mkdir -p "$W/pki"
  ( cd "$W/pki" &&
    nebula-cert ca -name bench -out-crt ca.crt -out-key ca.key &&
    nebula-cert sign -ca-crt ca.crt -ca-key ca.key -name a -ip 10.77.0.1/24 -out-crt a.crt -out-key a.key &&
    nebula-cert sign -ca-crt ca.crt -ca-key ca.key -name b -ip 10.77.0.2/24 -out-crt b.crt -out-key b.key ) >/dev/null ||
    { echo "bench.sh: could not make certificates" >&2; exit 2; }
  for h in a b; do
    if [ $h = a ]; then peer=10.77.0.2; peer_ul=198.18.0.2; else peer=10.77.0.1; peer_ul=198.18.0.1; fi
    cat >"$W/$h.yml" <<YML
pki: {ca: $W/pki/ca.crt, cert: $W/pki/$h.crt, key: $W/pki/$h.key}
static_host_map: {"$peer": ["$peer_ul:4242"]}
lighthouse: {am_lighthouse: false, hosts: []}
listen: {host: 0.0.0.0, port: 4242${BUF:+, read_buffer: $BUF, write_buffer: $BUF}}
tun: {dev: bench0, mtu: $MTU}
cipher: $CIPHER
routines: $ROUTINES
logging: {level: error, format: text}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
YML
    # Nebula 1.12 with its offloads on, as ../shared/bench/compare.sh runs it (nebula_alt_off).
    sed -e 's/^listen: {\(.*\)}$/listen: {\1, udp_offloads: true}/' -e 's/^tun: {\(.*\)}$/tun: {\1, use_offloads: true}/' \
      "$W/$h.yml" >"$W/$h-n12.yml"
    echo "local_api: {control: {enabled: false}}" >>"$W/$h-n12.yml"
  done
fi

# ---- measurements ---------------------------------------------------------------------------
cpu_ticks() { local s=0 p v; for p in "$@"; do [ -n "$p" ] || continue; v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null); s=$((s + ${v:-0})); done; echo $s; }
mem_kb() { local s=0 p v; for p in "${@:2}"; do [ -n "$p" ] || continue; v=$(awk -v k="$1:" '$1 == k { print $2 }' "/proc/$p/status" 2>/dev/null); s=$((s + ${v:-0})); done; echo $s; }
rcvbuf_errors() { # summed over both namespaces
  local s=0 ns v
  for ns in $NA $NB; do
    v=$(ip netns exec $ns awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c }' /proc/net/snmp 2>/dev/null)
    s=$((s + ${v:-0}))
  done
  echo $s
}
# iperf3 JSON -> "bits_per_second bytes retransmits": the receiver's sum, the sender's retransmits
iperf_result() {
  awk '/"sum_sent"/ { s = 1 } s && /"retransmits"/ { gsub(/[^0-9]/, "", $2); rt = $2; s = 0 }
       /"sum_received"/ { r = 1 } r && /"bytes"/ { gsub(/[^0-9.]/, "", $2); b = $2 }
       r && /"bits_per_second"/ { gsub(/[^0-9.e+]/, "", $2); print $2, b, (rt == "" ? "NA" : rt); exit }'
}

start_daemons() { # scenario binary -> DAEMONS
  local pa=() pb=()
  if [ -n "$PROF" ] && { [ "$1" = meshnode ] || [ "$1" = meshbase ]; }; then
    pa=(-cpuprofile "$PROF/$1-r$ROUND-a.pprof"); pb=(-cpuprofile "$PROF/$1-r$ROUND-b.pprof")
  fi
  local sfx=""; [ "$1" = nebula12 ] && sfx=-n12
  ip netns exec $NA "$2" -config "$W/a$sfx.yml" "${pa[@]}" >"$W/a.log" 2>&1 & PIDS+=($!); DAEMONS=($!)
  ip netns exec $NB "$2" -config "$W/b$sfx.yml" "${pb[@]}" >"$W/b.log" 2>&1 & PIDS+=($!); DAEMONS+=($!)
}

measure() { # scenario -> one line of numbers, "skip" or "fail"
  local sc=$1 target bin t0 up i
  DAEMONS=()
  case $sc in
    raw) target=198.18.0.2 ;;
    nebula) bin=$NEBULA; target=10.77.0.2 ;;
    nebula12) bin=${NEBULA12:-}; target=10.77.0.2 ;;
    meshnode) bin=${MESHNODE:-}; target=10.77.0.2 ;;
    meshbase) bin=${MESHNODE_BASE:-}; target=10.77.0.2 ;;
    *) echo "unknown"; return ;;
  esac
  [ "$sc" = raw ] || [ -n "$bin" ] || { echo skip; return; }
  net_up || { net_down; echo fail; return; }
  t0=$(date +%s%N)
  [ "$sc" = raw ] || start_daemons "$sc" "$bin"
  up=""
  for i in $(seq 1 150); do
    if ip netns exec $NA ping -n -c 1 -W 1 $target >/dev/null 2>&1; then up=$(( ($(date +%s%N) - t0) / 1000000 )); break; fi
    for p in "${DAEMONS[@]:-}"; do [ -z "$p" ] || kill -0 "$p" 2>/dev/null || break 2; done
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "  $sc: no ping across (a daemon exited, or 15 s passed); daemon log:" >&2; tail -n 5 "$W/a.log" >&2 2>/dev/null
    net_down; echo fail; return
  fi
  sleep 1 # let the daemons settle before the idle sample
  local idle drops0 c0 c1 r1 r4 rtt rttl peak drops1 cpu ip
  idle=$(mem_kb VmRSS "${DAEMONS[@]:-}")
  drops0=$(rcvbuf_errors)
  ip netns exec $NB iperf3 -s -p 5201 >/dev/null 2>&1 & PIDS+=($!)
  sleep 0.5
  c0=$(cpu_ticks "${DAEMONS[@]:-}")
  r1=$(ip netns exec $NA iperf3 -c $target -p 5201 -t "$SECS" -J 2>/dev/null | iperf_result)
  c1=$(cpu_ticks "${DAEMONS[@]:-}")
  r4=$(ip netns exec $NA iperf3 -c $target -p 5201 -t "$SECS" -P 4 -J 2>/dev/null | iperf_result)
  rtt=$(ip netns exec $NA ping -n -q -c "$PINGS" -i "$PINGI" $target 2>/dev/null | awk -F/ '/^rtt|^round-trip/ { print $5 }')
  # Latency under load: a separate 1-stream run (its throughput is not recorded) with pings
  # from its second half-second on; the pings end (about 1 s) before the run does (3 s).
  ip netns exec $NA iperf3 -c $target -p 5201 -t 3 >/dev/null 2>&1 & ip=$!; PIDS+=($ip)
  sleep 0.5
  rttl=$(ip netns exec $NA ping -n -q -c 100 -i 0.01 $target 2>/dev/null | awk -F/ '/^rtt|^round-trip/ { print $5 }')
  wait $ip 2>/dev/null
  peak=$(mem_kb VmHWM "${DAEMONS[@]:-}")
  drops1=$(rcvbuf_errors)
  net_down
  [ -n "$r1" ] && [ -n "$r4" ] || { echo fail; return; }
  awk -v r1="$r1" -v r4="$r4" -v rtt="${rtt:-NA}" -v rttl="${rttl:-NA}" -v c="$((c1 - c0))" -v tck="$TCK" -v idle="$idle" -v peak="$peak" \
      -v drops=$((drops1 - drops0)) -v up="$up" -v sc="$sc" 'BEGIN {
    split(r1, a, " "); split(r4, b, " ")
    gb = a[2] / 1e9
    cpu = (sc == "raw" || gb <= 0) ? "NA" : sprintf("%.2f", c / tck / gb)
    mi = (sc == "raw") ? "NA" : sprintf("%.1f", idle / 1024)
    mp = (sc == "raw") ? "NA" : sprintf("%.1f", peak / 1024)
    printf "%.3f %.3f %s %s %s %s %d %s %.2f %s\n", a[1] / 1e9, b[1] / 1e9, rtt, cpu, mi, mp, drops, a[3], up / 1000, rttl
  }'
}

RESULTS=$W/results.txt
: >"$RESULTS"
echo "bench: ${SCENARIOS[*]}; $ROUNDS rounds of ${SECS}s iperf3 runs; overlay MTU $MTU, cipher $CIPHER, socket buffers ${BUF:-per-daemon default}, routines $ROUTINES" >&2
for r in $(seq 1 "$ROUNDS"); do
  ROUND=$r
  for sc in "${SCENARIOS[@]}"; do
    line=$(measure "$sc")
    echo "  round $r $sc: $line" >&2
    echo "$sc $r $line" >>"$RESULTS"
  done
done

# ---- table ----------------------------------------------------------------------------------
TABLE=$W/table.md
awk -v rounds="$ROUNDS" -v secs="$SECS" -v mtu="$MTU" -v cipher="$CIPHER" -v cores="$(nproc)" \
    -v when="$(date -u '+%Y-%m-%d %H:%M UTC')" -v scen="${SCENARIOS[*]}" -v buf="${BUF:-not set (per-daemon default)}" -v routines="$ROUTINES" \
    -v nebver="$( { nebula -version 2>/dev/null || true; } | awk '{ print $2 }')" -v n12ver="${NEBULA12_VER:-}" -v base="$BASE" \
    -v pings="$PINGS" -v pingi="$PINGI" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" \
    -v cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" '
function median(arr, n,    i, j, t) {
  for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
  return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
function num(x) { return (x >= 1000 || x <= -1000) ? sprintf("%.0f", x) : sprintf("%.3g", x) }
function cell(sc, k,    i, n, v, lo, hi) {
  n = 0
  for (i = 1; i <= rounds; i++) if ((sc, i) in val && val[sc, i, k] != "NA" && val[sc, i, k] != "") { n++; v[n] = val[sc, i, k] + 0 }
  if (n == 0) return "—"
  lo = v[1]; hi = v[1]; for (i = 2; i <= n; i++) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i] }
  if (n == 1) return num(v[1])
  return num(median(v, n)) " (" num(lo) "–" num(hi) ")"
}
function ratio(sc, base, k,    i, n, v) {
  n = 0
  for (i = 1; i <= rounds; i++)
    if ((sc, i) in val && (base, i) in val && val[sc, i, k] != "NA" && val[base, i, k] + 0 > 0) { n++; v[n] = val[sc, i, k] / val[base, i, k] }
  return n ? sprintf("%.2f", median(v, n)) : "—"
}
# Fields after scenario and round: 1 TCP1, 2 TCP4, 3 RTT, 4 CPU/GB, 5 idle RSS, 6 peak RSS,
# 7 drops, 8 retransmits, 9 up, 10 RTT under load (older 11-field lines have no 10).
NF == 11 || NF == 12 { val[$1, $2] = 1; for (k = 3; k <= NF; k++) val[$1, $2, k - 2] = $k }
END {
  ns = split(scen, S, " ")
  order = "1 2 3 10 4 5 6 7 8 9"; nc = split(order, C, " ")
  printf "| scenario | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | RTT ms | RTT under load ms | CPU s/GB | idle RSS MiB | peak RSS MiB | UDP rcvbuf drops | TCP retransmits | up s |"
  printf " TCP 1 ÷ %s | TCP 4 ÷ %s | CPU/GB ÷ %s | idle RSS ÷ %s | peak RSS ÷ %s | RTT ÷ nebula | RTT load ÷ nebula |\n", base, base, base, base, base
  print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for (s = 1; s <= ns; s++) {
    sc = S[s]; ok = 0
    for (i = 1; i <= rounds; i++) if ((sc, i) in val) ok = 1
    printf "| %s%s |", sc, ok ? "" : " (skipped or failed)"
    for (c = 1; c <= nc; c++) printf " %s |", cell(sc, C[c])
    printf " %s | %s | %s | %s | %s | %s | %s |\n", ratio(sc, base, 1), ratio(sc, base, 2), ratio(sc, base, 4), ratio(sc, base, 5), ratio(sc, base, 6), \
      ratio(sc, "nebula", 3), ratio(sc, "nebula", 10)
  }
  printf "\nMedian (min–max) of %d interleaved rounds; %s s per iperf3 run; overlay MTU %s; cipher %s; UDP socket buffers %s; routines %s; nebula %s%s.\n", rounds, secs, mtu, cipher, buf, routines, nebver, n12ver == "" ? "" : ", nebula12 " n12ver " (offloads on)"
  printf "RTT: %s pings %s s apart on the idle tunnel; under load: 100 pings 10 ms apart during a separate 1-stream iperf3 run.\n", pings, pingi
  printf "Ratios are taken per round, then the median (— where the reference did not run). RSS and CPU are both daemons summed; CPU during the 1-stream run.\n"
  printf "Machine: %s, %s cores; measured %s; load average at the end %s.\n", cpu, cores, when, load
}' "$RESULTS" >"$TABLE"

cat "$TABLE"
if [ -n "$OUT" ]; then cp "$TABLE" "$OUT" && echo "bench: table written to $OUT" >&2; fi
if [ -n "$PROF" ]; then
  for f in "$PROF"/mesh*-r*-[ab].pprof; do
    [ -s "$f" ] || continue
    echo; echo "== $f (go tool pprof -top -nodecount=25)"
    bin=$MESHNODE; [[ $f == */meshbase-* ]] && bin=$MESHNODE_BASE
    go tool pprof -top -nodecount=25 ${bin:+"$bin"} "$f" 2>/dev/null
  done
fi
exit 0
