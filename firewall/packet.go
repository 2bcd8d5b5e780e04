package firewall

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers the parser knows.
const (
	ProtoHopByHop = 0
	ProtoICMP     = 1
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDstOpts  = 60
)

// MaxExtHeaders bounds the IPv6 extension header walk. A legitimate chain has at most six
// (RFC 8200 §4.1); the bound is what keeps a crafted chain from costing more than this.
const MaxExtHeaders = 8

// FragKind says which part of a fragmented datagram a packet is.
type FragKind uint8

const (
	FragNone  FragKind = iota // a whole datagram (IPv6 atomic fragments included)
	FragFirst                 // offset 0, more fragments follow: carries the transport header
	FragLater                 // offset > 0: no transport header, no ports
)

// Packet is the classification of one IP packet, filled in place by Parse without allocating.
// After a failed Parse only Reason is set; every other field is zero.
type Packet struct {
	Version  uint8 // 4 or 6
	Proto    uint8 // upper-layer protocol; for a later IPv6 fragment, the fragment header's next header
	Frag     FragKind
	TCPFlags uint8
	ICMPType uint8
	ICMPCode uint8
	SrcPort  uint16 // TCP and UDP only
	DstPort  uint16
	ICMPID   uint16 // echo request/reply identifier
	Src, Dst netip.Addr

	// For fragments: the datagram identity and where this piece sits in it.
	FragID     uint32
	FragProto  uint8  // first header of the fragmentable part (Proto for IPv4)
	FragOffset uint32 // bytes
	FragLen    uint32 // bytes of the fragmentable part this packet carries

	Length     int   // bytes of the IP datagram (trailing bytes in the buffer are ignored)
	L4Offset   int   // offset of the transport header; 0 when there is none (later fragments)
	ExtHeaders uint8 // IPv6 extension headers walked
	Reason     Reason
}

// Parse classifies b. It reports false, with p.Reason saying why, for anything it cannot fully
// classify; such a packet must be dropped.
func (p *Packet) Parse(b []byte) bool {
	*p = Packet{}
	var r Reason
	switch {
	case len(b) == 0:
		r = ReasonTruncated
	case b[0]>>4 == 4:
		r = p.parse4(b)
	case b[0]>>4 == 6:
		r = p.parse6(b)
	default:
		r = ReasonBadVersion
	}
	if r != ReasonNone {
		*p = Packet{Reason: r}
		return false
	}
	return true
}

func (p *Packet) parse4(b []byte) Reason {
	if len(b) < 20 {
		return ReasonTruncated
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	switch {
	case ihl < 20 || total < ihl:
		return ReasonMalformed
	case ihl > len(b) || total > len(b):
		return ReasonTruncated
	}
	b = b[:total]
	if !validIPv4Options(b[20:ihl]) {
		return ReasonMalformed
	}
	p.Version = 4
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.Proto = b[9]
	p.Length = total

	frag := binary.BigEndian.Uint16(b[6:8])
	more := frag&0x2000 != 0
	offset := uint32(frag&0x1fff) * 8
	payload := uint32(total - ihl)
	if !more && offset == 0 {
		return p.parseL4(b, ihl)
	}
	p.FragID = uint32(binary.BigEndian.Uint16(b[4:6]))
	p.FragProto = p.Proto
	p.FragOffset = offset
	p.FragLen = payload
	switch {
	case payload == 0 || (more && payload%8 != 0):
		return ReasonMalformed
	case uint32(ihl)+offset+payload > 0xffff: // reassembles beyond the largest datagram
		return ReasonMalformed
	}
	if offset == 0 {
		p.Frag = FragFirst
		return p.parseL4(b, ihl)
	}
	p.Frag = FragLater
	if p.Proto == ProtoTCP && offset == 8 { // RFC 1858: rewrites TCP flags
		return ReasonFragmentOverlap
	}
	return ReasonNone
}

// validIPv4Options walks the options so a malformed list is refused (as the kernel would).
func validIPv4Options(o []byte) bool {
	for len(o) > 0 {
		switch o[0] {
		case 0: // end of list: the rest is padding
			return true
		case 1: // no-op
			o = o[1:]
		default:
			if len(o) < 2 || o[1] <= 2 || int(o[1]) > len(o) {
				return false
			}
			o = o[o[1]:]
		}
	}
	return true
}

func (p *Packet) parse6(b []byte) Reason {
	if len(b) < 40 {
		return ReasonTruncated
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	switch {
	case plen == 0: // jumbograms are not carried by the overlay
		return ReasonMalformed
	case 40+plen > len(b):
		return ReasonTruncated
	}
	b = b[:40+plen]
	p.Version = 6
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	p.Length = len(b)

	nh, off := b[6], 40
	var seenFrag, seenRouting bool
	for {
		switch nh {
		case ProtoHopByHop, ProtoRouting, ProtoFragment, ProtoDstOpts, ProtoAH:
		default:
			p.Proto = nh
			return p.parseL4(b, off)
		}
		if p.ExtHeaders >= MaxExtHeaders {
			return ReasonExtHeaderLimit
		}
		p.ExtHeaders++
		rest := b[off:]
		if len(rest) < 8 {
			return p.short()
		}
		var hlen int
		switch nh {
		case ProtoHopByHop, ProtoDstOpts:
			if nh == ProtoHopByHop && off != 40 { // RFC 8200: only right after the IPv6 header
				return ReasonMalformed
			}
			hlen = (int(rest[1]) + 1) * 8
			if hlen > len(rest) {
				return p.short()
			}
			if r := checkTLVOptions(rest, hlen); r != ReasonNone {
				return r
			}
		case ProtoRouting:
			if seenRouting {
				return ReasonMalformed
			}
			seenRouting = true
			hlen = (int(rest[1]) + 1) * 8
			if hlen > len(rest) {
				return p.short()
			}
			// Only a spent type 0 header is harmless; any other would send the packet on
			// somewhere else than the address the rules were checked against.
			if rest[2] != 0 || rest[3] != 0 || (hlen-8)%16 != 0 {
				return ReasonRoutingHeader
			}
		case ProtoAH:
			hlen = (int(rest[1]) + 2) * 4
			if len(rest) < 12 {
				return p.short()
			}
			if hlen < 12 {
				return ReasonMalformed
			}
			if hlen > len(rest) {
				return p.short()
			}
		case ProtoFragment:
			if seenFrag {
				return ReasonMalformed
			}
			seenFrag = true
			hlen = 8
			fo := binary.BigEndian.Uint16(rest[2:4])
			offset := uint32(fo>>3) * 8
			more := fo&1 != 0
			if offset == 0 && !more { // atomic fragment (RFC 6946): a whole datagram
				break
			}
			carried := uint32(len(rest) - 8)
			p.FragID = binary.BigEndian.Uint32(rest[4:8])
			p.FragProto = rest[0]
			p.FragOffset = offset
			p.FragLen = carried
			switch {
			case carried == 0 || (more && carried%8 != 0):
				return ReasonMalformed
			case uint32(off+8-40)+offset+carried > 0xffff:
				return ReasonMalformed
			}
			if offset == 0 {
				p.Frag = FragFirst
				break
			}
			p.Frag = FragLater
			p.Proto = rest[0]
			if p.Proto == ProtoTCP && offset == 8 {
				return ReasonFragmentOverlap
			}
			return ReasonNone
		}
		nh = rest[0]
		off += hlen
	}
}

// checkTLVOptions validates the options of a hop-by-hop or destination options header h of
// hlen bytes. rest is the packet from h onwards.
func checkTLVOptions(rest []byte, hlen int) Reason {
	for i := 2; i < hlen; {
		// An option needs two bytes of packet even when it is Pad1: gopacket (our reference
		// decoder) insists, and such a packet is malformed in practice anyway.
		if len(rest)-i < 2 {
			return ReasonTruncated
		}
		t := rest[i]
		if t == 0 { // Pad1
			i++
			continue
		}
		if i+2 > hlen || i+2+int(rest[i+1]) > hlen {
			return ReasonMalformed
		}
		if t == 0xc2 { // jumbo payload: never valid with a non-zero payload length
			return ReasonMalformed
		}
		i += 2 + int(rest[i+1])
	}
	return ReasonNone
}

// short is the reason for a header cut short: a first fragment must hold the whole chain.
func (p *Packet) short() Reason {
	if p.Frag == FragFirst {
		return ReasonFragmentTooSmall
	}
	return ReasonTruncated
}

// parseL4 reads the transport header at b[off:] for p.Proto.
func (p *Packet) parseL4(b []byte, off int) Reason {
	seg := b[off:]
	switch p.Proto {
	case ProtoTCP:
		if len(seg) < 20 {
			return p.short()
		}
		doff := int(seg[12]>>4) * 4
		if doff < 20 {
			return ReasonMalformed
		}
		if doff > len(seg) {
			return p.short()
		}
		if !validTCPOptions(seg[20:doff]) {
			return ReasonMalformed
		}
		p.SrcPort = binary.BigEndian.Uint16(seg[0:2])
		p.DstPort = binary.BigEndian.Uint16(seg[2:4])
		p.TCPFlags = seg[13]
	case ProtoUDP:
		if len(seg) < 8 {
			return p.short()
		}
		ulen := int(binary.BigEndian.Uint16(seg[4:6]))
		if ulen < 8 || (p.Frag == FragNone && ulen > len(seg)) {
			return ReasonMalformed
		}
		p.SrcPort = binary.BigEndian.Uint16(seg[0:2])
		p.DstPort = binary.BigEndian.Uint16(seg[2:4])
	case ProtoICMP, ProtoICMPv6:
		// Every ICMP and ICMPv6 message has at least 8 bytes (RFC 792, RFC 4443).
		if len(seg) < 8 {
			return p.short()
		}
		p.ICMPType, p.ICMPCode = seg[0], seg[1]
		if isEcho(p.Proto, p.ICMPType) {
			p.ICMPID = binary.BigEndian.Uint16(seg[4:6])
		}
	case ProtoESP:
		if len(seg) < 8 { // SPI and sequence number
			return p.short()
		}
	}
	p.L4Offset = off
	return ReasonNone
}

func isEcho(proto, typ uint8) bool {
	if proto == ProtoICMP {
		return typ == 0 || typ == 8
	}
	return typ == 128 || typ == 129
}

func validTCPOptions(o []byte) bool {
	for len(o) > 0 {
		switch o[0] {
		case 0:
			return true
		case 1:
			o = o[1:]
		default:
			if len(o) < 2 || o[1] < 2 || int(o[1]) > len(o) {
				return false
			}
			o = o[o[1]:]
		}
	}
	return true
}

// isICMP reports whether the packet is ICMP for its IP version (ICMPv4 in IPv4, ICMPv6 in
// IPv6): what `proto: icmp` rules match.
func (p *Packet) isICMP() bool {
	return (p.Version == 4 && p.Proto == ProtoICMP) || (p.Version == 6 && p.Proto == ProtoICMPv6)
}

// hasPorts reports whether the packet carries TCP or UDP ports.
func (p *Packet) hasPorts() bool {
	return p.Frag != FragLater && (p.Proto == ProtoTCP || p.Proto == ProtoUDP)
}
