package firewall

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// oracle is gopacket's view of a packet, reduced to what the firewall classifies.
type oracle struct {
	mustDrop bool   // gopacket could not decode a header the firewall depends on
	why      string // for failure messages
	version  uint8
	src, dst netip.Addr
	proto    uint8
	frag     bool // a fragment (IPv6 atomic fragments included: gopacket cannot tell)
	fragOff  uint32
	ports    bool // sport/dport are known
	sport    uint16
	dport    uint16
	icmp     bool
	icmpType uint8
	icmpCode uint8
}

// inScope lists the protocols whose headers the firewall must understand: a gopacket failure
// on one of them means the packet cannot be classified. Failures on other payloads (GRE,
// DNS inside UDP, ...) are beyond what a firewall needs and are ignored.
func inScope(version uint8, proto uint8) bool {
	switch proto {
	case ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6:
		return true
	case ProtoHopByHop, ProtoRouting, ProtoFragment, ProtoDstOpts, ProtoAH:
		return version == 6
	}
	return false
}

func gopacketView(b []byte) (o oracle) {
	if len(b) == 0 {
		return oracle{mustDrop: true, why: "empty"}
	}
	var first gopacket.LayerType
	switch b[0] >> 4 {
	case 4:
		first = layers.LayerTypeIPv4
	case 6:
		first = layers.LayerTypeIPv6
	default:
		return oracle{mustDrop: true, why: "version"}
	}
	pkt := gopacket.NewPacket(b, first, gopacket.Default)
	ls := pkt.Layers()
	if len(ls) == 0 {
		return oracle{mustDrop: true, why: "no layers"}
	}
	var next uint8
	i := 1
	switch ip := ls[0].(type) {
	case *layers.IPv4:
		if ip.Length > uint16(len(b)) || ip.Length == uint16(len(b)) && b[2] == 0 && b[3] == 0 {
			// Truncated, or gopacket's length-0 (TSO) guess: not a datagram of its own.
			return oracle{mustDrop: true, why: "ipv4 length"}
		}
		if pkt.ErrorLayer() != nil && len(ls) == 2 {
			if _, bad := ls[1].(*gopacket.DecodeFailure); bad && inScope(4, uint8(ip.Protocol)) {
				return oracle{mustDrop: true, why: "ipv4 payload: " + pkt.ErrorLayer().Error().Error()}
			}
		}
		o.version, o.proto = 4, uint8(ip.Protocol)
		o.src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		o.dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			o.frag, o.fragOff = true, uint32(ip.FragOffset)*8
			if ip.FragOffset == 0 {
				o.decodeL4(ip.Payload, o.proto)
			}
			return o
		}
		next = o.proto
	case *layers.IPv6:
		if 40+int(ip.Length) > len(b) {
			return oracle{mustDrop: true, why: "ipv6 length"}
		}
		o.version = 6
		o.src, _ = netip.AddrFromSlice(ip.SrcIP)
		o.dst, _ = netip.AddrFromSlice(ip.DstIP)
		next = uint8(ip.NextHeader)
	default:
		return oracle{mustDrop: true, why: "ip header: " + pkt.ErrorLayer().Error().Error()}
	}

	for ; o.version == 6 && i < len(ls); i++ { // IPv4 has no extension headers

		switch l := ls[i].(type) {
		case *layers.IPv6HopByHop:
			next = uint8(l.NextHeader)
			continue
		case *layers.IPv6Destination:
			next = uint8(l.NextHeader)
			continue
		case *layers.IPv6Routing:
			next = uint8(l.NextHeader)
			continue
		case *layers.IPSecAH:
			next = uint8(l.NextHeader)
			continue
		case *layers.IPv6Fragment:
			next = uint8(l.NextHeader)
			o.fragOff = uint32(l.FragmentOffset) * 8
			o.frag = true
			if l.FragmentOffset != 0 || !inScope(6, next) {
				o.proto = next
				return o
			}
			// gopacket stops at a fragment header; the first fragment holds the rest of the
			// chain, so decode that on its own and carry on walking.
			ls = gopacket.NewPacket(l.Payload, layers.IPProtocol(next).LayerType(), gopacket.Default).Layers()
			i = -1
			continue
		case *gopacket.DecodeFailure:
			if inScope(o.version, next) {
				return oracle{mustDrop: true, why: "header " + l.Error().Error()}
			}
		}
		break
	}
	o.proto = next
	if o.version == 4 || inScope(4, next) {
		if i < len(ls) {
			o.fromL4(ls[i])
		}
	}
	return o
}

// decodeL4 decodes the transport header of a first fragment, which gopacket leaves as payload.
func (o *oracle) decodeL4(b []byte, proto uint8) {
	var l gopacket.DecodingLayer
	switch proto {
	case ProtoTCP:
		l = &layers.TCP{}
	case ProtoUDP:
		l = &layers.UDP{}
	case ProtoICMP:
		l = &layers.ICMPv4{}
	case ProtoICMPv6:
		l = &layers.ICMPv6{}
	default:
		return
	}
	if err := l.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
		o.mustDrop, o.why = true, "first fragment transport: "+err.Error()
		return
	}
	o.fromL4(l.(gopacket.Layer))
}

func (o *oracle) fromL4(l gopacket.Layer) {
	switch l := l.(type) {
	case *layers.TCP:
		o.ports, o.sport, o.dport = true, uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.UDP:
		o.ports, o.sport, o.dport = true, uint16(l.SrcPort), uint16(l.DstPort)
	case *layers.ICMPv4:
		o.icmp, o.icmpType, o.icmpCode = true, l.TypeCode.Type(), l.TypeCode.Code()
	case *layers.ICMPv6:
		o.icmp, o.icmpType, o.icmpCode = true, l.TypeCode.Type(), l.TypeCode.Code()
	}
}

// checkAgainstGopacket fails t when Parse accepts what gopacket cannot decode, or when the two
// disagree about what an accepted packet is.
func checkAgainstGopacket(t *testing.T, name string, b []byte) {
	t.Helper()
	var p Packet
	ok := p.Parse(b)
	o := gopacketView(b)
	if !ok {
		return // dropping more than gopacket is allowed: the parser fails closed
	}
	if o.mustDrop {
		t.Fatalf("%s: Parse accepted %x, but gopacket cannot decode it (%s): %+v", name, b, o.why, p)
	}
	bad := p.Version != o.version || p.Src != o.src || p.Dst != o.dst || p.Proto != o.proto ||
		(p.Frag != FragNone) != o.frag && !(p.Frag == FragNone && o.frag && o.fragOff == 0) ||
		p.FragOffset != o.fragOff
	if p.Frag != FragLater {
		if o.ports && (!p.hasPorts() || p.SrcPort != o.sport || p.DstPort != o.dport) {
			bad = true
		}
		if o.icmp && (p.ICMPType != o.icmpType || p.ICMPCode != o.icmpCode) {
			bad = true
		}
		if p.hasPorts() && !o.ports && (o.version == 4 || !o.frag) {
			bad = true // we found ports where gopacket saw none
		}
	}
	if bad {
		t.Fatalf("%s: Parse and gopacket disagree on %x\nparse:    %+v\ngopacket: %+v", name, b, p, o)
	}
}
