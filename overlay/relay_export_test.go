package overlay

import (
	"net/netip"

	"github.com/meshnode/meshnode/overlay/header"
)

// SendRelayRequestForTest sends a CreateRelayRequest over n's tunnel to hop, as a peer
// that may put anything in it.
func (n *Node) SendRelayRequestForTest(hop netip.Addr, initiatorIndex uint32, to, from netip.Addr) bool {
	t := n.hosts.byVPNIP(hop)
	if t == nil {
		return false
	}
	req := &control{Type: controlCreateRelayRequest, InitiatorIndex: initiatorIndex, RelayTo: to, RelayFrom: from}
	n.sendEncrypted(t, header.Control, 0, req.marshal())
	return true
}

// RelayEntriesForTest is how many relay entries n holds.
func (n *Node) RelayEntriesForTest() int {
	n.relay.table.mu.Lock()
	defer n.relay.table.mu.Unlock()
	return n.relay.table.entries
}

// SetRelayLimitsForTest lowers n's relay bounds: pairs a peer may ask for, and entries.
func (n *Node) SetRelayLimitsForTest(perPeer, total int) {
	n.relay.table.mu.Lock()
	n.relay.table.maxPairsPerPeer, n.relay.table.maxEntries = perPeer, total
	n.relay.table.mu.Unlock()
}
