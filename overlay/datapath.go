package overlay

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/header"
	"github.com/meshnode/meshnode/overlay/tun"
	"github.com/meshnode/meshnode/overlay/udp"
)

// maxDatagram is the largest underlay datagram we read (Nebula uses 9001-byte buffers).
const maxDatagram = 9001

// tagLen is the AEAD tag on every encrypted packet.
const tagLen = 16

// readOutside is the receive path: UDP -> header -> decrypt -> checks -> firewall -> TUN.
// It owns its buffers; nothing is allocated per packet on the data path.
func (n *Node) readOutside(l *lane) error {
	batch, size := n.cfg.Listen.Batch, maxDatagram
	if l == n.prio {
		size = PriorityDatagramMax // the kernel gives its socket nothing longer
	}
	msgs := make([]udp.Message, batch)
	for i := range msgs {
		msgs[i].Buf = make([]byte, size)
	}
	toTun := make([][]byte, 0, batch)
	for {
		k, err := l.conn.ReadBatch(msgs)
		if err != nil {
			if errors.Is(err, udp.ErrClosed) || n.closed() {
				return nil
			}
			return err
		}
		if l == n.prio {
			n.prioIn.Add(uint64(k))
		}
		now := n.now()
		toTun = toTun[:0]
		for i := range k {
			if pt := n.dispatch(msgs[i].Data, msgs[i].Addr, nil, now, l.idx); pt != nil {
				toTun = append(toTun, pt)
			}
		}
		if len(toTun) > 0 && l.dev != nil {
			if _, err := l.dev.Write(toTun); err != nil {
				if errors.Is(err, tun.ErrClosed) || n.closed() {
					return nil
				}
				n.m.dropped(dropTunWrite)
			}
		}
	}
}

func (n *Node) closed() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// handleOutside processes one datagram and returns an inner packet to deliver, or nil.
func (n *Node) handleOutside(b []byte, from netip.AddrPort, now time.Time) []byte {
	return n.dispatch(b, from, nil, now, 0)
}

// dispatch handles a Nebula packet that arrived directly from an address, or (via != nil)
// unwrapped from a relay frame.
// lane is the routine whose receive goroutine handles it (its firewall memo).
func (n *Node) dispatch(b []byte, from netip.AddrPort, via *relayEntry, now time.Time, lane int) []byte {
	if len(b) < header.Len {
		// Punch packets (1 byte) land here by design.
		n.m.dropped(dropShort)
		return nil
	}
	var h header.Header
	if err := h.Parse(b); err != nil {
		n.m.dropped(dropBadHeader)
		return nil
	}
	switch h.Type {
	case header.Message:
		if h.Subtype == header.SubtypeRelay && via == nil {
			inner, e := n.handleRelayFrame(&h, b, from, now)
			if inner == nil {
				return nil
			}
			return n.dispatch(inner, netip.AddrPort{}, e, now, lane)
		}
		if h.Subtype != header.SubtypeNone {
			n.m.dropped(dropUnsupported)
			return nil
		}
		t, pt := n.openPacket(&h, b, from, via, now)
		if t == nil {
			return nil
		}
		return n.deliverInbound(t, pt, now, lane)
	case header.Handshake:
		switch h.Counter {
		case 1:
			// Copied to the handshake worker: the data path never pays for a msg 1's crypto.
			n.hsq.enqueue(b, from, via, now)
		case 2:
			n.hs.handleMsg2(b, from, via, h.RemoteIndex)
		default:
			n.m.dropped(dropHandshake)
		}
	case header.RecvError:
		if via == nil {
			n.handleRecvError(h.RemoteIndex, from, now)
		}
	case header.Test, header.CloseTunnel, header.LightHouse, header.Control:
		t, pt := n.openPacket(&h, b, from, via, now)
		if t == nil {
			return nil
		}
		n.handleControl(t, &h, pt)
	default:
		n.m.dropped(dropBadHeader)
	}
	return nil
}

// openPacket finds the tunnel, checks the replay window before decrypting and updates it
// only after authentication. It decrypts in place and returns the plaintext.
func (n *Node) openPacket(h *header.Header, b []byte, from netip.AddrPort, via *relayEntry, now time.Time) (*tunnel, []byte) {
	t := n.hosts.byLocalIndex(h.RemoteIndex)
	if t == nil {
		n.m.dropped(dropUnknownIndex)
		if via == nil {
			n.sendRecvError(h.RemoteIndex, from, now)
		}
		return nil, nil
	}
	if len(b) < header.Len+tagLen {
		n.m.dropped(dropShort)
		return nil, nil
	}
	if !t.window.Check(h.Counter) {
		// No recv_error for replays: it would let anyone replaying old packets make us
		// chatter, and make the peer doubt a working tunnel (Nebula #1459).
		n.m.dropped(dropReplay)
		return nil, nil
	}
	pt, err := t.recv.Open(b[header.Len:header.Len], b[:header.Len], b[header.Len:], h.Counter)
	if err != nil {
		if h.Type == header.CloseTunnel {
			n.m.dropped(dropUnauthClose)
		} else {
			n.m.dropped(dropDecrypt)
		}
		return nil, nil
	}
	if !t.window.Update(h.Counter) {
		n.m.dropped(dropReplay)
		return nil, nil
	}
	n.authenticated(t, from, via, now)
	return t, pt
}

// authenticated records life on a tunnel and roams to a new source address. It runs only
// after a packet passed AEAD and the replay window, so a replay cannot move the tunnel.
func (n *Node) authenticated(t *tunnel, from netip.AddrPort, via *relayEntry, now time.Time) {
	if !t.confirmed.Load() {
		n.hs.confirm(t, now)
	}
	// Stores only on change: packets of one batch share now, and a store costs a locked
	// instruction where a load is a plain read.
	if ns := now.UnixNano(); t.lastRecv.Load() != ns {
		t.lastRecv.Store(ns)
	}
	if t.testSent.Load() != 0 {
		t.testSent.Store(0)
	}
	if via != nil {
		// The peer reaches us through a relay: answer the same way (its direct address,
		// if any, may be a NAT mapping that only works one way).
		if t.relay.Load() != via {
			t.relay.Store(via)
			n.log.Info("peer reaches us through a relay", "vpn_ip", t.vpnIP, "relay", via.hop)
		}
		return
	}
	if t.relay.Load() != nil {
		t.relay.Store(nil)
		n.hosts.move(t, from)
		n.log.Info("peer reachable directly; leaving the relay", "vpn_ip", t.vpnIP, "remote", from)
		return
	}
	if cur := t.remoteAddr(); cur != from {
		n.hosts.move(t, from)
		t.lastRoam.Store(now.UnixNano())
		n.log.Info("peer roamed", "vpn_ip", t.vpnIP, "from", cur, "to", from)
	}
}

// deliverInbound applies the source check, the destination check and the inbound firewall.
func (n *Node) deliverInbound(t *tunnel, pt []byte, now time.Time, lane int) []byte {
	var src, dst netip.Addr
	switch {
	case len(pt) >= 20 && pt[0]>>4 == 4:
		src, dst = netip.AddrFrom4([4]byte(pt[12:16])), netip.AddrFrom4([4]byte(pt[16:20]))
	case len(pt) >= 40 && pt[0]>>4 == 6:
		// An IPv4-mapped address stays mapped here, so it matches no IPv4 cert address:
		// a peer cannot reach our IPv4 side (or pass as its own) through IPv6.
		src, dst = netip.AddrFrom16([16]byte(pt[8:24])), netip.AddrFrom16([16]byte(pt[24:40]))
	default:
		n.m.dropped(dropNotIP)
		return nil
	}
	if !t.sourceAllowed(src) {
		n.m.dropped(dropSpoofedSource)
		return nil
	}
	if !n.isOurs(dst) {
		n.m.dropped(dropNotForUs)
		return nil
	}
	// Only the lane's receive goroutine delivers inbound packets, so the memo is its alone.
	if v := n.fw.Load().VerdictMemo(pt, firewall.Inbound, t.fwPeer, now.UnixNano(), t.memo(firewall.Inbound, lane)); !v.Accepted() {
		n.m.firewallDropped(firewall.Inbound, v)
		if v.Rejected() {
			n.sendReject(t, pt)
		}
		return nil
	}
	t.packetsIn.Add(1)
	t.bytesIn.Add(uint64(len(pt)))
	return pt
}

// inOverlay reports whether a is inside one of the networks of our certificates (IPv4 and,
// with a v2 certificate, IPv6): a host there is reached by a handshake to that address.
func (n *Node) inOverlay(a netip.Addr) bool {
	for _, p := range n.vpnNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (n *Node) isOurs(a netip.Addr) bool {
	for _, o := range n.ownIPs {
		if o == a {
			return true
		}
	}
	for _, p := range n.ownNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// handleControl deals with authenticated non-data messages.
func (n *Node) handleControl(t *tunnel, h *header.Header, pt []byte) {
	switch h.Type {
	case header.Test:
		if h.Subtype == header.SubtypeTestRequest {
			n.handleTestRequest(t, pt)
		} else if h.Subtype == header.SubtypeTestReply {
			n.handleTestReply(t, pt)
		}
	case header.CloseTunnel:
		n.log.Info("peer closed the tunnel", "peer", t.peer.Details.Name, "vpn_ip", t.vpnIP)
		n.removeTunnel(t)
	case header.LightHouse:
		n.lh.handle(t, pt)
	case header.Control:
		n.relay.handleControl(t, pt)
	default:
		n.m.dropped(dropUnsupported)
	}
}

// dropBroadcast applies tun.drop_local_broadcast and tun.drop_multicast to a packet with no
// tunnel (multicast never has a route here, so with false it is still dropped as no_route).
func (n *Node) dropBroadcast(dst netip.Addr) bool {
	tc := &n.cfg.Tun
	if tc.DropMulticast && dst.IsMulticast() {
		return true
	}
	return tc.DropLocalBroadcast && n.vpnNet.Addr().Is4() && n.vpnNet.Bits() < 31 && dst == lastAddr(n.vpnNet)
}

// lastAddr is an IPv4 prefix's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	for i := range 4 {
		a[i] |= byte(host >> (24 - 8*i))
	}
	return netip.AddrFrom4(a)
}

// handleRecvError reacts to a peer saying it cannot read our packets. The message is not
// authenticated, so it never tears a tunnel down; it only prompts a fresh handshake (the old
// tunnel keeps working until the new one is confirmed), at most once every two seconds.
func (n *Node) handleRecvError(index uint32, from netip.AddrPort, now time.Time) {
	switch n.cfg.Listen.AcceptRecvError {
	case "never":
		n.m.dropped(dropRecvErrorIgnor)
		return
	case "private":
		if !from.Addr().IsPrivate() {
			n.m.dropped(dropRecvErrorIgnor)
			return
		}
	}
	t := n.hosts.byRemoteIndex(index)
	if t == nil || t.remoteAddr() != from {
		n.m.dropped(dropRecvErrorIgnor)
		return
	}
	last := t.rekeyAsked.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < 2*time.Second {
		return
	}
	t.rekeyAsked.Store(now.UnixNano())
	n.log.Info("peer lost our tunnel; re-handshaking", "vpn_ip", t.vpnIP)
	n.hs.rehandshake(t.vpnIP)
}

// sendRecvError tells a sender that we have no tunnel for the index it used, within the
// rate limits of recvErrorLimiter (the sender's address may be spoofed).
func (n *Node) sendRecvError(index uint32, to netip.AddrPort, now time.Time) {
	switch n.sendRecv {
	case "never":
		return
	case "private":
		if !to.Addr().IsPrivate() {
			return
		}
	}
	if !n.recvErr.allow(to.Addr(), now) {
		n.m.dropped(dropRecvErrorRate)
		return
	}
	var b [header.Len]byte
	header.Encode(b[:], header.RecvError, 0, index, 0)
	n.sendRaw(b[:], []netip.AddrPort{to})
}

// readInside is the send path: TUN -> route to a tunnel -> firewall -> encrypt -> UDP.
func (n *Node) readInside(l *lane) error {
	batch := n.cfg.Listen.Batch
	if l == n.prio {
		batch = min(batch, 8) // one small packet per read; no need for a full batch's buffers
	}
	bufs := make([][]byte, batch)
	views := make([][]byte, batch)
	sizes := make([]int, batch)
	for i := range bufs {
		bufs[i] = make([]byte, header.Len+n.mtu+tagLen+64)
		views[i] = bufs[i][header.Len : len(bufs[i])-tagLen]
	}
	out := make([]udp.Message, 0, batch)
	for {
		k, err := l.dev.Read(views, sizes)
		if err != nil {
			if errors.Is(err, tun.ErrClosed) || n.closed() {
				return nil
			}
			return err
		}
		if l == n.prio {
			n.prioOut.Add(uint64(k))
		}
		out = out[:0]
		now := n.now().UnixNano()
		for i := range k {
			if m, ok := n.encrypt(bufs[i], sizes[i], now, l.idx); ok {
				out = append(out, m)
			}
		}
		if len(out) > 0 {
			n.writeLane(l, out)
		}
	}
}

// encryptInside routes and seals one packet held at buf[16:16+size], in place.
func (n *Node) encryptInside(buf []byte, size int, now int64) (udp.Message, bool) {
	return n.encrypt(buf, size, now, 0)
}

// encrypt is encryptInside for the send goroutine of a lane, which alone may use that lane's
// firewall memo of the tunnel; lane -1 (queued packets flushed after a handshake) uses none.
func (n *Node) encrypt(buf []byte, size int, now int64, lane int) (udp.Message, bool) {
	pkt := buf[header.Len : header.Len+size]
	var dst netip.Addr
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	default:
		n.m.dropped(dropNotIP)
		return udp.Message{}, false
	}
	// A tunnel is indexed by every address of its peer's certificate (hostMap.install).
	t := n.hosts.byVPNIP(dst)
	if t == nil {
		// tun.drop_*: checked only here, off the path of packets that have a tunnel.
		switch {
		case slices.Contains(n.ownIPs, dst) || n.dropBroadcast(dst):
			n.m.dropped(dropNoRoute)
			return udp.Message{}, false
		case n.inOverlay(dst):
			n.hs.trigger(dst, pkt)
			return udp.Message{}, false
		}
		// Outside the overlay: a network behind a gateway (tun.unsafe_routes), or nowhere.
		// The outbound firewall below still requires the gateway's cert to carry dst.
		r := n.routes.Load().lookup(dst)
		if r == nil {
			n.m.dropped(dropNoRoute)
			return udp.Message{}, false
		}
		if t = n.gatewayTunnel(r, pkt, now); t == nil {
			return udp.Message{}, false
		}
	}
	if v := n.fw.Load().VerdictMemo(pkt, firewall.Outbound, t.fwPeer, now, t.memo(firewall.Outbound, lane)); !v.Accepted() {
		n.m.firewallDropped(firewall.Outbound, v)
		if v.Rejected() {
			n.rejectLocally(pkt)
		}
		return udp.Message{}, false
	}
	t.packetsOut.Add(1)
	t.bytesOut.Add(uint64(size))
	if t.lastSend.Load() != now { // once per batch (see authenticated)
		t.lastSend.Store(now)
	}
	c := t.sendCounter.Add(1)
	hdr := header.Encode(buf[:header.Len], header.Message, header.SubtypeNone, t.remoteIndex, c)
	sealed := t.send.Seal(hdr, hdr, pkt, c)
	return n.tunnelMessage(t, sealed)
}

// tunnelMessage addresses a sealed packet to the peer: directly, or framed for its relay.
func (n *Node) tunnelMessage(t *tunnel, sealed []byte) (udp.Message, bool) {
	if rel := t.relay.Load(); rel != nil {
		hop := n.hosts.byVPNIP(rel.hop)
		idx := rel.remoteIndex.Load()
		if hop == nil || idx == 0 {
			n.m.dropped(dropRelay)
			return udp.Message{}, false
		}
		return n.frame(hop, idx, sealed), true
	}
	return udp.Message{Buf: sealed, N: len(sealed), Addr: t.remoteAddr()}, true
}

// sendInner encrypts and sends one inner packet outside the hot path (queued packets).
func (n *Node) sendInner(t *tunnel, pkt []byte) {
	buf := make([]byte, header.Len+len(pkt)+tagLen)
	copy(buf[header.Len:], pkt)
	if m, ok := n.encrypt(buf, len(pkt), n.now().UnixNano(), -1); ok {
		n.writeUDP([]udp.Message{m})
	}
}

// flush sends packets that waited for a handshake.
func (n *Node) flush(t *tunnel, queued [][]byte) {
	for _, p := range queued {
		n.sendInner(t, p)
	}
}

// ctlScratch is the buffers of one control message (a lighthouse answer, a liveness
// probe): pooled, so a lighthouse answering thousands of queries a second makes no garbage
// for them (issue 18: the collector was the query tail).
type ctlScratch struct {
	in      lighthouse.Meta // a lighthouse message received
	meta    lighthouse.Meta // one sent
	payload []byte
	pkt     []byte
	msg     [1]udp.Message
}

var ctlPool = sync.Pool{New: func() any { return new(ctlScratch) }}

// sendEncrypted sends a non-data message (test, close, ...) over a tunnel.
func (n *Node) sendEncrypted(t *tunnel, typ header.Type, sub uint8, payload []byte) {
	s := ctlPool.Get().(*ctlScratch)
	if need := header.Len + len(payload) + tagLen; cap(s.pkt) < need {
		s.pkt = make([]byte, 0, max(need, 256))
	}
	c := t.sendCounter.Add(1)
	hdr := header.Encode(s.pkt[:header.Len], typ, sub, t.remoteIndex, c)
	sealed := t.send.Seal(hdr, hdr, payload, c)
	t.lastSend.Store(n.now().UnixNano())
	if m, ok := n.tunnelMessage(t, sealed); ok {
		// WriteBatch is done with the buffer when it returns (the datagram is sent or
		// counted as dropped), so the scratch can go back to the pool.
		s.msg[0] = m
		n.writeUDP(s.msg[:])
		s.msg[0] = udp.Message{}
	}
	ctlPool.Put(s)
}

func (n *Node) sendClose(t *tunnel) {
	n.sendEncrypted(t, header.CloseTunnel, 0, nil)
}

// reply sends a handshake message back the way its request came.
func (n *Node) reply(b []byte, to netip.AddrPort, via *relayEntry) {
	if via != nil {
		n.sendViaRelay(via, b)
		return
	}
	n.sendRaw(b, []netip.AddrPort{to})
}

// sendRaw sends the same bytes to each address (handshake messages, recv_error).
func (n *Node) sendRaw(b []byte, to []netip.AddrPort) {
	msgs := make([]udp.Message, 0, len(to))
	for _, a := range to {
		msgs = append(msgs, udp.Message{Buf: b, N: len(b), Addr: a})
	}
	n.writeUDP(msgs)
}

func (n *Node) writeUDP(msgs []udp.Message) {
	n.sendMu.Lock()
	sent, err := n.conn.WriteBatch(msgs)
	n.sendMu.Unlock()
	if err != nil {
		for range len(msgs) - sent {
			n.m.dropped(dropUDPWrite)
		}
		if !n.closed() {
			n.log.Debug("udp write failed", "err", err)
		}
	}
}

// sendReject answers a packet our inbound rules reject, through the tunnel it came from.
func (n *Node) sendReject(t *tunnel, pkt []byte) {
	reply, ok := firewall.RejectPacket(nil, pkt)
	if !ok {
		return
	}
	buf := make([]byte, header.Len+len(reply)+tagLen)
	copy(buf[header.Len:], reply)
	c := t.sendCounter.Add(1)
	hdr := header.Encode(buf[:header.Len], header.Message, header.SubtypeNone, t.remoteIndex, c)
	sealed := t.send.Seal(hdr, hdr, buf[header.Len:header.Len+len(reply)], c)
	if m, ok := n.tunnelMessage(t, sealed); ok {
		n.writeUDP([]udp.Message{m})
	}
}

// rejectLocally answers a packet our outbound rules reject, back into our own TUN.
func (n *Node) rejectLocally(pkt []byte) {
	if n.dev == nil {
		return
	}
	if reply, ok := firewall.RejectPacket(nil, pkt); ok {
		_, _ = n.dev.Write([][]byte{reply})
	}
}

// checkTunnels runs once a second: the tunnels whose timers are due (checkQueue), each
// checked by checkTunnel and queued again for when it next needs looking at. It returns how
// many it visited.
//
// A lighthouse of 100,000 hosts has some 20,000 due every second (tens of milliseconds of
// work, seconds after a new CA pool when each visit checks a signature). Done in one go,
// that run holds a core while the receive goroutine waits for one: with GOMAXPROCS 2 and a
// GC worker on the other P, nothing polls the network until the scheduler's monitor does
// (up to 10 ms) and preempts someone (another 10 ms); the lighthouse's slow query answers
// fell in those runs (docs/PERFORMANCE.md). So the work goes in slices of at most checkSliceTime, and between
// slices the loop sleeps (checkPause) instead of yielding with runtime.Gosched: Gosched
// puts this goroutine on the global run queue, which the scheduler looks at before the
// network, so it would run again at once; a sleep leaves the P idle, and an idle P polls
// the network and runs whatever is ready.
func (n *Node) checkTunnels(now time.Time) int {
	p := n.pki.Load()
	visited := 0
	sliceStart := time.Now()
	for {
		n.dueBuf = n.hosts.checks.due(now, n.dueBuf[:0], checkBatch)
		for i, t := range n.dueBuf {
			n.dueBuf[i] = nil
			if !t.installed.Load() {
				continue // closed or replaced: it leaves the queue
			}
			if next, keep := n.checkTunnel(t, p, now); keep {
				n.hosts.checks.add(t, next)
			}
			// The rest of the batch waits out the pause off the queue (its checkAt is 0, so
			// soon leaves it alone) and is visited after it, against the pool in force then.
			if time.Since(sliceStart) >= n.checkSliceTime {
				n.checkYield()
				sliceStart = time.Now()
				p = n.pki.Load()
			}
		}
		visited += len(n.dueBuf)
		if len(n.dueBuf) < checkBatch || n.closed() {
			return visited
		}
	}
}

// The timer loop's slices (checkTunnels): due tunnels are taken from the queue checkBatch
// at a time, and after checkSliceTime of visits the loop pauses for checkPause (which the
// runtime rounds up to about a millisecond when nothing else is waiting).
const (
	checkBatch     = 64
	checkSliceTime = 500 * time.Microsecond
	checkPause     = 100 * time.Microsecond
)

// checkTunnel is one tunnel's timers: certificate validity, version upgrade, punching,
// relay probes, liveness and inactivity. It returns when they need looking at again, and
// false when the tunnel was closed. With nothing in flight that is one
// connection_alive_interval later: a send after an idle spell gets its probe within that.
func (n *Node) checkTunnel(t *tunnel, p *PKI, now time.Time) (next time.Time, keep bool) {
	alive := n.cfg.Timers.ConnectionAliveInterval
	pendingDel := n.cfg.Timers.PendingDeletionInterval
	next = now.Add(alive)
	if *n.cfg.PKI.DisconnectInvalid {
		if err := t.peerStillValid(p.Pool, now); err != nil {
			n.closeInvalid(t, err)
			return next, false
		}
		next = earliest(next, t.validUntil())
	}
	n.hs.upgrade(t, p.Creds, now)
	if at, ok := n.lh.punch(t, now); ok {
		next = earliest(next, at)
	}
	if at, ok := n.relay.probeDirect(t, now); ok {
		next = earliest(next, at)
	}
	lastRecv := time.Unix(0, t.lastRecv.Load())
	lastSend := time.Unix(0, t.lastSend.Load())
	if ts := t.testSent.Load(); ts != 0 {
		dead := time.Unix(0, ts).Add(pendingDel)
		if !now.Before(dead) {
			n.log.Info("tunnel dead: no answer to liveness probe", "vpn_ip", t.vpnIP)
			n.removeTunnel(t)
			return next, false
		}
		return earliest(next, dead), true
	}
	if now.Sub(lastRecv) >= alive && lastSend.After(lastRecv) {
		t.testSent.Store(now.UnixNano())
		n.sendEncrypted(t, header.Test, header.SubtypeTestRequest, nil)
		return earliest(next, now.Add(pendingDel)), true
	}
	// A direction idle for cipherIdle gives back its cipher state (about 830 bytes, rebuilt
	// from the key in about a microsecond at its next packet): a lighthouse's tunnels carry
	// a host update now and then and nothing else.
	if now.Sub(lastSend) >= cipherIdle {
		t.send.Release()
	}
	if now.Sub(lastRecv) >= cipherIdle {
		t.recv.Release()
	}
	if r := lastRecv.Add(alive); r.After(now) {
		next = earliest(next, r) // the earliest a probe can be due
	}
	if n.cfg.Tunnels.DropInactive {
		last := lastRecv
		if lastSend.After(last) {
			last = lastSend
		}
		if now.Sub(last) >= n.cfg.Tunnels.InactivityTimeout {
			n.log.Info("closing inactive tunnel", "vpn_ip", t.vpnIP)
			n.sendClose(t)
			n.removeTunnel(t)
			return next, false
		}
		next = earliest(next, last.Add(n.cfg.Tunnels.InactivityTimeout))
	}
	return next, true
}

// cipherIdle is how long a tunnel direction carries nothing before the timer visit drops
// its cipher state. Above Nebula's default lighthouse.interval (10 s), so a lighthouse
// whose hosts report at that rate rebuilds nothing; a rebuild costs about a microsecond
// and 1.6 KB of garbage, which a lighthouse answering thousands of queries a second for
// cold hosts would otherwise pay per query.
const cipherIdle = 15 * time.Second

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// closeInvalid tells the peer and forgets a tunnel whose peer certificate no longer verifies
// (the liveness check, and at once for a revocation).
func (n *Node) closeInvalid(t *tunnel, err error) {
	n.log.Warn("closing tunnel: peer certificate no longer valid", "peer", t.peer.Details.Name,
		"vpn_ip", t.vpnIP, "err", err)
	n.sendClose(t)
	n.removeTunnel(t)
}

// removeTunnel forgets a tunnel everywhere (host map and, on a lighthouse, the book).
func (n *Node) removeTunnel(t *tunnel) {
	if n.hosts.remove(t) {
		n.lh.tunnelDown(t)
	}
}
