package firewall

import (
	"encoding/binary"
	"net/netip"
)

// Packet builders for tests. They write headers byte by byte so that malformed variants are
// one edit away; checksums are left zero because nothing here verifies them.

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

type v4 struct {
	src, dst string
	proto    uint8
	id       uint16
	more     bool
	off8     uint16 // fragment offset in 8-byte units
	options  []byte // must be a multiple of 4 bytes
	payload  []byte
}

func (h v4) bytes() []byte {
	ihl := 20 + len(h.options)
	b := make([]byte, ihl+len(h.payload))
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], h.id)
	frag := h.off8 & 0x1fff
	if h.more {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = 64
	b[9] = h.proto
	s, d := addr(h.src).As4(), addr(h.dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], h.options)
	copy(b[ihl:], h.payload)
	return b
}

type v6 struct {
	src, dst string
	nh       uint8
	payload  []byte // extension headers and transport, already chained
}

func (h v6) bytes() []byte {
	b := make([]byte, 40+len(h.payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(h.payload)))
	b[6] = h.nh
	b[7] = 64
	s, d := addr(h.src).As16(), addr(h.dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	copy(b[40:], h.payload)
	return b
}

func tcpSeg(sport, dport uint16, flags uint8, payload ...byte) []byte {
	b := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	binary.BigEndian.PutUint32(b[8:], 2000)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	copy(b[20:], payload)
	return b
}

func udpDgram(sport, dport uint16, payload ...byte) []byte {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	return b
}

func icmpMsg(typ, code uint8, id uint16) []byte {
	b := make([]byte, 8)
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], 1)
	return b
}

// ext6 builds an 8n-byte extension header (hop-by-hop, destination options or routing style
// length) whose body is padded with PadN/zeros.
func ext6(nh uint8, units int) []byte {
	b := make([]byte, (units+1)*8)
	b[0] = nh
	b[1] = byte(units)
	if len(b) > 2 { // one PadN option filling the rest
		b[2] = 1
		b[3] = byte(len(b) - 4)
	}
	return b
}

func routing6(nh, typ, segLeft uint8) []byte {
	b := make([]byte, 8)
	b[0], b[2], b[3] = nh, typ, segLeft
	return b
}

func frag6(nh uint8, off8 uint16, more bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = nh
	v := off8 << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

func ah6(nh uint8) []byte {
	b := make([]byte, 16) // (2+2)*4: SPI, sequence and an 4-byte ICV... padded to 8n for IPv6
	b[0] = nh
	b[1] = 2
	return b
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
