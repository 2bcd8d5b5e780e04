package firewall

import (
	"net/netip"
	"slices"
	"strings"
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

// hasGroups reports whether the peer holds every group in want. Certificates carry a handful
// of groups, so a scan beats building a set and needs no preparation.
func (p *Peer) hasGroups(want []string) bool {
	for _, w := range want {
		if !slices.Contains(p.Groups, w) {
			return false
		}
	}
	return true
}
