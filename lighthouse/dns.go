package lighthouse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// A minimal DNS message codec (RFC 1035), only what the lighthouse DNS responder needs:
// read the header and the single question of a query, write a reply with at most one A
// record. Every read is bounds-checked; nothing here may panic on any input (Nebula #1635
// was a panic on a short name).

// DNS constants used by the responder.
const (
	dnsHeaderLen = 12
	dnsMaxName   = 255 // octets of a name in wire form, length bytes included
	dnsMaxHops   = 16  // compression pointers followed in one name

	dnsTypeA    = 1
	dnsTypeAAAA = 28
	dnsClassIN  = 1

	dnsOpQuery = 0

	rcodeOK       = 0
	rcodeFormErr  = 1
	rcodeNXDomain = 3
	rcodeNotImp   = 4

	flagQR = 1 << 15
	flagAA = 1 << 10
	flagRD = 1 << 8
)

var errDNSMalformed = errors.New("lighthouse: malformed DNS message")

type dnsHeader struct {
	id, flags      uint16
	qd, an, ns, ar uint16
}

func (h dnsHeader) opcode() int { return int(h.flags>>11) & 0xf }

func parseDNSHeader(b []byte) (dnsHeader, error) {
	if len(b) < dnsHeaderLen {
		return dnsHeader{}, fmt.Errorf("%w: %d bytes, header needs %d", errDNSMalformed, len(b), dnsHeaderLen)
	}
	be := binary.BigEndian
	return dnsHeader{be.Uint16(b), be.Uint16(b[2:]), be.Uint16(b[4:]), be.Uint16(b[6:]), be.Uint16(b[8:]), be.Uint16(b[10:])}, nil
}

func (h dnsHeader) append(b []byte) []byte {
	for _, v := range [...]uint16{h.id, h.flags, h.qd, h.an, h.ns, h.ar} {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	return b
}

// readName reads the name at off in msg. It returns the name in uncompressed wire form
// (original case kept, so a reply echoes the question exactly) and the offset just past the
// name where it started. Compression pointers must point strictly before the start of the
// run they interrupt, so every jump goes backwards and loops are impossible; the hop count
// and the 255-octet limit bound the work regardless.
func readName(msg []byte, off int) (wire []byte, next int, err error) {
	runStart, hops, next := off, 0, -1
	for {
		if off >= len(msg) {
			return nil, 0, fmt.Errorf("%w: name runs past the end", errDNSMalformed)
		}
		l := int(msg[off])
		switch l & 0xc0 {
		case 0x00:
			if len(wire)+1+l > dnsMaxName {
				return nil, 0, fmt.Errorf("%w: name longer than %d octets", errDNSMalformed, dnsMaxName)
			}
			if l == 0 {
				wire = append(wire, 0)
				if next < 0 {
					next = off + 1
				}
				return wire, next, nil
			}
			if off+1+l > len(msg) {
				return nil, 0, fmt.Errorf("%w: label runs past the end", errDNSMalformed)
			}
			wire = append(wire, msg[off:off+1+l]...)
			off += 1 + l
		case 0xc0:
			if off+2 > len(msg) {
				return nil, 0, fmt.Errorf("%w: truncated pointer", errDNSMalformed)
			}
			target := int(binary.BigEndian.Uint16(msg[off:]) & 0x3fff)
			if target >= runStart || hops == dnsMaxHops {
				return nil, 0, fmt.Errorf("%w: compression pointer loops or points forward", errDNSMalformed)
			}
			if next < 0 {
				next = off + 2
			}
			hops++
			off, runStart = target, target
		default:
			return nil, 0, fmt.Errorf("%w: reserved label type %#x", errDNSMalformed, l&0xc0)
		}
	}
}

// nameKey turns a wire-form name into the lookup key the resolver gets: labels joined by
// dots, ASCII lowercased, no trailing dot. ok is false for names no certificate can carry:
// the root, or labels holding a dot or bytes outside printable ASCII.
func nameKey(wire []byte) (string, bool) {
	var sb strings.Builder
	for i := 0; i < len(wire) && wire[i] != 0; {
		l := int(wire[i])
		label := wire[i+1 : i+1+l]
		for _, c := range label {
			if c <= ' ' || c >= 0x7f || c == '.' {
				return "", false
			}
		}
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.Write(label)
		i += 1 + l
	}
	if sb.Len() == 0 {
		return "", false
	}
	return strings.ToLower(sb.String()), true
}

type dnsQuestion struct {
	wire        []byte // name, uncompressed wire form
	qtype, qcls uint16
}

// parseDNSQuestion reads the question at off.
func parseDNSQuestion(msg []byte, off int) (dnsQuestion, int, error) {
	wire, off, err := readName(msg, off)
	if err != nil {
		return dnsQuestion{}, 0, err
	}
	if off+4 > len(msg) {
		return dnsQuestion{}, 0, fmt.Errorf("%w: question truncated", errDNSMalformed)
	}
	be := binary.BigEndian
	return dnsQuestion{wire, be.Uint16(msg[off:]), be.Uint16(msg[off+2:])}, off + 4, nil
}

func (q dnsQuestion) append(b []byte) []byte {
	b = append(b, q.wire...)
	b = binary.BigEndian.AppendUint16(b, q.qtype)
	return binary.BigEndian.AppendUint16(b, q.qcls)
}
