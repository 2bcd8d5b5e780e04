// Package header encodes and parses the 16-byte header that starts every Nebula 1.6 UDP
// datagram (NEBULA-WIRE §2). It knows the layout and the type/subtype numbers only; what a
// packet means, and whether its version or reserved bits are acceptable, is the runtime's
// business (Nebula ignores both on receive, and they are covered by the AEAD anyway).
package header

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Len is the size of the header in bytes.
const Len = 16

// Version is the protocol version we send in the high nibble of byte 0.
const Version = 1

// ErrTooShort is returned by Parse for fewer than Len bytes (Nebula ignores such datagrams;
// the 1-byte punch packets are among them).
var ErrTooShort = errors.New("header: datagram shorter than 16 bytes")

// Type is the low nibble of byte 0.
type Type uint8

// Packet types.
const (
	Handshake   Type = 0
	Message     Type = 1
	RecvError   Type = 2
	LightHouse  Type = 3
	Test        Type = 4
	CloseTunnel Type = 5
	Control     Type = 6
)

// Subtypes. Their meaning depends on the Type, so several share a value.
const (
	SubtypeNone            = 0 // every type without subtypes; Message carrying an IP packet
	SubtypeRelay           = 1 // Message: a relayed frame (§6)
	SubtypeTestRequest     = 0 // Test
	SubtypeTestReply       = 1 // Test
	SubtypeHandshakeIXPSK0 = 0 // Handshake: Noise IX ("ix_psk0" uses no PSK)
)

var typeNames = [...]string{
	Handshake:   "handshake",
	Message:     "message",
	RecvError:   "recvError",
	LightHouse:  "lightHouse",
	Test:        "test",
	CloseTunnel: "closeTunnel",
	Control:     "control",
}

// String returns Nebula's name for the type, or "unknown(N)".
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "unknown(" + strconv.Itoa(int(t)) + ")"
}

// Known reports whether t is one of the seven types Nebula 1.6 handles.
func (t Type) Known() bool { return t <= Control }

// Header is the decoded form of the 16 bytes. Parse fills it in place so the hot path keeps
// one per goroutine and allocates nothing.
type Header struct {
	Version     uint8 // 4 bits on the wire
	Type        Type  // 4 bits on the wire
	Subtype     uint8
	Reserved    uint16
	RemoteIndex uint32
	Counter     uint64
}

// Encode writes a version-1 header with Reserved 0 into b[:Len] and returns b[:Len].
// It panics if len(b) < Len, like binary.BigEndian.PutUint64: the caller owns headroom.
func Encode(b []byte, t Type, subtype uint8, remoteIndex uint32, counter uint64) []byte {
	_ = b[Len-1] // one bounds check for the whole header
	b[0] = Version<<4 | byte(t)&0x0f
	b[1] = subtype
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint32(b[4:8], remoteIndex)
	binary.BigEndian.PutUint64(b[8:16], counter)
	return b[:Len]
}

// Encode writes h into b[:Len] exactly as given (Version and Type truncated to 4 bits each)
// and returns b[:Len]. Tests use it to forge headers; senders use the function Encode.
// It panics if len(b) < Len.
func (h *Header) Encode(b []byte) []byte {
	_ = b[Len-1]
	b[0] = h.Version<<4 | byte(h.Type)&0x0f
	b[1] = h.Subtype
	binary.BigEndian.PutUint16(b[2:4], h.Reserved)
	binary.BigEndian.PutUint32(b[4:8], h.RemoteIndex)
	binary.BigEndian.PutUint64(b[8:16], h.Counter)
	return b[:Len]
}

// Parse decodes the first Len bytes of b into h. It does not validate Version, Type or
// Reserved: Nebula accepts any version and reserved value, and drops unknown types itself.
func (h *Header) Parse(b []byte) error {
	if len(b) < Len {
		return ErrTooShort
	}
	h.Version = b[0] >> 4
	h.Type = Type(b[0] & 0x0f)
	h.Subtype = b[1]
	h.Reserved = binary.BigEndian.Uint16(b[2:4])
	h.RemoteIndex = binary.BigEndian.Uint32(b[4:8])
	h.Counter = binary.BigEndian.Uint64(b[8:16])
	return nil
}

// String is for logs: "v1 message/0 idx=0x0a0b0c0d ctr=3".
func (h Header) String() string {
	return fmt.Sprintf("v%d %s/%d idx=%#08x ctr=%d", h.Version, h.Type, h.Subtype, h.RemoteIndex, h.Counter)
}
