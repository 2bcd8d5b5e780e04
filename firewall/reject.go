package firewall

import (
	"encoding/binary"
	"net/netip"
)

// Limits on how much of the offending packet an ICMP error quotes: the whole reply stays within
// the minimum MTU every host accepts (576 bytes for IPv4, RFC 1812; 1280 for IPv6, RFC 4443).
const (
	maxICMPv4Reply = 576
	maxICMPv6Reply = 1280
)

// RejectPacket builds the reply that refuses pkt, appended to dst[:0]: a TCP RST for TCP, and
// otherwise an ICMP "destination unreachable: administratively prohibited" (ICMPv6 type 1
// code 1 for IPv6). The reply goes from pkt's destination to its source, so the caller sends
// it back the way pkt came. It reports false, building nothing, where a reply would be wrong:
// a packet that does not parse, a later fragment, an ICMP error, a TCP RST, or a multicast,
// broadcast or unspecified address. It allocates only when dst is too small.
func RejectPacket(dst []byte, pkt []byte) ([]byte, bool) {
	var p Packet
	if !p.Parse(pkt) || p.Frag == FragLater || !replyable(p.Src) || !replyable(p.Dst) {
		return dst[:0], false
	}
	pkt = pkt[:p.Length]
	switch {
	case p.Proto == ProtoTCP:
		if p.TCPFlags&tcpRST != 0 {
			return dst[:0], false
		}
		return tcpReset(dst[:0], &p, pkt), true
	case p.Proto == ProtoICMP && p.Version == 4 && !icmpv4Query(p.ICMPType):
		return dst[:0], false
	case p.Proto == ProtoICMPv6 && p.Version == 6 && p.ICMPType < 128:
		return dst[:0], false
	}
	return unreachable(dst[:0], &p, pkt), true
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

func replyable(a netip.Addr) bool {
	if a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	return !a.Is4() || a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// icmpv4Query reports whether an ICMPv4 type is a query (echo, timestamp, ...), which may be
// answered, rather than an error, which must never be (RFC 1122 §3.2.2).
func icmpv4Query(t uint8) bool {
	switch t {
	case 0, 8, 9, 10, 13, 14, 15, 16, 17, 18:
		return true
	}
	return false
}

// ipHeader appends an IP header from p's destination to its source for a payload of n bytes.
func ipHeader(b []byte, p *Packet, proto uint8, n int) []byte {
	if p.Version == 4 {
		h := [20]byte{0: 0x45, 8: 64, 9: proto}
		binary.BigEndian.PutUint16(h[2:], uint16(20+n))
		src, dst := p.Dst.As4(), p.Src.As4()
		copy(h[12:], src[:])
		copy(h[16:], dst[:])
		binary.BigEndian.PutUint16(h[10:], fold(onesSum(0, h[:])))
		return append(b, h[:]...)
	}
	h := [40]byte{0: 0x60, 6: proto, 7: 64}
	binary.BigEndian.PutUint16(h[4:], uint16(n))
	src, dst := p.Dst.As16(), p.Src.As16()
	copy(h[8:], src[:])
	copy(h[24:], dst[:])
	return append(b, h[:]...)
}

// pseudoSum is the checksum of the pseudo-header of a reply from p.Dst to p.Src.
func pseudoSum(p *Packet, proto uint8, n int) uint32 {
	var s uint32
	if p.Version == 4 {
		a, b := p.Dst.As4(), p.Src.As4()
		s = onesSum(onesSum(0, a[:]), b[:])
	} else {
		a, b := p.Dst.As16(), p.Src.As16()
		s = onesSum(onesSum(0, a[:]), b[:])
	}
	return s + uint32(proto) + uint32(n)
}

// onesSum adds b to the running one's-complement sum s and returns it folded to 16 bits.
func onesSum(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// tcpReset answers a TCP segment the way RFC 9293 §3.10.7.1 says a closed port does.
func tcpReset(b []byte, p *Packet, pkt []byte) []byte {
	seg := pkt[p.L4Offset:]
	var t [20]byte
	binary.BigEndian.PutUint16(t[0:], p.DstPort)
	binary.BigEndian.PutUint16(t[2:], p.SrcPort)
	t[12] = 5 << 4
	if p.TCPFlags&tcpACK != 0 {
		copy(t[4:8], seg[8:12]) // SEQ = SEG.ACK
		t[13] = tcpRST
	} else {
		n := uint32(len(seg) - int(seg[12]>>4)*4)
		if p.TCPFlags&tcpSYN != 0 {
			n++
		}
		if p.TCPFlags&tcpFIN != 0 {
			n++
		}
		binary.BigEndian.PutUint32(t[8:], binary.BigEndian.Uint32(seg[4:8])+n) // ACK = SEG.SEQ+SEG.LEN
		t[13] = tcpRST | tcpACK
	}
	binary.BigEndian.PutUint16(t[16:], fold(onesSum(pseudoSum(p, ProtoTCP, 20), t[:])))
	b = ipHeader(b, p, ProtoTCP, 20)
	return append(b, t[:]...)
}

// unreachable builds the ICMP error quoting as much of pkt as the reply size limit allows.
func unreachable(b []byte, p *Packet, pkt []byte) []byte {
	proto, hdr, limit := uint8(ProtoICMP), 20, maxICMPv4Reply
	typ, code := uint8(3), uint8(13)
	if p.Version == 6 {
		proto, hdr, limit = ProtoICMPv6, 40, maxICMPv6Reply
		typ, code = 1, 1
	}
	quote := pkt[:min(len(pkt), limit-hdr-8)]
	n := 8 + len(quote)
	b = ipHeader(b, p, proto, n)
	start := len(b)
	b = append(b, typ, code, 0, 0, 0, 0, 0, 0)
	b = append(b, quote...)
	var s uint32
	if p.Version == 6 {
		s = pseudoSum(p, proto, n)
	}
	binary.BigEndian.PutUint16(b[start+2:], fold(onesSum(s, b[start:])))
	return b
}
