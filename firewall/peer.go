package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
)

// Peer is the identity the overlay proved in the handshake. The overlay builds one per tunnel
// (with NewPeer) and passes the same pointer to every verdict; the firewall only reads it.
type Peer struct {
	Name          string
	IPs           []netip.Prefix // certificate IPs: address with the network's mask
	Subnets       []netip.Prefix // certificate subnets (unsafe routes) the peer may speak for
	Groups        []string
	CAName        string // issuing CA's name
	CAFingerprint string // issuing CA's fingerprint, hex

	// groupBits caches which of a rule set's groups the peer holds, so matching a group rule is
	// a mask test. It is rebuilt once per peer after a reload, never per packet.
	groupBits atomic.Pointer[membership]
}

type membership struct {
	rs   *ruleSet
	bits []uint64
}

// groupsIn returns the peer's group bits for the groups rs knows.
func (p *Peer) groupsIn(rs *ruleSet) []uint64 {
	if m := p.groupBits.Load(); m != nil && m.rs == rs {
		return m.bits
	}
	bits := make([]uint64, rs.groupWords)
	for _, g := range p.Groups {
		if id, ok := rs.groupIDs[g]; ok {
			bits[id/64] |= 1 << (id % 64)
		}
	}
	p.groupBits.Store(&membership{rs: rs, bits: bits})
	return bits
}

// NewPeer copies its arguments into a Peer, so later changes to the caller's slices cannot
// race with verdicts, and normalises the fingerprint to lower case.
func NewPeer(name string, ips, subnets []netip.Prefix, groups []string, caName, caFingerprint string) *Peer {
	return &Peer{
		Name:          name,
		IPs:           slices.Clone(ips),
		Subnets:       masked(subnets),
		Groups:        slices.Clone(groups),
		CAName:        caName,
		CAFingerprint: strings.ToLower(caFingerprint),
	}
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	return out
}

// owns reports whether a is the peer's own address: one of its certificate IPs exactly (not
// the whole network around it, which was CVE-2025-62820), or inside one of its subnets.
func (p *Peer) owns(a netip.Addr) bool {
	for _, ip := range p.IPs {
		if ip.Addr() == a {
			return true
		}
	}
	for _, s := range p.Subnets {
		if s.Contains(a) {
			return true
		}
	}
	return false
}
