package handshake

import "encoding/binary"

// HeaderLen is the length of the Nebula packet header (NEBULA-WIRE §2).
const HeaderLen = 16

// Header fields this package writes and checks. The overlay owns the full header codec; the
// handshake needs only type 0 / subtype 0 and the two message counters.
const (
	typeHandshake      = 0
	subtypeIXPSK0      = 0
	headerVersion      = 1
	counterMsg1        = 1
	counterMsg2        = 2
	noiseKeyLen        = 32
	noiseTagLen        = 16
	msg1MinNoise       = 2 * noiseKeyLen                           // e, s in clear
	msg2MinNoise       = 2*noiseKeyLen + noiseTagLen + noiseTagLen // e, enc(s), tag of payload
	handshakeHeaderTag = headerVersion<<4 | typeHandshake
)

// appendHandshakeHeader appends a handshake header (version 1, type 0, subtype 0).
func appendHandshakeHeader(b []byte, remoteIndex uint32, counter uint64) []byte {
	b = append(b, handshakeHeaderTag, subtypeIXPSK0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, remoteIndex)
	return binary.BigEndian.AppendUint64(b, counter)
}

// parseHandshakeHeader checks that p starts with a handshake header carrying counter and
// returns its remote index. Version and reserved bytes are ignored, as Nebula does.
func parseHandshakeHeader(p []byte, counter uint64) (remoteIndex uint32, ok bool) {
	if len(p) < HeaderLen {
		return 0, false
	}
	if p[0]&0x0f != typeHandshake || p[1] != subtypeIXPSK0 {
		return 0, false
	}
	if binary.BigEndian.Uint64(p[8:16]) != counter {
		return 0, false
	}
	return binary.BigEndian.Uint32(p[4:8]), true
}
