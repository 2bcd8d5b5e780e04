package overlay

import (
	"context"
	"net/netip"
	"time"

	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/header"
)

// SealForTest encrypts inner as the next data packet of n's tunnel to peer, skipping every
// sender-side check, so tests can play a misbehaving peer that holds valid keys.
func (n *Node) SealForTest(peer netip.Addr, inner []byte) []byte {
	t := n.hosts.byVPNIP(peer)
	if t == nil {
		return nil
	}
	buf := make([]byte, header.Len, header.Len+len(inner)+tagLen)
	c := t.sendCounter.Add(1)
	hdr := header.Encode(buf, header.Message, header.SubtypeNone, t.remoteIndex, c)
	return t.send.Seal(hdr, hdr, inner, c)
}

// SendLighthouseForTest sends a raw lighthouse message to peer over the existing tunnel.
func (n *Node) SendLighthouseForTest(peer netip.Addr, msg []byte) bool {
	t := n.hosts.byVPNIP(peer)
	if t == nil {
		return false
	}
	n.sendEncrypted(t, header.LightHouse, 0, msg)
	return true
}

// ForgedUpdate is a HostUpdateNotification claiming vpn is at addr.
func ForgedUpdate(vpn netip.Addr, addr netip.AddrPort) []byte {
	return (&lighthouse.Meta{Type: lighthouse.HostUpdateNotification, VpnIP: vpn, V4: []netip.AddrPort{addr}}).Marshal(nil)
}

// HandleExtForTest registers an extension handler for op on n.
func (n *Node) HandleExtForTest(op byte, fn func(peer netip.Addr, body []byte) []byte) {
	n.ext.handle(op, func(t *tunnel, body, out []byte) []byte { return append(out, fn(t.vpnIP, body)...) })
}

// ExtCallForTest sends an extension query to peer and waits for the answer.
func (n *Node) ExtCallForTest(ctx context.Context, peer netip.Addr, op byte, body []byte) ([]byte, error) {
	return n.extCall(ctx, peer, op, body)
}

// Nebula behaviours AnswerTestsAsNebulaForTest can play.
const (
	NebulaOff   = nebulaModeOff
	Nebula161   = nebulaMode161
	NebulaEmpty = nebulaModeEmpty
	NebulaEcho  = nebulaModeEcho
)

// AnswerTestsAsNebulaForTest makes n answer Test requests as a Nebula peer of that kind.
func (n *Node) AnswerTestsAsNebulaForTest(mode int32) { n.ext.asNebula.Store(mode) }

// NebulaPanicsForTest counts the Test requests that would have crashed a Nebula 1.6 peer.
func (n *Node) NebulaPanicsForTest() int { return int(n.ext.nebulaPanics.Load()) }

// SetCandidateTimeoutForTest shortens how long an unconfirmed responder tunnel is kept.
func (n *Node) SetCandidateTimeoutForTest(d time.Duration) {
	n.hs.mu.Lock()
	n.hs.candTTL = d
	n.hs.mu.Unlock()
}

// CandidatesForTest counts unconfirmed responder tunnels, in all and claiming peer.
func (n *Node) CandidatesForTest(peer netip.Addr) (total, forPeer int) {
	n.hs.mu.Lock()
	defer n.hs.mu.Unlock()
	return len(n.hs.cands), n.hs.candsBy[peer]
}

// SetRelayProbeIntervalForTest changes how often relayed tunnels probe the direct path.
func (n *Node) SetRelayProbeIntervalForTest(d time.Duration) { n.relay.probeEvery.Store(int64(d)) }

// LighthouseAcksForTest counts the HostUpdateNotificationAcks n received.
func (n *Node) LighthouseAcksForTest() int64 { return n.lh.acks.Load() }

// BlankUpdateForTest is a HostUpdateNotification in Nebula 1.10+'s v2 form: no host named
// (the lighthouse takes the tunnel's peer), one address.
func BlankUpdateForTest(addr netip.AddrPort) []byte {
	return (&lighthouse.Meta{Type: lighthouse.HostUpdateNotification, AddrV2: true, V4: []netip.AddrPort{addr}}).Marshal(nil)
}
