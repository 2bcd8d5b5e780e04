package overlay

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay/header"
)

// pending is an outbound handshake we started and are retrying.
type pending struct {
	vpnIP      netip.Addr
	version    cert.Version // of the certificate msg1 carries
	sentV2     int          // tries of a v2 msg1 that had an address to go to
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

// Bounds on responder-side tunnels whose initiator has not yet proved it holds the keys
// (candidates). IX's msg 1 proves nothing about the sender's static key, so a candidate
// may be a stranger's forgery: it is findable by index (the genuine initiator's first
// packets decrypt on it) but the send path never sees it until a packet authenticates.
const (
	candidateTimeout  = 10 * time.Second // as long as an initiator retries msg 1
	candidateNudge    = time.Second      // a Test request on the candidate asks for proof
	maxCandidatesPeer = 8                // per claimed VPN IP
	maxCandidates     = 1024             // in all
)

// candidate is an answered msg 1 waiting for its first authenticated packet.
type candidate struct {
	t        *tunnel
	expected bool // came from an address we already knew for the peer
	nudged   time.Time
}

// Certificate versions (Nebula 1.10+). A host holding v1 and v2 certificates that starts
// in v2 cannot tell a Nebula 1.6 peer (which drops a v2 msg 1 without a word) from a slow
// one, so after fallbackAfter unanswered v2 tries it sends v1 instead, and for
// versionRetry it starts in v1 with that peer and does not try to move it to v2.
const (
	fallbackAfter = 4
	versionRetry  = 10 * time.Minute
	// upgradeEvery spaces re-handshakes that move a tunnel to a higher version.
	upgradeEvery = time.Minute
)

// maxLimiterEntries bounds the per-source rate-limit table against spoofed-source floods.
const maxLimiterEntries = 1 << 16

// handshakeManager owns pending outbound handshakes and the responder's defences.
type handshakeManager struct {
	n       *Node
	mu      sync.Mutex
	byVPN   map[netip.Addr]*pending
	byIndex map[uint32]*pending
	recent  map[[32]byte]*tunnel // msg1 digest -> tunnel it built, for retransmitted msg1
	// inFlight holds the digests of msg1s a handshake worker is answering outside mu, and
	// reserved the local indexes their answers will use (workers run in parallel).
	inFlight map[[32]byte]struct{}
	reserved map[uint32]struct{}
	// recentOrder is recent's keys oldest first, so a tick ages out only what is due
	// instead of walking every handshake of the last minute (a lighthouse's join storm).
	// It holds keys, not tunnels, so dropped candidates (a flood) are not kept alive.
	recentOrder []recentKey
	retire      []retiring
	cands       map[uint32]*candidate // by our local index
	candsBy     map[netip.Addr]int    // candidates per claimed VPN IP
	candTTL     time.Duration         // candidateTimeout; tests shorten it
	// noV2 holds the peers whose v2 msg1 went unanswered until v1 was tried, and when.
	noV2 map[netip.Addr]time.Time
}

// recentKey names an entry of handshakeManager.recent: the msg 1 digest and the local
// index of the tunnel it built (a later msg 1 with the same digest builds another).
type recentKey struct {
	sum   [32]byte
	index uint32
}

func newHandshakeManager(n *Node) *handshakeManager {
	return &handshakeManager{
		n:        n,
		byVPN:    map[netip.Addr]*pending{},
		byIndex:  map[uint32]*pending{},
		recent:   map[[32]byte]*tunnel{},
		inFlight: map[[32]byte]struct{}{},
		reserved: map[uint32]struct{}{},
		cands:    map[uint32]*candidate{},
		candsBy:  map[netip.Addr]int{},
		candTTL:  candidateTimeout,
		noV2:     map[netip.Addr]time.Time{},
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
		if _, ok := hs.reserved[i]; ok {
			continue
		}
		return i, nil
	}
	return 0, errors.New("no free local index")
}

// trigger starts a handshake to vpn unless one is pending; pkt (may be nil) is queued and
// sent once the tunnel is up.
func (hs *handshakeManager) trigger(vpn netip.Addr, pkt []byte) {
	hs.start(vpn, pkt, false, 0)
}

// rehandshake starts a handshake even though a tunnel exists (the peer lost its state); the
// old tunnel keeps carrying traffic until the new one is confirmed.
func (hs *handshakeManager) rehandshake(vpn netip.Addr) {
	hs.start(vpn, nil, true, 0)
}

// initVersion is the certificate version a handshake to vpn starts with: want if held, else
// pki.initiating_version, raised to v2 for an IPv6 target (a v1 certificate cannot name
// one) and lowered to v1 for a peer that recently left a v2 msg1 unanswered. Caller holds
// hs.mu.
func (hs *handshakeManager) initVersion(creds *handshake.Credentials, vpn netip.Addr, want cert.Version, now time.Time) cert.Version {
	if want != 0 && creds.Has(want) {
		return want
	}
	v := creds.Initiating()
	if v < cert.Version2 && vpn.Is6() && creds.Has(cert.Version2) {
		return cert.Version2
	}
	if v == cert.Version2 && creds.Has(cert.Version1) && vpn.Is4() {
		if at, ok := hs.noV2[vpn]; ok && now.Sub(at) < versionRetry && !now.Before(at) {
			return cert.Version1
		}
	}
	return v
}

func (hs *handshakeManager) start(vpn netip.Addr, pkt []byte, force bool, want cert.Version) {
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
	now := n.now()
	cfg := n.handshakeConfig()
	cfg.Version = hs.initVersion(cfg.Local, vpn, want, now)
	init, msg1, err := handshake.Initiate(cfg, idx)
	if err != nil {
		hs.mu.Unlock()
		n.log.Error("handshake: cannot start", "vpn_ip", vpn, "err", err)
		return
	}
	p := &pending{vpnIP: vpn, version: cfg.Version, init: init, msg1: msg1, localIndex: idx, tries: 1, started: now,
		next: now.Add(n.cfg.Handshakes.TryInterval)}
	if len(addrs) > 0 && p.version == cert.Version2 {
		p.sentV2 = 1
	}
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
	n.log.Debug("handshake: initiating", "vpn_ip", vpn, "local_index", idx, "remotes", addrs, "cert_version", p.version)
	n.sendRaw(msg1, addrs)
	n.lh.query(vpn)
}

// fallBack turns a pending v2 handshake that got no answer into a v1 one (same index, so
// a late v2 msg2 is still found, fails to decrypt and is ignored), when we hold a v1
// certificate: the peer is likely Nebula before 1.10, which drops v2 without a reply.
// Caller holds hs.mu.
func (hs *handshakeManager) fallBack(p *pending, now time.Time) {
	n := hs.n
	cfg := n.handshakeConfig()
	if !cfg.Local.Has(cert.Version1) {
		return
	}
	cfg.Version = cert.Version1
	init, msg1, err := handshake.Initiate(cfg, p.localIndex)
	if err != nil {
		n.log.Error("handshake: cannot fall back to v1", "vpn_ip", p.vpnIP, "err", err)
		return
	}
	p.init, p.msg1, p.version = init, msg1, cert.Version1
	hs.noV2[p.vpnIP] = now
	n.m.handshakes.WithLabelValues("initiator", "fallback_v1").Inc()
	n.log.Info("handshake: no answer to our v2 certificate; trying v1 (the peer may be Nebula before 1.10)",
		"vpn_ip", p.vpnIP, "tries", p.tries)
}

// upgrade re-handshakes tunnel t onto a higher certificate version, as Nebula 1.10+ does:
// the peer's version when it is above ours on the tunnel and we hold it, or
// pki.initiating_version when the tunnel is below it (unless the peer left a v2 msg1
// unanswered lately: then it is Nebula 1.6 and stays on v1). The old tunnel carries traffic
// until the new one is up, so nothing is lost. Called once a second per tunnel.
func (hs *handshakeManager) upgrade(t *tunnel, creds *handshake.Credentials, now time.Time) {
	if t.localCert == nil {
		return
	}
	lv, pv := t.localCert.Version(), t.peer.Version()
	var want cert.Version
	var why string
	switch {
	case lv < pv && creds.Has(pv):
		want, why = pv, "the peer's certificate version is higher"
	case lv < creds.Initiating():
		hs.mu.Lock()
		at, ok := hs.noV2[t.vpnIP]
		hs.mu.Unlock()
		if ok && pv < creds.Initiating() && now.Sub(at) < versionRetry && !now.Before(at) {
			return
		}
		want, why = creds.Initiating(), "the tunnel is below pki.initiating_version"
	default:
		return
	}
	if last := t.versionTry.Load(); last != 0 && now.Sub(time.Unix(0, last)) < upgradeEvery {
		return
	}
	t.versionTry.Store(now.UnixNano())
	hs.n.log.Info("re-handshaking to a higher certificate version", "vpn_ip", t.vpnIP, "cert_version", lv,
		"peer_cert_version", pv, "want", want, "reason", why)
	hs.start(t.vpnIP, nil, true, want)
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
	var timedOut []*pending
	hs.mu.Lock()
	for vpn, p := range hs.byVPN {
		if now.Before(p.next) {
			continue
		}
		if p.tries >= n.cfg.Handshakes.Retries {
			delete(hs.byVPN, vpn)
			delete(hs.byIndex, p.localIndex)
			n.m.handshakes.WithLabelValues("initiator", "timeout").Inc()
			timedOut = append(timedOut, p)
			continue
		}
		if p.version == cert.Version2 && p.sentV2 >= fallbackAfter {
			hs.fallBack(p, now)
		}
		p.tries++
		if p.version == cert.Version2 && len(n.remotesFor(vpn)) > 0 {
			p.sentV2++
		}
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
	var nudge []*tunnel
	for idx, c := range hs.cands {
		switch {
		case now.Sub(c.t.created) >= hs.candTTL:
			hs.dropCandidate(idx, c)
			done = append(done, c.t)
			n.m.handshakes.WithLabelValues("responder", "unconfirmed").Inc()
		case now.Sub(c.nudged) >= candidateNudge:
			c.nudged = now
			nudge = append(nudge, c.t)
		}
	}
	// A tunnel that left the index early stays until its minute is over (handleMsg1 checks
	// the index before answering from it); dropped candidates left already (dropCandidate).
	aged := 0
	for _, k := range hs.recentOrder {
		if t, ok := hs.recent[k.sum]; ok && t.localIndex == k.index {
			if now.Sub(t.created) <= time.Minute && !now.Before(t.created) {
				break
			}
			delete(hs.recent, k.sum)
			t.reply = nil // only a retransmitted msg 1 needs it, and only while in recent
		}
		aged++
	}
	clear(hs.recentOrder[:aged])
	hs.recentOrder = hs.recentOrder[aged:]
	if len(hs.recentOrder) == 0 {
		hs.recentOrder = nil // let a storm's backing array go
	}
	for vpn, at := range hs.noV2 {
		if now.Sub(at) >= versionRetry || now.Before(at) {
			delete(hs.noV2, vpn)
		}
	}
	hs.mu.Unlock()
	for _, p := range timedOut {
		switch {
		case p.version == cert.Version2 && !n.pki.Load().Creds.Has(cert.Version1):
			n.log.Info("handshake timed out", "vpn_ip", p.vpnIP, "tries", p.tries, "dropped_packets", len(p.queue),
				"cert_version", p.version, "hint", "we hold only a v2 certificate; Nebula before 1.10 cannot read it")
		case n.relay.knowsRelays(p.vpnIP):
			n.log.Info("handshake timed out", "vpn_ip", p.vpnIP, "tries", p.tries, "dropped_packets", len(p.queue),
				"cert_version", p.version)
		default:
			// The usual cause is two NATs that defeat hole punching; say what would help.
			n.log.Info("handshake timed out", "vpn_ip", p.vpnIP, "tries", p.tries, "dropped_packets", len(p.queue),
				"cert_version", p.version,
				"hint", "no relay known for the peer; hosts behind NAT need relays: relay.am_relay on a lighthouse, relay.relays on the hosts")
		}
	}
	for _, t := range done {
		n.hosts.retire(t)
	}
	for _, t := range nudge {
		n.sendEncrypted(t, header.Test, header.SubtypeTestRequest, nil)
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

// handleMsg1 is the responder side, run by the handshake worker (msg1Backlog.run) after the
// per-source limit and the budget: verify the initiator's cert before any DH, settle races
// and replays, then answer. The answer's tunnel is only a candidate until a packet
// authenticates under its keys (confirm): msg 1 shows a certificate and a static public key
// but proves nothing about the private key, so an off-path stranger who has seen a host's
// certificate could otherwise replace, redirect or block that host's tunnel.
func (hs *handshakeManager) handleMsg1(pkt []byte, from netip.AddrPort, via *relayEntry) {
	n := hs.n
	now := n.now()
	sum := sha256.Sum256(pkt)
	hs.mu.Lock()
	if _, ok := hs.inFlight[sum]; ok {
		// Another worker is answering this very msg1 (a retransmission that overtook
		// it); its msg2 answers both.
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("responder", "ignored").Inc()
		return
	}
	if t, ok := hs.recent[sum]; ok && n.hosts.byLocalIndex(t.localIndex) == t {
		// A retransmitted msg1 whose reply was lost: answer with the same msg2. Only an
		// unconfirmed tunnel follows the path this copy came by (a relay means the direct
		// one is not working); a confirmed one moves only on authenticated packets.
		msg2 := t.reply.msg2
		if via != nil && !t.confirmed.Load() {
			t.relay.Store(via)
		}
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("responder", "ignored").Inc()
		n.reply(msg2, from, via)
		return
	}
	hs.mu.Unlock()

	init, err := handshake.ReadInit(n.handshakeConfig(), pkt)
	if err != nil {
		if errors.Is(err, handshake.ErrSelf) {
			n.m.dropped(dropSelf)
		} else if errors.Is(err, handshake.ErrVersion) {
			n.m.dropped(dropCertVersion)
			n.m.handshakes.WithLabelValues("responder", "no_common_version").Inc()
			n.log.Info("handshake refused", "from", from, "err", err)
			return
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
	if skew := time.Duration(int64(init.Time) - now.UnixNano()); init.Time > uint64(now.UnixNano()) && skew > n.cfg.Handshakes.MaxClockSkew {
		// A Time far ahead of ours would, once confirmed, make every later handshake of the
		// peer look "too old" until the tunnel died. A peer whose clock is that wrong has
		// to fix it (its certificates' validity depends on it too).
		n.m.dropped(dropClockSkew)
		n.log.Info("handshake refused: peer clock ahead of ours", "from", from, "peer", init.PeerCert.Details.Name,
			"ahead", skew.Round(time.Second), "max", n.cfg.Handshakes.MaxClockSkew)
		return
	}
	old := n.hosts.byVPNIP(vpn)
	if old != nil && old.peerTime >= init.Time {
		// Only a strictly newer handshake may replace a tunnel: a recorded msg1 costs us no
		// Diffie-Hellman work. (A forged one with a newer Time gets a candidate that never
		// confirms.) The probe on the old tunnel finds out whether the peer lost it.
		n.m.dropped(dropHandshakeOld)
		n.m.handshakes.WithLabelValues("responder", "ignored").Inc()
		n.sendEncrypted(old, header.Test, header.SubtypeTestRequest, nil)
		return
	}
	// A candidate from an address we already knew for the peer is kept over others when the
	// bounds are reached: a stranger who does not know it cannot push it out.
	expected := old != nil && old.relay.Load() == nil && old.remoteAddr() == from
	if !expected && via == nil {
		for _, a := range n.remotesFor(vpn) {
			if a == from {
				expected = true
				break
			}
		}
	}

	hs.mu.Lock()
	if _, ok := hs.byVPN[vpn]; ok && !n.vpnIP.Less(vpn) {
		// Both sides initiated; the higher VPN IP's handshake wins (Nebula's rule). When
		// the peer's wins we answer it but keep our own attempt until the answer is
		// confirmed: an unproven msg1 must not cancel a genuine handshake.
		hs.mu.Unlock()
		n.m.dropped(dropHandshakeRace)
		return
	}
	if _, ok := hs.inFlight[sum]; ok || hs.recent[sum] != nil {
		// Answered by another worker since the check above.
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("responder", "ignored").Inc()
		return
	}
	idx, err := hs.newIndex()
	if err != nil {
		hs.mu.Unlock()
		return
	}
	// The DH work is done outside mu, so the other workers and the receive path (msg2,
	// confirmations) do not wait for it; the index and the digest are held meanwhile.
	hs.reserved[idx] = struct{}{}
	hs.inFlight[sum] = struct{}{}
	hs.mu.Unlock()
	res, msg2, err := init.Respond(idx)
	hs.mu.Lock()
	delete(hs.reserved, idx)
	delete(hs.inFlight, sum)
	if err != nil {
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("responder", "invalid").Inc()
		n.m.dropped(dropHandshake)
		n.log.Info("handshake refused", "from", from, "err", err)
		return
	}
	t := n.newTunnel(res, false, from, via)
	t.reply = &msg1Reply{sum: sum, msg2: msg2}
	evicted := hs.addCandidate(t, expected, now)
	hs.recent[sum] = t
	hs.recentOrder = append(hs.recentOrder, recentKey{sum, idx})
	// Findable by index before msg2 leaves, so the initiator's first packets decrypt.
	n.hosts.addCandidate(t)
	hs.mu.Unlock()
	for _, e := range evicted {
		n.hosts.retire(e)
	}
	n.reply(msg2, from, via)
	// The initiator may have nothing to send; its answer to this probe confirms the tunnel.
	n.sendEncrypted(t, header.Test, header.SubtypeTestRequest, nil)
	n.m.handshakes.WithLabelValues("responder", "answered").Inc()
	n.log.Debug("handshake answered; waiting for the peer's first packet", "peer", t.peer.Details.Name,
		"vpn_ip", vpn, "remote", from, "local_index", idx)
}

// addCandidate records t as unconfirmed, pushing out older candidates beyond the bounds
// (unexpected sources first). It returns the tunnels pushed out, to be unindexed by the
// caller. Caller holds hs.mu.
func (hs *handshakeManager) addCandidate(t *tunnel, expected bool, now time.Time) []*tunnel {
	var out []*tunnel
	evict := func(samePeer bool) {
		var victim uint32
		var vc *candidate
		for idx, c := range hs.cands {
			if samePeer && c.t.vpnIP != t.vpnIP {
				continue
			}
			if vc == nil || (vc.expected && !c.expected) ||
				(vc.expected == c.expected && c.t.created.Before(vc.t.created)) {
				victim, vc = idx, c
			}
		}
		if vc != nil {
			hs.dropCandidate(victim, vc)
			out = append(out, vc.t)
			hs.n.m.dropped(dropCandidateEvicted)
		}
	}
	if hs.candsBy[t.vpnIP] >= maxCandidatesPeer {
		evict(true)
	}
	if len(hs.cands) >= maxCandidates {
		evict(false)
	}
	hs.cands[t.localIndex] = &candidate{t: t, expected: expected, nudged: now}
	hs.candsBy[t.vpnIP]++
	return out
}

// dropCandidate forgets a candidate (the caller unindexes its tunnel). Caller holds hs.mu.
func (hs *handshakeManager) dropCandidate(idx uint32, c *candidate) {
	delete(hs.cands, idx)
	if hs.candsBy[c.t.vpnIP]--; hs.candsBy[c.t.vpnIP] <= 0 {
		delete(hs.candsBy, c.t.vpnIP)
	}
	if r := c.t.reply; r != nil && hs.recent[r.sum] == c.t {
		delete(hs.recent, r.sum)
		c.t.reply = nil
	}
}

// confirm promotes a candidate once a packet authenticated under its keys: the initiator
// holds them, so the tunnel becomes the peer's (replacing the old one, which stays
// decryptable for retireGrace), takes over our own pending handshake to the peer and its
// queued packets, and is told to the lighthouse. Called from the receive path.
func (hs *handshakeManager) confirm(t *tunnel, now time.Time) {
	n := hs.n
	hs.mu.Lock()
	c, ok := hs.cands[t.localIndex]
	if !ok || c.t != t {
		hs.mu.Unlock() // another lane confirmed it, or it timed out meanwhile
		return
	}
	hs.dropCandidate(t.localIndex, c)
	t.confirmed.Store(true)
	if t.peer.Version() == cert.Version2 {
		delete(hs.noV2, t.vpnIP) // the peer reads v2
	}
	pool := n.pki.Load().Pool
	if _, err := pool.Revalidate(t.peer, t.fingerprint(), now); err != nil {
		// Revoked or expired while unconfirmed (ReadInit checked the signature).
		hs.mu.Unlock()
		n.hosts.retire(t)
		n.log.Info("handshake dropped: peer certificate no longer valid", "vpn_ip", t.vpnIP, "err", err)
		return
	}
	t.verifiedBy.Store(pool)
	cur := n.hosts.byVPNIP(t.vpnIP)
	if cur != nil && cur.created.After(t.created) {
		// A newer tunnel came up meanwhile (our own handshake); keep it. This one still
		// decrypts what the peer sends on it until it retires.
		hs.retire = append(hs.retire, retiring{t, now})
		hs.mu.Unlock()
		return
	}
	var queued [][]byte
	for _, a := range t.allowedIPs { // our own handshake to any of the peer's addresses
		if p, ok := hs.byVPN[a]; ok {
			queued = append(queued, p.queue...)
			delete(hs.byVPN, a)
			delete(hs.byIndex, p.localIndex)
		}
	}
	old := n.hosts.install(t)
	if old != nil {
		hs.retire = append(hs.retire, retiring{old, now})
	}
	hs.mu.Unlock()
	n.m.handshakes.WithLabelValues("responder", "ok").Inc()
	n.log.Info("tunnel up", "peer", t.peer.Details.Name, "vpn_ip", t.vpnIP, "remote", t.remoteAddr(), "role", "responder",
		"cert_version", t.localCert.Version(), "peer_cert_version", t.peer.Version())
	n.flush(t, queued)
	n.lh.tunnelUp(t)
	hs.renewIfStale(t)
}

// renewIfStale re-handshakes a tunnel just installed when it carries a certificate of ours
// that SetPKI replaced while its handshake was in flight (our msg 1 or msg 2 was built
// before the swap): SetPKI re-handshakes only installed tunnels, so without this the peer
// would keep our old certificate until it expired. The check runs after install, and
// SetPKI swaps before it scans, so every such tunnel is caught by one or the other (at
// worst both; start runs one handshake per peer). A tunnel with no certificate of ours on
// record (no handshake makes one) is left to SetPKI's scan.
func (hs *handshakeManager) renewIfStale(t *tunnel) {
	if t.localCert == nil || holdsCert(hs.n.pki.Load().Creds, t.localCert) || hs.n.hosts.byVPNIP(t.vpnIP) != t {
		return
	}
	hs.n.log.Info("re-handshaking a tunnel built on our replaced certificate", "vpn_ip", t.vpnIP)
	hs.rehandshake(t.vpnIP)
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
	// The handshake may have targeted any of the peer's addresses (an IPv6 one of a host
	// whose first network is IPv4, say); the tunnel is then filed under all of them.
	if got := res.PeerCert.VpnIP(); got != p.vpnIP && !certHasAddr(res.PeerCert, p.vpnIP) {
		delete(hs.byVPN, p.vpnIP)
		delete(hs.byIndex, index)
		hs.mu.Unlock()
		n.m.handshakes.WithLabelValues("initiator", "invalid").Inc()
		n.log.Warn("incorrect host responded to handshake", "wanted", p.vpnIP, "got", got, "from", from)
		return
	}
	delete(hs.byVPN, p.vpnIP)
	delete(hs.byIndex, index)
	if res.LocalVersion == cert.Version2 {
		delete(hs.noV2, p.vpnIP)
	}
	t := n.newTunnel(res, true, from, via)
	// msg2 authenticates the responder (its payload is sealed under its static key).
	t.confirmed.Store(true)
	old := n.hosts.install(t)
	if old != nil {
		hs.retire = append(hs.retire, retiring{old, n.now()})
	}
	queued := p.queue
	hs.mu.Unlock()
	n.m.handshakes.WithLabelValues("initiator", "ok").Inc()
	n.log.Info("tunnel up", "peer", t.peer.Details.Name, "vpn_ip", p.vpnIP, "remote", from, "role", "initiator",
		"cert_version", res.LocalVersion, "peer_cert_version", res.PeerCert.Version())
	n.flush(t, queued)
	n.lh.tunnelUp(t)
	hs.renewIfStale(t)
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
		// The fingerprint is kept here (the handshake computed it for the blocklist), so
		// the certificate goes without its fingerprint cache (a deep copy of it).
		peerFP: r.PeerCert.Fingerprint(), peer: r.PeerCert.Uncached(), ca: r.CA, send: r.Send, recv: r.Recv, peerTime: r.PeerTime,
		initiator: initiator, created: now, localCert: r.LocalCert,
	}
	if r.CA != nil && t.peer.Details.Issuer == r.CA.Fingerprint() {
		// The same 64 hex characters in every peer's certificate: share the CA's string.
		t.peer.Details.Issuer = r.CA.Fingerprint()
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

// certHasAddr reports whether a is one of c's networks' addresses.
func certHasAddr(c *cert.Certificate, a netip.Addr) bool {
	for _, p := range c.Details.Ips {
		if p.Addr() == a {
			return true
		}
	}
	return false
}
