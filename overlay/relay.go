package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/header"
	"github.com/meshnode/meshnode/overlay/udp"
)

// Relays (Nebula 1.6, NEBULA-WIRE §6): A reaches B through R when they cannot reach each
// other directly. R keeps a pair of relay entries joined back to back; each endpoint keeps
// one entry naming the hop (R) and the far peer. Frames are authenticated (not encrypted)
// by the hop tunnel's key and replay window; the end-to-end packet inside is a complete,
// already encrypted Nebula packet.

// Control message types (NebulaControl.Type).
const (
	controlCreateRelayRequest  = 1
	controlCreateRelayResponse = 2
)

// control is a decoded NebulaControl.
type control struct {
	Type           uint32
	InitiatorIndex uint32
	ResponderIndex uint32
	RelayTo        netip.Addr
	RelayFrom      netip.Addr
	// v2 writes the addresses in Nebula 1.10+'s RelayToAddr/RelayFromAddr (fields 6 and 7):
	// on tunnels built on v2 certificates, and always for IPv6, which fields 4 and 5 cannot
	// hold. Decoding takes either form; a non-zero v1 field wins, as for lighthouse messages.
	v2 bool
}

// controlFor is c in the form the tunnel it goes on needs.
func controlFor(t *tunnel, c *control) []byte {
	c.v2 = t.localCert.Version() == cert.Version2 || c.RelayTo.Is6() || c.RelayFrom.Is6()
	return c.marshal()
}

func addrU32(a netip.Addr) uint64 {
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	return uint64(binary.BigEndian.Uint32(b[:]))
}

func u32Addr(v uint64) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(v))
	return netip.AddrFrom4(b)
}

// marshal encodes in ascending field order, omitting zero values (proto3).
func (c *control) marshal() []byte {
	var b []byte
	put := func(num protowire.Number, v uint64) {
		if v != 0 {
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	put(1, uint64(c.Type))
	put(2, uint64(c.InitiatorIndex))
	put(3, uint64(c.ResponderIndex))
	if !c.v2 {
		put(4, addrU32(c.RelayTo))
		put(5, addrU32(c.RelayFrom))
		return b
	}
	for _, f := range []struct {
		num protowire.Number
		a   netip.Addr
	}{{6, c.RelayTo}, {7, c.RelayFrom}} {
		if f.a.IsValid() {
			b = protowire.AppendTag(b, f.num, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(lighthouse.AddrMessageSize(f.a)))
			b = lighthouse.AppendAddrMessage(b, f.a)
		}
	}
	return b
}

var errControl = errors.New("malformed relay control message")

// unmarshalControl decodes a NebulaControl; unknown fields are skipped as proto3 does.
func unmarshalControl(b []byte) (*control, error) {
	c := &control{RelayTo: u32Addr(0), RelayFrom: u32Addr(0)}
	var to2, from2 netip.Addr
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errControl
		}
		b = b[n:]
		if (num == 6 || num == 7) && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, errControl
			}
			a, err := lighthouse.ParseAddrMessage(v)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", errControl, err)
			}
			if num == 6 {
				to2 = a
			} else {
				from2 = a
			}
			b = b[m:]
			continue
		}
		if typ != protowire.VarintType {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, errControl
			}
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeVarint(b)
		if m < 0 {
			return nil, errControl
		}
		b = b[m:]
		if v > 0xffffffff && num <= 5 {
			return nil, fmt.Errorf("%w: field %d out of range", errControl, num)
		}
		switch num {
		case 1:
			c.Type = uint32(v)
		case 2:
			c.InitiatorIndex = uint32(v)
		case 3:
			c.ResponderIndex = uint32(v)
		case 4:
			c.RelayTo = u32Addr(v)
		case 5:
			c.RelayFrom = u32Addr(v)
		}
	}
	if to2.IsValid() && c.RelayTo.IsUnspecified() {
		c.RelayTo, c.v2 = to2, true
	}
	if from2.IsValid() && c.RelayFrom.IsUnspecified() {
		c.RelayFrom, c.v2 = from2, true
	}
	return c, nil
}

// relayEntry is one side of a relay. localIndex is what the hop writes into frames for us;
// remoteIndex is what we write into frames for the hop (0 until the hop has answered).
type relayEntry struct {
	localIndex  uint32
	remoteIndex atomic.Uint32
	hop         netip.Addr // VPN IP of the tunnel the frames travel on
	peer        netip.Addr // the far end-to-end peer (endpoints) or the other side (relay)
	forward     *relayEntry
	created     time.Time
	requester   netip.Addr // relay pairs: the peer whose request made the pair
	// askedTo and askedFrom are the addresses the requester's last request named (relay
	// side of the requester; guarded by relayTable.mu): the response repeats them, since a
	// v2 requester may have named the target by an IPv6 address and looks its relay up by it.
	askedTo, askedFrom netip.Addr
	removed            bool // guarded by relayTable.mu
}

// Bounds of the relay table (issue 12). A relay holds a pair of entries for each
// (initiator, target) it carries and a requester needs one pair per peer it reaches through
// this relay, so a few dozen pairs per requester is far more than a host behind a hard NAT
// uses; the total leaves room for a lighthouse relaying for a large fleet. An entry costs
// about 100 bytes. Beyond either bound a request is refused and counted (relay_limit).
const (
	relayMaxPairsPerPeer = 64
	relayMaxEntries      = 16384
	// relayIdleEndpoint is how long an endpoint entry may live with no tunnel to its far
	// peer: a relay we listed could otherwise fill our table with requests for peers that
	// never handshake.
	relayIdleEndpoint = time.Minute
	// relayProbeInterval is how often a relayed tunnel tries the direct path. Both ends
	// probe, and a probe's NAT mapping lives about 30 s (Linux's unreplied UDP timeout, and
	// common home routers'), so the two ends' probes overlap in each other's lifetime.
	relayProbeInterval = 10 * time.Second
)

// RelayProbeInterval is relayProbeInterval, for status output.
const RelayProbeInterval = relayProbeInterval

var errRelayFull = errors.New("relay table full")

// relayTable holds relay entries by local index, an endpoint's entries by far peer, and a
// relay's pairs by (hop, peer).
type relayTable struct {
	// byIndex maps a local index to its *relayEntry. Frames look it up on the receive path
	// without a lock (sync.Map is made for read-mostly keys); writers hold mu.
	byIndex sync.Map

	mu      sync.Mutex
	entries int                           // entries in byIndex
	byPeer  map[netip.Addr][]*relayEntry  // endpoint entries, for sending to a relayed peer
	pairs   map[[2]netip.Addr]*relayEntry // relay sides by (hop, peer): a retried request finds its pair
	asked   map[netip.Addr]int            // relay pairs by the peer that asked for them
	// Bounds; fields so tests can lower them.
	maxPairsPerPeer, maxEntries int
}

func (rt *relayTable) init() {
	rt.byPeer = map[netip.Addr][]*relayEntry{}
	rt.pairs = map[[2]netip.Addr]*relayEntry{}
	rt.asked = map[netip.Addr]int{}
	rt.maxPairsPerPeer, rt.maxEntries = relayMaxPairsPerPeer, relayMaxEntries
}

func (rt *relayTable) get(i uint32) *relayEntry {
	if v, ok := rt.byIndex.Load(i); ok {
		return v.(*relayEntry)
	}
	return nil
}

// removeLocked forgets one entry (not its forward side). Caller holds mu.
func (rt *relayTable) removeLocked(e *relayEntry) {
	if e.removed {
		return
	}
	e.removed = true
	rt.byIndex.Delete(e.localIndex)
	rt.entries--
	if e.forward != nil {
		if k := [2]netip.Addr{e.hop, e.peer}; rt.pairs[k] == e {
			delete(rt.pairs, k)
		}
		return
	}
	if l := slices.DeleteFunc(rt.byPeer[e.peer], func(x *relayEntry) bool { return x == e }); len(l) > 0 {
		rt.byPeer[e.peer] = l
	} else {
		delete(rt.byPeer, e.peer)
	}
}

// removePairLocked forgets both sides of a relay pair. Caller holds mu.
func (rt *relayTable) removePairLocked(e *relayEntry) {
	if e.removed {
		return
	}
	rt.removeLocked(e)
	rt.removeLocked(e.forward)
	if rt.asked[e.requester]--; rt.asked[e.requester] <= 0 {
		delete(rt.asked, e.requester)
	}
}

// relayConf is the relay section as in force; a reload swaps it whole.
type relayConf struct {
	amRelay   bool
	useRelays bool
	relays    []netip.Addr // relays that may relay to us (advertised to lighthouses)
}

// relayState is this node's relay configuration and table.
type relayState struct {
	n     *Node
	conf  atomic.Pointer[relayConf]
	table relayTable
	// peerRelays are the relays a lighthouse said a peer can be reached through.
	mu         sync.Mutex
	peerRelays map[netip.Addr][]netip.Addr
	asked      map[[2]netip.Addr]time.Time // (peer, relay) -> last CreateRelayRequest
	// probeEvery is relayProbeInterval (unix nanos); tests shorten it.
	probeEvery atomic.Int64
}

func (r *relayState) c() *relayConf { return r.conf.Load() }

func newRelayState(n *Node) (*relayState, error) {
	r := &relayState{n: n, peerRelays: map[netip.Addr][]netip.Addr{}, asked: map[[2]netip.Addr]time.Time{}}
	r.table.init()
	r.probeEvery.Store(int64(relayProbeInterval))
	rc, err := parseRelayConf(n, n.cfg.Relay)
	if err != nil {
		return nil, err
	}
	r.conf.Store(rc)
	return r, nil
}

func parseRelayConf(n *Node, c RelayConfig) (*relayConf, error) {
	rc := &relayConf{amRelay: c.AmRelay, useRelays: true}
	if c.UseRelays != nil {
		rc.useRelays = *c.UseRelays
	}
	if rc.amRelay {
		rc.useRelays = false
	}
	for i, s := range c.Relays {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("relay.relays[%d]: %q is not an IP address", i, s)
		}
		if a != n.vpnIP {
			rc.relays = append(rc.relays, a)
		}
	}
	return rc, nil
}

// newEntry allocates a relay entry with a fresh local index.
func (r *relayState) newEntry(hop, peer netip.Addr) (*relayEntry, error) {
	r.table.mu.Lock()
	defer r.table.mu.Unlock()
	return r.newEntryLocked(hop, peer)
}

// newEntryLocked is newEntry for a caller holding table.mu; it refuses beyond maxEntries.
func (r *relayState) newEntryLocked(hop, peer netip.Addr) (*relayEntry, error) {
	if r.table.entries >= r.table.maxEntries {
		return nil, errRelayFull
	}
	var b [4]byte
	for range 32 {
		if _, err := r.n.rand.Read(b[:]); err != nil {
			return nil, err
		}
		i := binary.BigEndian.Uint32(b[:])
		if i == 0 || r.table.get(i) != nil {
			continue
		}
		e := &relayEntry{localIndex: i, hop: hop, peer: peer, created: r.n.now()}
		r.table.byIndex.Store(i, e)
		r.table.entries++
		return e, nil
	}
	return nil, errors.New("no free relay index")
}

// newPairLocked makes the two sides of a relay from requester to target, within the
// bounds. Caller holds table.mu and has checked that the pair does not exist.
func (r *relayState) newPairLocked(requester, target netip.Addr) (*relayEntry, error) {
	rt := &r.table
	if rt.asked[requester] >= rt.maxPairsPerPeer || rt.entries+2 > rt.maxEntries {
		return nil, errRelayFull
	}
	a, err := r.newEntryLocked(requester, target)
	if err != nil {
		return nil, err
	}
	b, err := r.newEntryLocked(target, requester)
	if err != nil {
		rt.removeLocked(a)
		return nil, err
	}
	a.forward, b.forward = b, a
	a.requester, b.requester = requester, requester
	rt.pairs[[2]netip.Addr{requester, target}] = a
	rt.pairs[[2]netip.Addr{target, requester}] = b
	rt.asked[requester]++
	return a, nil
}

// advertised is what we report to lighthouses as our relays.
func (r *relayState) advertised() []netip.Addr {
	if r.c().amRelay {
		return nil
	}
	return r.c().relays
}

// tick keeps tunnels to our own relays up, so they can reach us when someone asks, and
// keeps relayed tunnels trying the direct path.
func (r *relayState) tick() {
	for _, a := range r.c().relays {
		if r.n.hosts.byVPNIP(a) == nil {
			r.n.hs.trigger(a, nil)
		}
	}
	// Entries whose hop tunnel is gone are useless; drop them after a while, a relay pair
	// as soon as either side's tunnel is gone. Readers never wait for this (sync.Map).
	now := r.n.now()
	hosts := &r.n.hosts
	r.table.mu.Lock()
	r.table.byIndex.Range(func(_, v any) bool {
		e := v.(*relayEntry)
		if e.removed || now.Sub(e.created) <= 10*time.Second {
			return true
		}
		switch {
		case e.forward != nil:
			if hosts.byVPNIP(e.hop) == nil || hosts.byVPNIP(e.forward.hop) == nil {
				r.table.removePairLocked(e)
			}
		case hosts.byVPNIP(e.hop) == nil,
			now.Sub(e.created) > relayIdleEndpoint && hosts.byVPNIP(e.peer) == nil:
			r.table.removeLocked(e)
		}
		return true
	})
	r.table.mu.Unlock()
}

// probeDirect sends each relayed tunnel's peer, every relayProbeInterval, a Test request
// straight to every underlay address we know for it (static_host_map, lighthouses). It is
// sealed with the tunnel's keys, so the first one that gets through moves the peer's side to
// the direct path (an authenticated direct packet does that, see authenticated) and its
// direct answer moves ours. Sending also opens our NAT towards those addresses; asking the
// lighthouses again refreshes them and makes the lighthouse tell the peer to punch towards
// us, which opens its NAT even when the peer is Nebula 1.6 and never probes itself.
// It runs from the tunnel's timer visit (checkTunnel) and returns when the next probe is
// due, false for a direct tunnel.
func (r *relayState) probeDirect(t *tunnel, now time.Time) (time.Time, bool) {
	n := r.n
	if t.relay.Load() == nil {
		return time.Time{}, false
	}
	every := time.Duration(r.probeEvery.Load())
	if last := t.probed.Load(); last != 0 && now.Sub(time.Unix(0, last)) < every {
		return time.Unix(0, last).Add(every), true
	}
	t.probed.Store(now.UnixNano())
	n.lh.query(t.vpnIP)
	if addrs := n.remotesFor(t.vpnIP); len(addrs) > 0 {
		// One sealed copy to every address: the peer accepts the first to arrive and its
		// replay window drops the rest.
		buf := make([]byte, header.Len, header.Len+tagLen)
		c := t.sendCounter.Add(1)
		hdr := header.Encode(buf, header.Test, header.SubtypeTestRequest, t.remoteIndex, c)
		n.sendRaw(t.send.Seal(hdr, hdr, nil, c), addrs)
		n.log.Debug("relayed tunnel: probing the direct path", "vpn_ip", t.vpnIP, "remotes", addrs)
	}
	return now.Add(every), true
}

// learnPeerRelays records the relays a lighthouse named for a peer.
func (r *relayState) learnPeerRelays(peer netip.Addr, relays []netip.Addr) {
	var keep []netip.Addr
	for _, a := range relays {
		if !slices.Contains(r.n.ownIPs, a) && a != peer && r.n.inOverlay(a) {
			keep = append(keep, a)
		}
	}
	r.mu.Lock()
	r.peerRelays[peer] = keep
	r.mu.Unlock()
}

// knowsRelays reports whether a lighthouse named relays for peer and we may use them.
func (r *relayState) knowsRelays(peer netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c().useRelays && len(r.peerRelays[peer]) > 0
}

// established returns a usable relay entry to peer, if any.
func (r *relayState) established(peer netip.Addr) *relayEntry {
	r.table.mu.Lock()
	defer r.table.mu.Unlock()
	for _, e := range r.table.byPeer[peer] {
		if e.remoteIndex.Load() != 0 && r.n.hosts.byVPNIP(e.hop) != nil {
			return e
		}
	}
	return nil
}

// tryRelays asks the peer's relays to set up a relay (once a second per relay), and sends
// msg1 through any relay already set up.
func (r *relayState) tryRelays(peer netip.Addr, msg1 []byte) {
	if !r.c().useRelays {
		return
	}
	if e := r.established(peer); e != nil {
		r.n.sendViaRelay(e, msg1)
		return
	}
	r.mu.Lock()
	relays := slices.Clone(r.peerRelays[peer])
	r.mu.Unlock()
	now := r.n.now()
	for _, rel := range relays {
		t := r.n.hosts.byVPNIP(rel)
		if t == nil {
			r.n.hs.trigger(rel, nil)
			continue
		}
		key := [2]netip.Addr{peer, rel}
		r.mu.Lock()
		last, asked := r.asked[key]
		if asked && now.Sub(last) < time.Second {
			r.mu.Unlock()
			continue
		}
		r.asked[key] = now
		r.mu.Unlock()
		e := r.pendingEntry(rel, peer)
		if e == nil {
			continue
		}
		req := &control{Type: controlCreateRelayRequest, InitiatorIndex: e.localIndex, RelayTo: peer, RelayFrom: r.n.vpnIP}
		r.n.sendEncrypted(t, header.Control, 0, controlFor(t, req))
	}
}

// pendingEntry returns our entry for (hop, peer) or makes one; nil when the table is full.
func (r *relayState) pendingEntry(hop, peer netip.Addr) *relayEntry {
	r.table.mu.Lock()
	defer r.table.mu.Unlock()
	for _, e := range r.table.byPeer[peer] {
		if e.hop == hop {
			return e
		}
	}
	e, err := r.newEntryLocked(hop, peer)
	if err != nil {
		r.n.m.dropped(dropRelayLimit)
		return nil
	}
	r.table.byPeer[peer] = append(r.table.byPeer[peer], e)
	return e
}

// handleControl processes an authenticated NebulaControl from tunnel t.
func (r *relayState) handleControl(t *tunnel, pt []byte) {
	n := r.n
	c, err := unmarshalControl(pt)
	if err != nil {
		n.m.dropped(dropRelay)
		return
	}
	switch c.Type {
	case controlCreateRelayRequest:
		if slices.Contains(n.ownIPs, c.RelayTo) {
			r.acceptAsTarget(t, c)
			return
		}
		r.forwardRequest(t, c)
	case controlCreateRelayResponse:
		r.handleResponse(t, c)
	default:
		n.m.dropped(dropRelay)
	}
}

// acceptAsTarget: a relay we listed asks to carry frames from c.RelayFrom to us.
func (r *relayState) acceptAsTarget(t *tunnel, c *control) {
	n := r.n
	if !slices.Contains(r.c().relays, t.vpnIP) {
		n.m.dropped(dropRelay)
		n.log.Info("relay request from a host that is not one of our relays", "relay", t.vpnIP)
		return
	}
	// The initiator is a host of our network other than us and the relay; anything else
	// would only make an entry nobody can use.
	if !n.inOverlay(c.RelayFrom) || slices.Contains(n.ownIPs, c.RelayFrom) || slices.Contains(t.allowedIPs, c.RelayFrom) || c.InitiatorIndex == 0 {
		n.m.dropped(dropRelay)
		return
	}
	e := r.pendingEntry(t.vpnIP, c.RelayFrom)
	if e == nil {
		return
	}
	e.remoteIndex.Store(c.InitiatorIndex)
	// RelayTo as asked (any of our addresses): the requester finds its relay by it.
	resp := &control{Type: controlCreateRelayResponse, InitiatorIndex: c.InitiatorIndex,
		ResponderIndex: e.localIndex, RelayFrom: c.RelayFrom, RelayTo: c.RelayTo}
	n.sendEncrypted(t, header.Control, 0, controlFor(t, resp))
}

// forwardRequest: we are asked to relay from t to c.RelayTo.
func (r *relayState) forwardRequest(from *tunnel, c *control) {
	n := r.n
	// The requester may name itself by any of its addresses (an IPv6 one on a v2 tunnel).
	if !r.c().amRelay || !slices.Contains(from.allowedIPs, c.RelayFrom) || slices.Contains(from.allowedIPs, c.RelayTo) ||
		!n.inOverlay(c.RelayTo) || c.InitiatorIndex == 0 {
		n.m.dropped(dropRelay)
		return
	}
	target := n.hosts.byVPNIP(c.RelayTo)
	if target == nil {
		n.hs.trigger(c.RelayTo, nil)
		return
	}
	// One pair per (requester, target), found in O(1): a retried request, or one with a new
	// index (the requester restarted or dropped its entry), takes over the pair, so
	// requests never add entries beyond one pair per target. The reverse request (target
	// asking for the requester) finds the other side of the same pair.
	// Pairs are keyed and hopped by the tunnels' first addresses, whichever address the
	// request named.
	r.table.mu.Lock()
	side := r.table.pairs[[2]netip.Addr{from.vpnIP, target.vpnIP}]
	if side == nil {
		var err error
		if side, err = r.newPairLocked(from.vpnIP, target.vpnIP); err != nil {
			r.table.mu.Unlock()
			n.m.dropped(dropRelayLimit)
			n.log.Debug("relay request refused", "from", from.vpnIP, "to", c.RelayTo, "err", err)
			return
		}
	}
	side.remoteIndex.Store(c.InitiatorIndex)
	side.askedTo, side.askedFrom = c.RelayTo, c.RelayFrom
	fwdIndex := side.forward.localIndex
	r.table.mu.Unlock()
	req := &control{Type: controlCreateRelayRequest, InitiatorIndex: fwdIndex,
		RelayTo: c.RelayTo, RelayFrom: c.RelayFrom}
	n.sendEncrypted(target, header.Control, 0, controlFor(target, req))
}

// handleResponse completes a relay we asked for (endpoint) or forwarded (relay).
func (r *relayState) handleResponse(t *tunnel, c *control) {
	n := r.n
	e := r.table.get(c.InitiatorIndex)
	if e == nil || !slices.Contains(t.allowedIPs, e.hop) || c.ResponderIndex == 0 {
		n.m.dropped(dropRelay)
		return
	}
	e.remoteIndex.Store(c.ResponderIndex)
	if e.forward == nil {
		// We are the initiating endpoint: send the pending handshake through the relay.
		if msg := n.hs.pendingMsg1(e.peer); msg != nil {
			n.sendViaRelay(e, msg)
		}
		return
	}
	// We are the relay: tell the initiator its side is ready.
	back := e.forward
	bt := n.hosts.byVPNIP(back.hop)
	if bt == nil {
		return
	}
	r.table.mu.Lock()
	to, from := back.askedTo, back.askedFrom
	r.table.mu.Unlock()
	if !to.IsValid() {
		to, from = e.hop, back.hop
	}
	resp := &control{Type: controlCreateRelayResponse, InitiatorIndex: back.remoteIndex.Load(),
		ResponderIndex: back.localIndex, RelayFrom: from, RelayTo: to}
	n.sendEncrypted(bt, header.Control, 0, controlFor(bt, resp))
}

// sendViaRelay wraps a complete packet in a relay frame on the hop tunnel of e.
func (n *Node) sendViaRelay(e *relayEntry, inner []byte) {
	hop := n.hosts.byVPNIP(e.hop)
	idx := e.remoteIndex.Load()
	if hop == nil || idx == 0 {
		n.m.dropped(dropRelay)
		return
	}
	n.writeUDP([]udp.Message{n.frame(hop, idx, inner)})
}

// frame builds outer header || inner || tag, the tag authenticating both.
func (n *Node) frame(hop *tunnel, index uint32, inner []byte) udp.Message {
	buf := make([]byte, header.Len+len(inner), header.Len+len(inner)+tagLen)
	c := hop.sendCounter.Add(1)
	header.Encode(buf, header.Message, header.SubtypeRelay, index, c)
	copy(buf[header.Len:], inner)
	out := hop.send.Seal(buf, buf, nil, c)
	hop.lastSend.Store(n.now().UnixNano())
	return udp.Message{Buf: out, N: len(out), Addr: hop.remoteAddr()}
}

// reframe turns a verified frame, in place, into the frame for the next hop: new outer
// header, same inner packet, new tag over both in the old tag's room. Forwarding thus copies
// nothing and allocates no buffer; b belongs to the receive loop until writeUDP returns.
func (n *Node) reframe(hop *tunnel, index uint32, b []byte) udp.Message {
	body := b[:len(b)-tagLen]
	c := hop.sendCounter.Add(1)
	header.Encode(body, header.Message, header.SubtypeRelay, index, c)
	out := hop.send.Seal(body, body, nil, c)
	if now := n.now().UnixNano(); hop.lastSend.Load() != now {
		hop.lastSend.Store(now)
	}
	return udp.Message{Buf: out, N: len(out), Addr: hop.remoteAddr()}
}

// handleRelayFrame verifies a frame on its hop tunnel, then forwards it (relay) or returns
// the inner packet with the entry it came through (endpoint).
func (n *Node) handleRelayFrame(h *header.Header, b []byte, from netip.AddrPort, now time.Time) ([]byte, *relayEntry) {
	e := n.relay.table.get(h.RemoteIndex)
	if e == nil || len(b) < 2*header.Len+tagLen {
		n.m.dropped(dropRelay)
		return nil, nil
	}
	hop := n.hosts.byVPNIP(e.hop)
	if hop == nil {
		n.m.dropped(dropRelay)
		return nil, nil
	}
	if !hop.window.Check(h.Counter) {
		n.m.dropped(dropReplay)
		return nil, nil
	}
	body := b[:len(b)-tagLen]
	if _, err := hop.recv.Open(nil, body, b[len(b)-tagLen:], h.Counter); err != nil {
		n.m.dropped(dropDecrypt)
		return nil, nil
	}
	if !hop.window.Update(h.Counter) {
		n.m.dropped(dropReplay)
		return nil, nil
	}
	n.authenticated(hop, from, nil, now)
	if e.forward != nil {
		fwd := e.forward
		ft := n.hosts.byVPNIP(fwd.hop)
		idx := fwd.remoteIndex.Load()
		if ft == nil || idx == 0 {
			n.m.dropped(dropRelay)
			return nil, nil
		}
		n.writeUDP([]udp.Message{n.reframe(ft, idx, b)})
		return nil, nil
	}
	return body[header.Len:], e
}
