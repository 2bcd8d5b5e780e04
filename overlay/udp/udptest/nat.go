package udptest

import (
	"fmt"
	"net/netip"
)

// NATKind is how a NAT maps and filters, after RFC 4787 and Tailscale's natlab.
type NATKind int

const (
	// FullCone maps each inside address:port to one public port, and lets anyone send to it.
	FullCone NATKind = iota
	// EasyNAT maps each inside address:port to one public port (endpoint-independent
	// mapping), and admits only peers the inside host has sent to: hole punching works.
	EasyNAT
	// HardNAT maps each inside address:port and destination to its own public port
	// (symmetric), admitting only that destination: punching to it generally fails.
	HardNAT
)

func (k NATKind) String() string {
	switch k {
	case FullCone:
		return "full-cone"
	case EasyNAT:
		return "easy"
	case HardNAT:
		return "hard"
	}
	return fmt.Sprintf("NATKind(%d)", int(k))
}

// firstNATPort is where public ports start, clear of the ephemeral ports Listen hands out.
const firstNATPort = 20000

type nat struct {
	inside netip.Prefix
	public netip.Addr
	kind   NATKind
	out    map[natKey]uint16
	in     map[uint16]*natMapping
	next   uint16
}

type natKey struct {
	src, dst netip.AddrPort // dst is zero unless the mapping is per destination
}

type natMapping struct {
	inside  netip.AddrPort
	allowed map[netip.AddrPort]bool // remotes the inside host has sent to
}

// AddNAT puts the addresses in inside behind a NAT with address public: datagrams they send
// to addresses outside the prefix leave from public:port, and datagrams to public:port
// reach them if the kind admits the sender. Mappings never expire.
func (n *Network) AddNAT(inside netip.Prefix, public netip.Addr, kind NATKind) error {
	if inside.Contains(public) {
		return fmt.Errorf("udptest: NAT public address %v inside %v", public, inside)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range n.nats {
		if x.public == public || x.inside.Overlaps(inside) {
			return fmt.Errorf("udptest: NAT %v/%v overlaps %v/%v", inside, public, x.inside, x.public)
		}
	}
	n.nats = append(n.nats, &nat{
		inside: inside.Masked(), public: public, kind: kind,
		out: map[natKey]uint16{}, in: map[uint16]*natMapping{}, next: firstNATPort,
	})
	return nil
}

// natOut returns the source a datagram from -> to leaves with. Called with n.mu held.
func (n *Network) natOut(from, to netip.AddrPort) netip.AddrPort {
	for _, x := range n.nats {
		if !x.inside.Contains(from.Addr()) || x.inside.Contains(to.Addr()) {
			continue
		}
		key := natKey{src: from}
		if x.kind == HardNAT {
			key.dst = to
		}
		port, ok := x.out[key]
		if !ok {
			port = x.next
			x.next++
			x.out[key] = port
			x.in[port] = &natMapping{inside: from, allowed: map[netip.AddrPort]bool{}}
		}
		x.in[port].allowed[to] = true
		return netip.AddrPortFrom(x.public, port)
	}
	return from
}

// natIn returns where a datagram to `to` from `from` goes: `to` itself unless `to` is a
// NAT's public address, and false if the NAT drops it. Called with n.mu held.
func (n *Network) natIn(from, to netip.AddrPort) (netip.AddrPort, bool) {
	for _, x := range n.nats {
		if to.Addr() != x.public {
			continue
		}
		m := x.in[to.Port()]
		if m == nil || (x.kind != FullCone && !m.allowed[from]) {
			return netip.AddrPort{}, false
		}
		return m.inside, true
	}
	return to, true
}
