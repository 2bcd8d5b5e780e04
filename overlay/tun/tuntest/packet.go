package tuntest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// IP protocol numbers the helpers know.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// ICMP types of an echo exchange.
const (
	ICMPEchoReply   = 0
	ICMPEchoRequest = 8
)

const ipv4HeaderLen = 20

// IPv4ICMPEcho builds an IPv4 ICMP echo request with valid checksums. src and dst must be
// IPv4 (4-in-6 is unmapped); it panics otherwise, being a test helper.
func IPv4ICMPEcho(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	return ipv4ICMPEcho(ICMPEchoRequest, src, dst, id, seq, payload)
}

// IPv4ICMPEchoReply builds the echo reply a host would send for IPv4ICMPEcho.
func IPv4ICMPEchoReply(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	return ipv4ICMPEcho(ICMPEchoReply, src, dst, id, seq, payload)
}

func ipv4ICMPEcho(typ uint8, src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	pkt := ipv4Header(src, dst, ProtoICMP, 8+len(payload), seq)
	icmp := pkt[ipv4HeaderLen:]
	icmp[0] = typ
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[6:8], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:4], ^checksum(0, icmp))
	return pkt
}

// IPv4UDP builds an IPv4 UDP datagram with valid IP and UDP checksums.
func IPv4UDP(src, dst netip.AddrPort, payload []byte) []byte {
	pkt := ipv4Header(src.Addr(), dst.Addr(), ProtoUDP, 8+len(payload), 0)
	u := pkt[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(u[0:2], src.Port())
	binary.BigEndian.PutUint16(u[2:4], dst.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
	copy(u[8:], payload)
	sum := ^checksum(pseudoHeaderSum(pkt, len(u)), u)
	if sum == 0 {
		sum = 0xffff // 0 means "no checksum" in UDP over IPv4
	}
	binary.BigEndian.PutUint16(u[6:8], sum)
	return pkt
}

func ipv4Header(src, dst netip.Addr, proto uint8, payloadLen int, id uint16) []byte {
	pkt := make([]byte, ipv4HeaderLen+payloadLen)
	pkt[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(pkt[2:4], uint16(len(pkt)))
	binary.BigEndian.PutUint16(pkt[4:6], id)
	pkt[8] = 64 // TTL
	pkt[9] = proto
	s, d := src.Unmap().As4(), dst.Unmap().As4()
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
	binary.BigEndian.PutUint16(pkt[10:12], ^checksum(0, pkt[:ipv4HeaderLen]))
	return pkt
}

func pseudoHeaderSum(ip []byte, l4len int) uint32 {
	var s uint32
	s = sumWords(s, ip[12:20]) // source and destination
	s += uint32(ip[9]) + uint32(l4len)
	return s
}

func sumWords(s uint32, b []byte) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// checksum folds the one's complement sum of b onto initial (not inverted).
func checksum(initial uint32, b []byte) uint16 {
	s := sumWords(initial, b)
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// Packet is what Parse reads from an IPv4 packet: enough for tests to assert on.
type Packet struct {
	Src, Dst netip.Addr
	Proto    uint8
	TTL      uint8
	Payload  []byte // after the IP header, aliasing the input

	// UDP and TCP.
	SrcPort, DstPort uint16
	// ICMP.
	ICMPType, ICMPCode uint8
	ICMPID, ICMPSeq    uint16 // echo request and reply only
	// Data is the UDP payload or the ICMP echo data.
	Data []byte
}

// Errors from Parse.
var (
	ErrNotIPv4   = errors.New("tuntest: not an IPv4 packet")
	ErrTruncated = errors.New("tuntest: truncated packet")
	ErrChecksum  = errors.New("tuntest: bad checksum")
)

// Parse reads an IPv4 packet and its UDP, TCP ports or ICMP fields, checking the IP
// header checksum and, for UDP and ICMP, theirs. Options and fragments are not interpreted.
func Parse(b []byte) (Packet, error) {
	var p Packet
	if len(b) < ipv4HeaderLen {
		return p, ErrTruncated
	}
	if b[0]>>4 != 4 {
		return p, ErrNotIPv4
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < ipv4HeaderLen || total < ihl || total > len(b) {
		return p, fmt.Errorf("%w: header %d, total %d, have %d", ErrTruncated, ihl, total, len(b))
	}
	if checksum(0, b[:ihl]) != 0xffff {
		return p, fmt.Errorf("%w: IPv4 header", ErrChecksum)
	}
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.Proto, p.TTL = b[9], b[8]
	p.Payload = b[ihl:total]
	l4 := p.Payload
	switch p.Proto {
	case ProtoUDP:
		if len(l4) < 8 || int(binary.BigEndian.Uint16(l4[4:6])) != len(l4) {
			return p, fmt.Errorf("%w: UDP", ErrTruncated)
		}
		if binary.BigEndian.Uint16(l4[6:8]) != 0 && checksum(pseudoHeaderSum(b, len(l4)), l4) != 0xffff {
			return p, fmt.Errorf("%w: UDP", ErrChecksum)
		}
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		p.Data = l4[8:]
	case ProtoTCP:
		if len(l4) < 20 {
			return p, fmt.Errorf("%w: TCP", ErrTruncated)
		}
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	case ProtoICMP:
		if len(l4) < 8 {
			return p, fmt.Errorf("%w: ICMP", ErrTruncated)
		}
		if checksum(0, l4) != 0xffff {
			return p, fmt.Errorf("%w: ICMP", ErrChecksum)
		}
		p.ICMPType, p.ICMPCode = l4[0], l4[1]
		if p.ICMPType == ICMPEchoRequest || p.ICMPType == ICMPEchoReply {
			p.ICMPID, p.ICMPSeq = binary.BigEndian.Uint16(l4[4:6]), binary.BigEndian.Uint16(l4[6:8])
			p.Data = l4[8:]
		}
	}
	return p, nil
}

// IPv6UDP builds an IPv6 UDP datagram (no extension headers) with a valid UDP checksum.
func IPv6UDP(src, dst netip.AddrPort, payload []byte) []byte {
	pkt := make([]byte, 40+8+len(payload))
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:6], uint16(8+len(payload)))
	pkt[6] = ProtoUDP
	pkt[7] = 64 // hop limit
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(pkt[8:24], s[:])
	copy(pkt[24:40], d[:])
	u := pkt[40:]
	binary.BigEndian.PutUint16(u[0:2], src.Port())
	binary.BigEndian.PutUint16(u[2:4], dst.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
	copy(u[8:], payload)
	// Pseudo-header: addresses, upper-layer length and next header (RFC 8200 §8.1).
	ps := sumWords(0, pkt[8:40]) + uint32(len(u)) + ProtoUDP
	sum := ^checksum(ps, u)
	if sum == 0 {
		sum = 0xffff // a zero UDP checksum is not allowed over IPv6
	}
	binary.BigEndian.PutUint16(u[6:8], sum)
	return pkt
}
