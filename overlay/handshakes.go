package overlay

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay/header"
)

// pending is an outbound handshake we started and are retrying.
type pending struct {
	vpnIP      netip.Addr
	init       *handshake.Initiator
	msg1       []byte
	localIndex uint32
	tries      int
	started    time.Time
	next       time.Time
	queue      [][]byte // inner packets waiting for the tunnel
}

// bucket is a token bucket limiting handshake initiations from one source address.
type bucket struct {
	tokens float64
	last   time.Time
}

// retiring is a replaced tunnel kept reachable by index until in-flight packets have landed.
type retiring struct {
	t  *tunnel
	at time.Time
}

// retireGrace is how long a replaced tunnel still decrypts packets already in flight.
const retireGrace = 5 * time.Second

// maxLimiterEntries bounds the per-source rate-limit table against spoofed-source floods.
const maxLimiterEntries = 1 << 16

// handshakeManager owns pending outbound handshakes and the responder's defences.
type handshakeManager struct {
	n       *Node
	mu      sync.Mutex
	byVPN   map[netip.Addr]*pending
	byIndex map[uint32]*pending
	limiter map[netip.Addr]*bucket
	recent  map[[32]byte]*tunnel // msg1 digest -> tunnel it built, for retransmitted msg1
	retire  []retiring
}

func newHandshakeManager(n *Node) *handshakeManager {
	return &handshakeManager{
		n:       n,
		byVPN:   map[netip.Addr]*pending{},
		byIndex: map[uint32]*pending{},
		limiter: map[netip.Addr]*bucket{},
		recent:  map[[32]byte]*tunnel{},
	}
}

func (n *Node) handshakeConfig() *handshake.Config {
	p := n.pki.Load()
	return &handshake.Config{Cipher: n.cipher, Local: p.Creds, Pool: p.Pool, Now: n.now, Rand: n.rand}
}

// newIndex picks a random non-zero local index not in use by a tunnel or pending handshake.
// Caller holds hs.mu.
func (hs *handshakeManager) newIndex() (uint32, error) {
	var b [4]byte
	for range 32 {
		if _, err := hs.n.rand.Read(b[:]); err != nil {
			return 0, err
		}
		i := binary.BigEndian.Uint32(b[:])
		if i == 0 || hs.n.hosts.indexInUse(i) {
			continue
		}
		if _, ok := hs.byIndex[i]; ok {
			continue
		}
		return i, nil
	}
	return 0, errors.New("no free local index")
}

// trigger starts a handshake to vpn unless one is pending; pkt (may be nil) is queued and
// sent once the tunnel is up.
func (hs *handshakeManager) trigger(vpn netip.Addr, pkt []byte) {
	hs.start(vpn, pkt, false)
}

// rehandshake starts a handshake even though a tunnel exists (the peer lost its state); the
// old tunnel keeps carrying traffic until the new one is confirmed.
func (hs *handshakeManager) rehandshake(vpn netip.Addr) {
	hs.start(vpn, nil, true)
}

func (hs *handshakeManager) start(vpn netip.Addr, pkt []byte, force bool) {
	n := hs.n
	hs.mu.Lock()
	if t := n.hosts.byVPNIP(vpn); t != nil && !force {
		// A handshake completed between the caller's lookup and now.
		hs.mu.Unlock()
		if pkt != nil {
			n.sendInner(t, pkt)
		}
		return
	}
	if p, ok := hs.byVPN[vpn]; ok {
		if pkt != nil {
			if len(p.queue) < n.cfg.Handshakes.TriggerBuffer {
				p.queue = append(p.queue, append([]byte(nil), pkt...))
			} else {
				n.m.dropped(dropQueueFull)
			}
		}
		hs.mu.Unlock()
		return
	}
	addrs := n.remotesFor(vpn)
	if len(addrs) == 0 && !n.lh.client() {
		hs.mu.Unlock()
		n.m.dropped(dropNoRoute)
		n.log.Debug("no underlay address known for peer", "vpn_ip", vpn)
		return
	}
	if len(hs.byVPN) >= n.cfg.Handshakes.MaxPending {
		hs.mu.Unlock()
		n.m.dropped(dropPendingFull)
		return
	}
	idx, err := hs.newIndex()
	if err != nil {
		hs.mu.Unlock()
		n.log.Error("handshake: cannot allocate index", "err", err)
		return
	}
	init, msg1, err := handshake.Initiate(n.handshakeConfig(), idx)
	if err != nil {
		hs.mu.Unlock()
		n.log.Error("handshake: cannot start", "vpn_ip", vpn, "err", err)
		return
	}
	now := n.now()
	p := &pending{vpnIP: vpn, init: init, msg1: msg1, localIndex: idx, tries: 1, started: now,
		next: now.Add(n.cfg.Handshakes.TryInterval)}
	if pkt != nil {
		p.queue = append(p.queue, append([]byte(nil), pkt...))
	}
	hs.byVPN[vpn] = p
	hs.byIndex[idx] = p
	hs.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default: // a wake-up is already on its way
	}
	n.log.Debug("handshake: initiating", "vpn_ip", vpn, "local_index", idx, "remotes", addrs)
	n.sendRaw(msg1, addrs)
	n.lh.query(vpn)
}

// pendingMsg1 returns the msg1 of a pending handshake to vpn, or nil.
func (hs *handshakeManager) pendingMsg1(vpn netip.Addr) []byte {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if p, ok := hs.byVPN[vpn]; ok {
		return p.msg1
	}
	return nil
}

// kick retransmits a pending handshake at once, after a lighthouse told us new addresses.
func (hs *handshakeManager) kick(vpn netip.Addr) {
	hs.mu.Lock()
	p, ok := hs.byVPN[vpn]
	var msg []byte
	if ok {
		msg = p.msg1
	}
	hs.mu.Unlock()
	if ok {
		hs.n.sendRaw(msg, hs.n.remotesFor(vpn))
	}
}

// busy reports whether handshakes are pending, which the timer loop serves at the fast pace.
func (hs *handshakeManager) busy() bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return len(hs.byVPN) > 0
}

// tick retransmits due handshakes, times out stale ones and retires replaced tunnels.
func (hs *handshakeManager) tick(now time.Time) {
	n := hs.n
	type resend struct {
		vpn netip.Addr
		msg []byte
	}
	var sends []resend
	hs.mu.Lock()
	for vpn, p := range hs.byVPN {
		if now.Before(p.next) {
			continue
		}
		if p.tries >= n.cfg.Handshakes.Retries {
			delete(hs.byVPN, vpn)
			delete(hs.byIndex, p.localIndex)
			n.m.handshakes.WithLabelValues("initiator", "timeout").Inc()
			n.log.Info("handshake timed out", "vpn_ip", vpn, "tries", p.tries,
				"dropped_packets", len(p.queue))
			continue
		}
		p.tries++
		p.next = now.Add(n.cfg.Handshakes.TryInterval * time.Duration(p.tries))
		sends = append(sends, resend{vpn, p.msg1})
	}
	keep := hs.retire[:0]
	var done []*tunnel
	for _, r := range hs.retire {
		if now.Sub(r.at) >= retireGrace {
			done = append(done, r.t)
		} else {
			keep = append(keep, r)
		}
	}
	hs.retire = keep
	for k, t := range hs.recent {
		if n.hosts.byLocalIndex(t.localIndex) != t || now.Sub(t.created) > time.Minute {
			delete(hs.recent, k)
		}
	}
	for a, b := range hs.limiter {
		if now.Sub(b.last) > 10*time.Second {
			delete(hs.limiter, a)
		}
	}
	hs.mu.Unlock()
	for _, t := range done {
		n.hosts.retire(t)
	}
	for _, s := range sends {
		addrs := n.remotesFor(s.vpn)
		n.sendRaw(s.msg, addrs)
		if len(addrs) == 0 {
			n.lh.query(s.vpn)
		}
		// Direct tries continue; relays run beside them for peers we cannot reach.
		n.relay.tryRelays(s.vpn, s.msg)
	}
}

// allow applies the per-source token bucket. Caller holds hs.mu.
func (hs *handshakeManager) allow(src netip.Addr, now time.Time) bool {
	rate := hs.n.cfg.Handshakes.PerSourceRate
	b, ok := hs.limiter[src]
	if !ok {
		if len(hs.limiter) >= maxLimiterEntries {
			clear(hs.limiter)
		}
		b = &bucket{tokens: 2 * rate, last: now}
		hs.limiter[src] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * rate
	if b.tokens > 2*rate {
		b.tokens = 2 * rate
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// handleMsg1 is the responder side: verify the initiator's cert before any DH, settle races
// and replays, then answer and install the tunnel.
func (hs *handshakeManager) handleMsg1(pkt []byte, from netip.AddrPort, via *relayEntry) {
	n := hs.n
	now := n.now()
	source := from.Addr()
	if via != nil {
		source = via.hop
	}
	sum := sha256.Sum256(pkt)
	hs.mu.Lock()
	if t, ok := hs.recent[sum]; ok && n.hosts.byLocalIndex(t.localIndex) == t {
		// A retransmitted msg1 whose reply was lost: answer with the same msg2, and by the
		// path this copy came (a relay means the direct one is not working).
		msg2 := t.msg2
		if via != nil {
			t.relay.Store(via)
		}
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("responder", "ignored").Inc()
		n.reply(msg2, from, via)
		return
	}
	if !hs.allow(source, now) {
		hs.mu.Unlock()
		n.m.dropped(dropRateLimited)
		return
	}
	hs.mu.Unlock()

	init, err := handshake.ReadInit(n.handshakeConfig(), pkt)
	if err != nil {
		if errors.Is(err, handshake.ErrSelf) {
			n.m.dropped(dropSelf)
		} else {
			n.m.dropped(dropHandshake)
		}
		n.m.handshakes.WithLabelValues("responder", "invalid").Inc()
		n.log.Info("handshake refused", "from", from, "err", err)
		return
	}
	vpn := init.PeerCert.VpnIP()
	if vpn == n.vpnIP {
		n.m.dropped(dropSelf)
		return
	}
	if old := n.hosts.byVPNIP(vpn); old != nil && old.peerTime >= init.Time {
		// Only a strictly newer handshake may replace a tunnel (a recorded msg1 can't).
		n.m.dropped(dropHandshakeOld)
		n.m.handshakes.WithLabelValues("responder", "ignored").Inc()
		n.sendEncrypted(old, header.Test, header.SubtypeTestRequest, nil)
		return
	}

	hs.mu.Lock()
	var queued [][]byte
	if p, ok := hs.byVPN[vpn]; ok {
		if !n.vpnIP.Less(vpn) {
			// Both sides initiated; the higher VPN IP's handshake wins (Nebula's rule).
			hs.mu.Unlock()
			n.m.dropped(dropHandshakeRace)
			return
		}
		queued = p.queue
		delete(hs.byVPN, vpn)
		delete(hs.byIndex, p.localIndex)
	}
	idx, err := hs.newIndex()
	if err != nil {
		hs.mu.Unlock()
		return
	}
	res, msg2, err := init.Respond(idx)
	if err != nil {
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("responder", "invalid").Inc()
		n.m.dropped(dropHandshake)
		n.log.Info("handshake refused", "from", from, "err", err)
		return
	}
	t := n.newTunnel(res, false, from, via)
	t.msg1Sum = sum
	t.msg2 = msg2
	hs.recent[sum] = t
	// msg2 leaves before the send path can see the tunnel: a data packet overtaking it would
	// reach the initiator before it knows the index, be dropped, and (with a RecvError)
	// start yet another handshake. Loses a packet at every re-handshake of a renewal.
	n.reply(msg2, from, via)
	old := n.hosts.install(t)
	if old != nil {
		hs.retire = append(hs.retire, retiring{old, now})
	}
	hs.mu.Unlock()
	n.m.handshakes.WithLabelValues("responder", "ok").Inc()
	n.log.Info("tunnel up", "peer", t.peer.Details.Name, "vpn_ip", vpn, "remote", from, "role", "responder")
	n.flush(t, queued)
	n.lh.tunnelUp(t)
}

// handleMsg2 completes a handshake we initiated.
func (hs *handshakeManager) handleMsg2(pkt []byte, from netip.AddrPort, via *relayEntry, index uint32) {
	n := hs.n
	hs.mu.Lock()
	p, ok := hs.byIndex[index]
	if !ok {
		hs.mu.Unlock()
		n.m.dropped(dropUnknownIndex)
		return
	}
	res, err := p.init.Complete(pkt)
	if err != nil {
		if errors.Is(err, handshake.ErrNoiseRead) {
			// Unauthenticated garbage (or a cipher mismatch) must not kill our attempt.
			hs.mu.Unlock()
			n.m.dropped(dropHandshake)
			return
		}
		delete(hs.byVPN, p.vpnIP)
		delete(hs.byIndex, index)
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("initiator", "invalid").Inc()
		n.m.dropped(dropHandshake)
		n.log.Warn("handshake failed", "vpn_ip", p.vpnIP, "from", from, "err", err)
		return
	}
	if got := res.PeerCert.VpnIP(); got != p.vpnIP {
		delete(hs.byVPN, p.vpnIP)
		delete(hs.byIndex, index)
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("initiator", "invalid").Inc()
		n.log.Warn("incorrect host responded to handshake", "wanted", p.vpnIP, "got", got, "from", from)
		return
	}
	delete(hs.byVPN, p.vpnIP)
	delete(hs.byIndex, index)
	t := n.newTunnel(res, true, from, via)
	old := n.hosts.install(t)
	if old != nil {
		hs.retire = append(hs.retire, retiring{old, n.now()})
	}
	queued := p.queue
	hs.mu.Unlock()
	n.m.handshakes.WithLabelValues("initiator", "ok").Inc()
	n.log.Info("tunnel up", "peer", t.peer.Details.Name, "vpn_ip", p.vpnIP, "remote", from, "role", "initiator")
	n.flush(t, queued)
	n.lh.tunnelUp(t)
}

// pendingCount is the number of outbound handshakes in progress.
func (hs *handshakeManager) pendingCount() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return len(hs.byVPN)
}

func (n *Node) newTunnel(r *handshake.Result, initiator bool, from netip.AddrPort, via *relayEntry) *tunnel {
	now := n.now()
	t := &tunnel{
		vpnIP: r.PeerCert.VpnIP(), localIndex: r.LocalIndex, remoteIndex: r.RemoteIndex,
		peer: r.PeerCert, ca: r.CA, send: r.Send, recv: r.Recv, peerTime: r.PeerTime,
		initiator: initiator, created: now,
	}
	for _, p := range r.PeerCert.Details.Ips {
		t.allowedIPs = append(t.allowedIPs, p.Addr())
	}
	t.allowedSubnets = append(t.allowedSubnets, r.PeerCert.Details.Subnets...)
	t.fwPeer = newFirewallPeer(r.PeerCert, r.CA)
	if len(n.lanes) > 1 {
		t.laneMemos = make([]firewall.Memo, 2*(len(n.lanes)-1))
	}
	// Handshake messages used counters 1 and 2; the first data packet carries 3.
	t.sendCounter.Store(2)
	if via != nil {
		t.relay.Store(via)
	} else {
		t.setRemote(from)
	}
	t.lastRecv.Store(now.UnixNano())
	return t
}
