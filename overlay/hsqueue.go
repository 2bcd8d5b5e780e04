package overlay

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"maps"
	"math"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay/header"
)

// The msg 1 backlog. A msg 1 costs the responder a certificate signature check and, if it
// passes, four X25519 operations; IX gives no cheap proof of anything (no MAC, no cookie
// that Nebula 1.6 peers would answer), so a stranger with a copied certificate can make us
// do that work from any spoofed address. The receive path therefore only copies a msg 1
// into one of two bounded queues (known sources first), and the handshake workers (up to
// one per core) answer them at no more than handshakes.msg1_rate per second: a flood costs the data
// path a copy and the machine a bounded share of its cores.
const (
	// msg1PrioQueue holds msg 1s from sources we expect: a relay hop, the address of a
	// tunnel, static_host_map, an address a lighthouse gave us.
	msg1PrioQueue = 64
	// msg1Queue holds everyone else's. Short, so a stranger's msg 1 that gets in is
	// answered within msg1Queue/msg1_rate, not after the initiator gave up on it.
	msg1Queue = 256
	// msg1Buf is the initial capacity of a queue buffer (a Nebula msg 1 is 240-260 bytes;
	// larger certificates grow the buffer once).
	msg1Buf = 512
	// cheapCost is what a msg 1 refused before any signature check or DH costs of the
	// budget. BenchmarkMsg1 measures such a refusal at under 1/100 of an answered msg 1;
	// charging 1/32 keeps a garbage flood's share of the workers small on any machine.
	cheapCost = 1.0 / 32
	// probeEvery bounds the "too old" Test requests sent on one tunnel.
	probeEvery = time.Second
	// maxProbed bounds the table of recent probes.
	maxProbed = 4096
)

// The automatic budget (handshakes.msg1_rate: 0, the default) is a share of the CPU over
// the cost of one answered msg 1, measured at start (msg1Cost). A lighthouse exists to
// take handshakes (a whole network joins or comes back at once) and has little else to
// do, so it may spend half of its cores on them (100 000 hosts in about 30 s on 2 cores)
// and keep the rest for the queries and updates that follow; a host keeps a quarter of
// one core, as before, so a flood cannot take its data path's CPU. Only as many workers
// run as the budget can keep busy: one on a host, so a flood's msg 1s never occupy all
// cores at once.
const (
	autoShareLighthouse = 0.5  // of all cores (GOMAXPROCS)
	autoShareHost       = 0.25 // of one core
	// msg1Overhead is the rest of an answered msg 1 (parsing, Noise hashing and AEAD
	// set-up, candidate, msg 2 and probe sent) over its public-key operations:
	// BenchmarkMsg1/answered against BenchmarkRoles/floor-respond.
	msg1Overhead = 1.2
	// minAutoRate is the least the automatic budget allows (the fixed default before).
	minAutoRate = 500
)

// msg1Rate resolves handshakes.msg1_rate: the configured rate, or the automatic one.
func msg1Rate(configured int, lighthouse bool, cores int, cost time.Duration) float64 {
	if configured > 0 {
		return float64(configured)
	}
	share := autoShareHost
	if lighthouse {
		share = autoShareLighthouse * float64(max(cores, 1))
	}
	return max(share/cost.Seconds(), minAutoRate)
}

// msg1Workers is how many workers the budget can keep busy at cost per msg 1, twice over
// (cost is an estimate of the CPU work alone; a worker is also preempted and sends), so
// the budget is the bound and not the workers; between 1 and cores.
func msg1Workers(rate float64, cost time.Duration, cores int) int {
	return min(max(int(math.Ceil(2*rate*cost.Seconds())), 1), cores)
}

// msg1Cost estimates the CPU time of one answered msg 1: the public-key operations it
// needs (one Ed25519 verify, one X25519 key generation, three X25519 DH) timed here on the
// thread's CPU clock, so time the thread spends descheduled on a busy machine does not
// count, the fastest of five tries, times msg1Overhead. About 1.5 ms at start.
func msg1Cost() time.Duration {
	const fallback = 300 * time.Microsecond // this machine's (docs/PERFORMANCE.md)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fallback
	}
	msg := make([]byte, 200)
	sig := ed25519.Sign(priv, msg)
	curve := ecdh.X25519()
	peer, err := curve.GenerateKey(rand.Reader)
	if err != nil {
		return fallback
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	best := time.Duration(1<<63 - 1)
	for range 5 {
		start, ok := threadCPU()
		ed25519.Verify(pub, msg, sig)
		e, _ := curve.GenerateKey(rand.Reader)
		for range 3 {
			_, _ = e.ECDH(peer.PublicKey())
		}
		end, ok2 := threadCPU()
		if !ok || !ok2 {
			return fallback
		}
		best = min(best, end-start)
	}
	if best <= 0 {
		return fallback
	}
	return time.Duration(float64(best) * msg1Overhead)
}

// msg1Job is one queued msg 1.
type msg1Job struct {
	buf  []byte
	from netip.AddrPort
	via  *relayEntry
}

// msg1Backlog is the receive path's hand-off to the handshake workers and their
// budget. The receive path touches only the limiter (its own lock), the expected-source
// set (an atomic snapshot) and the channels.
type msg1Backlog struct {
	n          *Node
	free       chan []byte
	prio, rest chan msg1Job

	limMu   sync.Mutex
	limiter map[netip.Addr]bucket // by value: a spoofed source costs no allocation of its own
	limPeak int                   // the most entries tick saw since the table was last made

	expect atomic.Pointer[map[netip.Addr]struct{}]
	// more is what lighthouses told us since the last rebuild (addExpected): an answer
	// costs a copy of this small set, not a rebuild over every tunnel; the next tick folds
	// it into expect.
	more     atomic.Pointer[map[netip.Addr]struct{}]
	expectMu sync.Mutex // serialises rebuilds and additions
	// workers is how many goroutines answer msg 1s (msg1Workers).
	workers, cores int
	// cost is the lowest msg1Cost measured so far (timers-only after start), and when it
	// was last measured.
	cost     time.Duration
	measured time.Time

	// The workers' shared state: the global budget (a token bucket on the monotonic clock,
	// since it bounds CPU time, not protocol time) and recent "too old" probes.
	mu          sync.Mutex
	rate, burst float64
	tokens      float64
	last        time.Time
	mono        func() time.Time
	probed      map[uint32]time.Time
	// versionLogged is when a refusal for want of a common certificate version was last logged.
	versionLogged time.Time
	// busy is the workers' time spent on msg 1s (wall time, so it includes preemption),
	// for the flood benchmark's CPU share; waited is their time spent waiting for the
	// budget, which says whether it held back a join.
	busy, waited atomic.Int64
}

func newMsg1Backlog(n *Node) *msg1Backlog {
	q := &msg1Backlog{
		n:       n,
		free:    make(chan []byte, msg1PrioQueue+msg1Queue+1),
		prio:    make(chan msg1Job, msg1PrioQueue),
		rest:    make(chan msg1Job, msg1Queue),
		limiter: map[netip.Addr]bucket{},
		mono:    time.Now,
		probed:  map[uint32]time.Time{},
	}
	q.cores = max(runtime.GOMAXPROCS(0), 1)
	cost := msg1Cost()
	q.cost = cost
	q.rate = msg1Rate(n.cfg.Handshakes.Msg1Rate, n.cfg.Lighthouse.AmLighthouse, q.cores, cost)
	q.workers = msg1Workers(q.rate, cost, q.cores)
	n.log.Info("handshake budget", "msg1_rate", int(q.rate), "workers", q.workers, "msg1_cost", cost.Round(time.Microsecond))
	// A tenth of a second's worth, so a burst of genuine handshakes (a lighthouse coming
	// back to a whole network) is answered at once.
	q.burst = max(q.rate/10, 8)
	q.tokens = q.burst
	q.measured = n.now()
	for range cap(q.free) {
		q.free <- nil
	}
	empty, more := map[netip.Addr]struct{}{}, map[netip.Addr]struct{}{}
	q.expect.Store(&empty)
	q.more.Store(&more)
	return q
}

// enqueue is the receive path's whole share of a msg 1: the per-source limit, a copy, and
// a non-blocking send. It never waits and never does crypto.
func (q *msg1Backlog) enqueue(b []byte, from netip.AddrPort, via *relayEntry, now time.Time) {
	n := q.n
	src := from.Addr()
	if via != nil {
		src = via.hop
	}
	if !q.allow(src, now) {
		n.m.dropped(dropRateLimited)
		return
	}
	prio := via != nil || q.expected(src)
	var buf []byte
	select {
	case buf = <-q.free:
	default: // both queues full and the worker busy
		n.m.dropped(dropBacklogFull)
		return
	}
	if buf == nil {
		buf = make([]byte, 0, max(msg1Buf, len(b)))
	}
	j := msg1Job{buf: append(buf[:0], b...), from: from, via: via}
	ch, reason := q.rest, dropBacklogFull
	if prio {
		ch, reason = q.prio, dropBacklogFullKnown
	}
	select {
	case ch <- j:
	default:
		q.free <- j.buf
		n.m.dropped(reason)
	}
}

// allow applies the per-source token bucket (handshakes.per_source_rate, burst twice that).
func (q *msg1Backlog) allow(src netip.Addr, now time.Time) bool {
	rate := q.n.cfg.Handshakes.PerSourceRate
	q.limMu.Lock()
	defer q.limMu.Unlock()
	b, ok := q.limiter[src]
	if !ok {
		if len(q.limiter) >= maxLimiterEntries {
			clear(q.limiter) // spoofed sources: forgetting them all is cheaper than an LRU
		}
		b = bucket{tokens: 2 * rate, last: now}
	}
	b.tokens = min(2*rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	ok = b.tokens >= 1
	if ok {
		b.tokens--
	}
	q.limiter[src] = b
	return ok
}

// expected reports whether src is an address we have reason to hear a msg 1 from.
func (q *msg1Backlog) expected(src netip.Addr) bool {
	src = src.Unmap()
	if _, ok := (*q.expect.Load())[src]; ok {
		return true
	}
	if _, ok := (*q.more.Load())[src]; ok {
		return true
	}
	return q.n.hosts.hasRemoteIP(src)
}

// addExpected adds the addresses a lighthouse just gave us (learn).
func (q *msg1Backlog) addExpected(addrs []netip.AddrPort) {
	q.expectMu.Lock()
	defer q.expectMu.Unlock()
	old := *q.more.Load()
	set := make(map[netip.Addr]struct{}, len(old)+len(addrs))
	for a := range old {
		set[a] = struct{}{}
	}
	for _, a := range addrs {
		set[a.Addr().Unmap()] = struct{}{}
	}
	q.more.Store(&set)
}

// rebuildExpected recomputes the expected sources: static_host_map (lighthouses included)
// and every address a lighthouse gave us in a query reply or punch notification. (The
// addresses our tunnels run on, for re-handshakes and renewals, the host map counts
// itself.) Called at start, on reload, and by the once-a-second tick when lighthouses told
// us something.
func (q *msg1Backlog) rebuildExpected() {
	n := q.n
	q.expectMu.Lock()
	defer q.expectMu.Unlock()
	set := make(map[netip.Addr]struct{}, len(*q.expect.Load()))
	for _, addrs := range n.staticMap() {
		for _, a := range addrs {
			set[a.Addr().Unmap()] = struct{}{}
		}
	}
	n.lh.mu.Lock()
	for _, byLH := range n.lh.learned {
		for _, addrs := range byLH {
			for _, a := range addrs {
				set[a.Addr().Unmap()] = struct{}{}
			}
		}
	}
	n.lh.mu.Unlock()
	q.expect.Store(&set)
	empty := map[netip.Addr]struct{}{}
	q.more.Store(&empty)
}

// tick ages the limiter table and the probe table.
func (q *msg1Backlog) tick(now time.Time) {
	q.limMu.Lock()
	for a, b := range q.limiter {
		if now.Sub(b.last) > 10*time.Second {
			delete(q.limiter, a)
		}
	}
	// A map keeps its size after deletes: after a join storm (a lighthouse's hosts all
	// coming back) make the table again at what it holds now.
	if l := len(q.limiter); l < q.limPeak/4 {
		m := make(map[netip.Addr]bucket, l) // not maps.Clone: it keeps the size too
		maps.Copy(m, q.limiter)
		q.limiter, q.limPeak = m, l
	} else {
		q.limPeak = max(q.limPeak, l)
	}
	q.limMu.Unlock()
	if len(*q.more.Load()) > 0 {
		q.rebuildExpected()
	}
	q.recalibrate(now)
}

// budget is the rate and burst in force.
func (q *msg1Backlog) budget() (rate, burst float64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.rate, q.burst
}

// recalibrate measures the cost of a msg 1 again once a minute, for the automatic budget:
// a measurement at start on a busy machine (where a virtual machine's stolen time counts
// on the thread's clock too) can come out several times too high, and the budget as many
// times too low for good. The lowest cost seen is kept, so the budget only rises towards
// what the cores can do.
func (q *msg1Backlog) recalibrate(now time.Time) {
	if q.n.cfg.Handshakes.Msg1Rate > 0 || now.Sub(q.measured) < time.Minute && !now.Before(q.measured) {
		return
	}
	q.measured = now
	cost := msg1Cost()
	if cost >= q.cost {
		return
	}
	q.cost = cost
	rate := msg1Rate(0, q.n.cfg.Lighthouse.AmLighthouse, q.cores, cost)
	q.mu.Lock()
	q.rate, q.burst = rate, max(rate/10, 8)
	q.mu.Unlock()
	q.n.log.Info("handshake budget", "msg1_rate", int(rate), "workers", q.workers, "msg1_cost", cost.Round(time.Microsecond))
}

// run is one handshake worker: known sources first, cheap refusals before the budget, and
// all workers together at most the budget's worth of full responder work per second.
func (q *msg1Backlog) run() {
	n := q.n
	for {
		var j msg1Job
		select {
		case j = <-q.prio:
		default:
			select {
			case j = <-q.prio:
			case j = <-q.rest:
			case <-n.done:
				return
			}
		}
		// Even refusals take their (small) share of the budget, so a flood of garbage
		// cannot keep the workers busy beyond msg1_rate/cheapCost a second.
		if !q.take(cheapCost) {
			return
		}
		start := q.mono()
		if !q.precheck(j) {
			if !q.take(1 - cheapCost) {
				return
			}
			start = q.mono() // not the wait
			n.hs.handleMsg1(j.buf, j.from, j.via)
		}
		q.busy.Add(int64(q.mono().Sub(start)))
		q.free <- j.buf
	}
}

// take blocks until c tokens are available and spends them; false when the node is
// closing. A worker that finds too few sleeps until they will have been earned, without
// holding mu, so other workers and precheck go on.
func (q *msg1Backlog) take(c float64) bool {
	for {
		q.mu.Lock()
		now := q.mono()
		if !q.last.IsZero() {
			q.tokens = min(q.burst, q.tokens+now.Sub(q.last).Seconds()*q.rate)
		}
		q.last = now
		if q.tokens >= c {
			q.tokens -= c
			q.mu.Unlock()
			return true
		}
		d := time.Duration((c - q.tokens) / q.rate * float64(time.Second))
		q.mu.Unlock()
		d = max(d, 50*time.Microsecond)
		t := time.NewTimer(d)
		select {
		case <-q.n.done:
			t.Stop()
			return false
		case <-t.C:
			q.waited.Add(int64(d))
		}
	}
}

// precheck refuses, without a signature check or DH, the msg 1s that handleMsg1 would
// refuse anyway: unreadable, a certificate that is blocklisted, from an unknown or
// blocked CA, expired, or ours, a Time too far ahead, and "too old" for a tunnel built on
// the very same certificate (whose signature we verified when the tunnel was made). It
// reports whether it refused (and counted) the msg 1. Anything else goes to handleMsg1,
// which repeats these checks on the verified certificate.
func (q *msg1Backlog) precheck(j msg1Job) bool {
	n := q.n
	b := j.buf
	const keys = 2 * 32 // IX msg 1: e, s, then the payload in clear (no key yet)
	if len(b) < header.Len+keys+2 {
		return q.refuse(dropHandshake, "invalid")
	}
	p, err := handshake.UnmarshalPayload(b[header.Len+keys:])
	if err != nil {
		return q.refuse(dropHandshake, "invalid")
	}
	if p.CertVersion == 0 && !n.pki.Load().Creds.Has(cert.Version1) {
		// Nebula before 1.10 reads only v1 certificates and we hold none: no tunnel is
		// possible. Said in the log at most once a second, counted always.
		q.mu.Lock()
		now := n.now()
		log := now.Sub(q.versionLogged) >= time.Second || now.Before(q.versionLogged)
		if log {
			q.versionLogged = now
		}
		q.mu.Unlock()
		if log {
			n.log.Info("handshake refused: the peer reads only v1 certificates (no CertVersion: Nebula before 1.10) and we hold only v2",
				"from", j.from)
		}
		return q.refuse(dropCertVersion, "no_common_version")
	}
	if p.CertVersion > uint32(cert.Version2) {
		return q.refuse(dropHandshake, "invalid")
	}
	peer, err := cert.UnmarshalHandshakeVersion(cert.Version(p.CertVersion), p.Cert, b[header.Len+32:header.Len+keys])
	if err != nil || len(peer.Details.Ips) == 0 {
		return q.refuse(dropHandshake, "invalid")
	}
	now := n.now()
	pool := n.pki.Load().Pool
	fp := peer.Fingerprint()
	// The cheap part of Verify first (lookups and dates); the signature costs the budget.
	if _, err := pool.Revalidate(peer, fp, now); err != nil {
		return q.refuse(dropHandshake, "invalid")
	}
	vpn := peer.VpnIP()
	if vpn == n.vpnIP {
		return q.refuse(dropSelf, "invalid")
	}
	if p.Time > uint64(now.UnixNano()) && time.Duration(p.Time-uint64(now.UnixNano())) > n.cfg.Handshakes.MaxClockSkew {
		return q.refuse(dropClockSkew, "")
	}
	if old := n.hosts.byVPNIP(vpn); old != nil && old.peerTime >= p.Time && old.fingerprint() == fp {
		// As handleMsg1 does for "too old", ask the old tunnel whether the peer is still
		// there, but at most once a second: a replayed msg 1 must not make us chatter.
		q.mu.Lock()
		last, ok := q.probed[old.localIndex]
		probe := !ok || now.Sub(last) >= probeEvery || now.Before(last)
		if probe {
			if len(q.probed) >= maxProbed {
				clear(q.probed)
			}
			q.probed[old.localIndex] = now
		}
		q.mu.Unlock()
		if probe {
			n.sendEncrypted(old, header.Test, header.SubtypeTestRequest, nil)
		}
		return q.refuse(dropHandshakeOld, "ignored")
	}
	return false
}

func (q *msg1Backlog) refuse(reason, outcome string) bool {
	q.n.m.dropped(reason)
	if outcome != "" {
		q.n.m.handshakes.WithLabelValues("responder", outcome).Inc()
	}
	return true
}
