package overlay

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay/replay"
)

// tunnel is one established, authenticated session with a peer. Everything the hot path
// touches is either immutable after install or atomic, so neither direction takes a lock.
type tunnel struct {
	vpnIP       netip.Addr
	localIndex  uint32
	remoteIndex uint32
	peer        *cert.Certificate
	ca          *cert.Certificate
	fwPeer      *firewall.Peer
	send, recv  *handshake.AEAD
	peerTime    uint64
	created     time.Time
	// localCert is the certificate we showed the peer (its version is the tunnel's on our
	// side; the peer's is peer.Version()).
	localCert *cert.Certificate
	// verifiedBy is the CA pool the peer's certificate last fully verified against, so the
	// per-tunnel validity check repeats no signature check until the pool changes.
	verifiedBy atomic.Pointer[cert.Pool]
	// checkAt is the tunnel's place in hostMap.checks (unix ns, 0 while not queued);
	// guarded by the queue's mutex.
	checkAt int64
	// peerFP is peer.Fingerprint(), set with the tunnel (peer keeps no fingerprint cache:
	// see newTunnel); read it with fingerprint().
	peerFP string
	// punched is when the timer loop last punched towards the peer (unix ns; punchy.punch).
	punched int64
	// versionTry is when we last re-handshook to move the tunnel to a higher certificate
	// version (unix ns), so an upgrade the peer never answers is retried only now and then.
	versionTry atomic.Int64

	// confirmed is set once the peer proved it holds the tunnel's keys: at once for our own
	// handshakes (msg2 authenticates the responder), at the first authenticated packet for
	// the peer's (see handshakeManager.confirm). Until then the send path never sees it.
	confirmed atomic.Bool
	// installed is set while the tunnel is the one the send path finds for its VPN IP:
	// the timer loop drops the others from its queue without a map lookup. (Beside
	// confirmed, in what would be padding: see TestLighthouseMemoryPerHostIsBounded.)
	installed atomic.Bool

	// allowed are the inner source addresses the peer may use: its cert IPs (as single
	// addresses, never the whole network: CVE-2025-62820) and the subnets it carries.
	allowedIPs     []netip.Addr
	allowedSubnets []netip.Prefix

	// Read per packet, written rarely.
	remote     atomic.Pointer[netip.AddrPort]
	relay      atomic.Pointer[relayEntry] // set while the tunnel runs through a relay
	lastRoam   atomic.Int64
	rekeyAsked atomic.Int64 // unix nanos of the last re-handshake a recv_error asked for
	probed     atomic.Int64 // unix nanos of the last direct probe while relayed (relay.go)

	// reply is set while the tunnel (as responder) is in handshakeManager.recent: which msg 1
	// built it, so a retransmitted copy gets the same msg 2 rather than a new tunnel. Behind
	// a pointer, dropped with the recent entry after a minute (guarded by hs.mu): 56 bytes a
	// tunnel otherwise kept for good.
	reply *msg1Reply

	// Extension queries (ext.go), cold: what the peer is known to be, and the answers it
	// may still get this second.
	extPeer atomic.Int32
	// initiator sits beside extPeer, in what would be padding.
	initiator bool
	extLimit  extLimiter

	// laneMemos are the firewall memos of lanes 1 and up: send and receive of each.
	laneMemos []firewall.Memo

	// The send path and the receive path run on different cores and each writes its own
	// fields per packet: keeping the two groups on separate cache lines stops every packet
	// one way from invalidating the line the other way reads.
	_                  cacheLinePad
	sendCounter        atomic.Uint64
	lastSend           atomic.Int64 // unix nanos
	packetsOut         atomic.Uint64
	bytesOut           atomic.Uint64
	sendMemo           atomic.Pointer[laneMemo] // lane 0's send goroutine's last admitted flow
	_                  cacheLinePad
	window             replay.Window
	recvMemo           atomic.Pointer[laneMemo] // lane 0's receive goroutine's last admitted flow
	lastRecv           atomic.Int64             // unix nanos of the last authenticated packet from the peer
	testSent           atomic.Int64             // unix nanos of an unanswered liveness probe, 0 if none
	packetsIn, bytesIn atomic.Uint64
	// No pad after the receive group: tunnels are allocated in a size class of whole 64-byte
	// lines (704 bytes), so the next object starts on a line of its own, and 64 bytes more
	// would put the tunnel in the 768-byte class. (Up to 696 bytes fit: 8 go to the
	// allocation header.)
}

// msg1Reply is what a responder tunnel keeps while a retransmitted msg 1 may still come.
type msg1Reply struct {
	sum  [32]byte // identifies the msg 1
	msg2 []byte   // our answer to it
}

// laneMemo is a lane-0 firewall memo on cache lines of its own: objects of the 128-byte
// size class start on a multiple of 128.
type laneMemo struct {
	firewall.Memo
	_ [128 - unsafe.Sizeof(firewall.Memo{})]byte
}

// memo is the firewall memo of one direction of one lane (see Node.lanes), nil for lane -1.
// Lane 0's are made at the tunnel's first data packet each way (a lighthouse's tunnels
// carry none: 160 bytes a host it would keep for nothing); further lanes' sit in
// laneMemos, made with the tunnel.
func (t *tunnel) memo(dir firewall.Direction, lane int) *firewall.Memo {
	switch {
	case lane < 0:
		return nil
	case lane == 0 && dir == firewall.Outbound:
		return lazyMemo(&t.sendMemo)
	case lane == 0:
		return lazyMemo(&t.recvMemo)
	case 2*lane-1 >= len(t.laneMemos):
		return nil
	case dir == firewall.Outbound:
		return &t.laneMemos[2*lane-2]
	}
	return &t.laneMemos[2*lane-1]
}

// lazyMemo returns *p's memo, made at the first call. Only the lane's goroutine asks.
func lazyMemo(p *atomic.Pointer[laneMemo]) *firewall.Memo {
	m := p.Load()
	if m == nil {
		m = new(laneMemo)
		if !p.CompareAndSwap(nil, m) {
			m = p.Load()
		}
	}
	return &m.Memo
}

// fingerprint is the peer certificate's fingerprint.
func (t *tunnel) fingerprint() string {
	if t.peerFP != "" {
		return t.peerFP
	}
	return t.peer.Fingerprint() // a tunnel a test made without newTunnel
}

// cacheLinePad separates fields that different cores write (64-byte lines on amd64 and
// arm64).
type cacheLinePad struct{ _ [64]byte }

func (t *tunnel) remoteAddr() netip.AddrPort {
	if p := t.remote.Load(); p != nil {
		return *p
	}
	return netip.AddrPort{}
}

func (t *tunnel) setRemote(a netip.AddrPort) { t.remote.Store(&a) }

// sourceAllowed reports whether an inner packet's source belongs to the peer's cert.
func (t *tunnel) sourceAllowed(src netip.Addr) bool {
	for _, a := range t.allowedIPs {
		if a == src {
			return true
		}
	}
	for _, p := range t.allowedSubnets {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// hostMap indexes tunnels by our local index (receive path) and by peer VPN IP (send path).
// sync.Map keeps lookups lock-free; writers serialise on mu so both maps change together.
type hostMap struct {
	mu sync.Mutex
	// byIndex and byVPN are written under mu and read without it (tunnelindex.go).
	byIndex tunnelIndex[uint32, hashUint32]
	byVPN   tunnelIndex[netip.Addr, hashAddr]
	count   atomic.Int64
	checks  checkQueue // every installed tunnel, by when its timers are next due
	// byName finds a tunnel by its peer's certificate name, lowercased (lighthouse DNS),
	// so a question costs a lookup, not a walk over every tunnel; nil unless indexNames
	// made it. Guarded by mu. Names are unique in a CA's network; of two tunnels with one
	// name it holds the latest.
	byName map[string]*tunnel
	// byRemote finds a tunnel by the peer's index (a RecvError names it), so an
	// unauthenticated RecvError costs a lookup, not a walk over every tunnel. Peers pick
	// their indexes, so two tunnels may share one: it holds the latest. Guarded by mu.
	byRemote map[uint32]*tunnel
	gone     trafficTotals // counters of tunnels no longer indexed; guarded by mu
	// remoteIPs counts the current tunnels by their peer's underlay IP, so a msg 1 from a
	// peer we have a tunnel with (a re-handshake, a renewal) goes to the priority queue
	// (hsqueue.go) at the cost of a lookup. Kept up to date at install, remove and roam:
	// it replaced a set rebuilt from every tunnel once a second while tunnels changed, an
	// O(n) pass per tick at a lighthouse (issue 18). Written under mu, then ipMu.
	ipMu      sync.RWMutex
	remoteIPs map[netip.Addr]int32
}

// countRemote adds d to the count of t's underlay IP (mu held). Relayed tunnels without a
// direct address count nothing.
func (h *hostMap) countRemote(a netip.AddrPort, d int32) {
	ip := a.Addr().Unmap()
	if !ip.IsValid() {
		return
	}
	h.ipMu.Lock()
	defer h.ipMu.Unlock()
	if h.remoteIPs == nil {
		h.remoteIPs = map[netip.Addr]int32{}
	}
	if c := h.remoteIPs[ip] + d; c > 0 {
		h.remoteIPs[ip] = c
	} else {
		delete(h.remoteIPs, ip)
	}
}

// hasRemoteIP reports whether a current tunnel's peer is at ip.
func (h *hostMap) hasRemoteIP(ip netip.Addr) bool {
	h.ipMu.RLock()
	defer h.ipMu.RUnlock()
	return h.remoteIPs[ip.Unmap()] > 0
}

// move records that t's peer now sends from a (roaming, or leaving a relay).
func (h *hostMap) move(t *tunnel, a netip.AddrPort) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byVPN.load(t.vpnIP) == t {
		h.countRemote(t.remoteAddr(), -1)
		h.countRemote(a, 1)
	}
	t.setRemote(a)
}

// trafficTotals are the packet and byte counters of one or more tunnels.
type trafficTotals struct {
	packetsIn, packetsOut, bytesIn, bytesOut uint64
}

func (s *trafficTotals) add(t *tunnel) {
	s.packetsIn += t.packetsIn.Load()
	s.packetsOut += t.packetsOut.Load()
	s.bytesIn += t.bytesIn.Load()
	s.bytesOut += t.bytesOut.Load()
}

// traffic is the node's total since start: tunnels still indexed plus those gone. Tunnels
// leave the index under mu, and their counts move to gone then, so totals never go back.
// (A packet counted by a data-path goroutine that found the tunnel just before it left is
// lost; a handful at most, once per tunnel.)
func (h *hostMap) traffic() trafficTotals {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.gone
	h.byIndex.rangeAll(func(_ uint32, t *tunnel) bool {
		s.add(t)
		return true
	})
	return s
}

func (h *hostMap) byLocalIndex(i uint32) *tunnel {
	return h.byIndex.load(i)
}

func (h *hostMap) byVPNIP(a netip.Addr) *tunnel {
	return h.byVPN.load(a)
}

// install makes t the tunnel for its VPN IP and returns the tunnel it replaced, if any. The
// replaced tunnel stays findable by its index for a grace period (see retire), so packets
// already in flight on it still decrypt.
func (h *hostMap) install(t *tunnel) (old *tunnel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old = h.byVPN.load(t.vpnIP)
	h.byIndex.store(t.localIndex, t)
	// Every certificate address finds the tunnel (a v2 peer's IPv6 ones too), so the send
	// path needs one lookup whatever the family; all() lists a tunnel only under vpnIP.
	for _, a := range t.allowedIPs {
		h.byVPN.store(a, t)
	}
	h.byVPN.store(t.vpnIP, t)
	t.installed.Store(true)
	if old != nil {
		old.installed.Store(false)
	}
	if old != t {
		h.countRemote(t.remoteAddr(), 1)
		if old != nil {
			h.countRemote(old.remoteAddr(), -1)
		}
	}
	h.checks.add(t, t.created)
	if h.byRemote == nil {
		h.byRemote = map[uint32]*tunnel{}
	}
	if old != nil && h.byRemote[old.remoteIndex] == old {
		delete(h.byRemote, old.remoteIndex)
	}
	h.byRemote[t.remoteIndex] = t
	if h.byName != nil {
		if old != nil && h.byName[nameKey(old)] == old {
			delete(h.byName, nameKey(old)) // a renewal may rename the host
		}
		h.byName[nameKey(t)] = t
	}
	if old == nil {
		h.count.Add(1)
	} else {
		for _, a := range old.allowedIPs {
			if !slices.Contains(t.allowedIPs, a) {
				h.byVPN.compareAndDelete(a, old) // a renewal dropped this address
			}
		}
	}
	return old
}

// addCandidate makes an unconfirmed tunnel findable by its index only, so the initiator's
// first packets decrypt while our send path keeps using the confirmed tunnel.
func (h *hostMap) addCandidate(t *tunnel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byIndex.store(t.localIndex, t)
}

// remove deletes t from both indexes (the VPN IP entry only if it still points at t).
func (h *hostMap) remove(t *tunnel) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.installed.Store(false)
	had := h.byIndex.compareAndDelete(t.localIndex, t)
	if had {
		h.gone.add(t)
	}
	for _, a := range t.allowedIPs {
		if a != t.vpnIP {
			h.byVPN.compareAndDelete(a, t)
		}
	}
	if h.byRemote[t.remoteIndex] == t {
		delete(h.byRemote, t.remoteIndex)
	}
	if h.byName != nil && h.byName[nameKey(t)] == t {
		delete(h.byName, nameKey(t))
	}
	if h.byVPN.compareAndDelete(t.vpnIP, t) {
		h.count.Add(-1)
		h.countRemote(t.remoteAddr(), -1)
		return true
	}
	return had
}

// byRemoteIndex finds the tunnel whose peer uses index i.
func (h *hostMap) byRemoteIndex(i uint32) *tunnel {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byRemote[i]
}

// indexNames makes the host map keep byName, before any tunnel is installed.
func (h *hostMap) indexNames() {
	h.mu.Lock()
	h.byName = map[string]*tunnel{}
	h.mu.Unlock()
}

// byPeerName finds the tunnel whose peer certificate is named name (any case).
func (h *hostMap) byPeerName(name string) *tunnel {
	key := strings.ToLower(name)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byName[key]
}

func nameKey(t *tunnel) string { return strings.ToLower(t.peer.Details.Name) }

// retire drops a replaced tunnel's index entry.
func (h *hostMap) retire(t *tunnel) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byIndex.compareAndDelete(t.localIndex, t) {
		h.gone.add(t)
	}
}

func (h *hostMap) indexInUse(i uint32) bool {
	return h.byIndex.load(i) != nil
}

// all returns the current tunnels (one per VPN IP).
func (h *hostMap) all() []*tunnel {
	var out []*tunnel
	h.byVPN.rangeAll(func(k netip.Addr, t *tunnel) bool {
		if t.vpnIP == k {
			out = append(out, t)
		}
		return true
	})
	return out
}

// allIndexed returns every tunnel reachable by index, including retired-but-in-grace ones.
func (h *hostMap) allIndexed() []*tunnel {
	var out []*tunnel
	h.byIndex.rangeAll(func(_ uint32, t *tunnel) bool {
		out = append(out, t)
		return true
	})
	return out
}

// newFirewallPeer is the identity the firewall matches rules against, built once per tunnel.
func newFirewallPeer(peer, ca *cert.Certificate) *firewall.Peer {
	caName, caFP := "", ""
	if ca != nil {
		caName, caFP = ca.Details.Name, ca.Fingerprint()
	}
	d := peer.Details
	return firewall.NewPeer(d.Name, d.Ips, d.Subnets, d.Groups, caName, caFP)
}
