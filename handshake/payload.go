package handshake

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Payload is the handshake payload, NebulaHandshake with its NebulaHandshakeDetails
// flattened (NEBULA-WIRE §3.4).
type Payload struct {
	Cert           []byte // the sender's stripped certificate (no public key)
	InitiatorIndex uint32
	ResponderIndex uint32
	Cookie         uint64 // unused by Nebula 1.6.1; echoed in msg 2 as Nebula does
	Time           uint64 // the sender's clock, unix nanoseconds
	Hmac           []byte // unused by Nebula 1.6.1; echoed in msg 2 as Nebula does
	// CertVersion is the version of Cert (Nebula 1.10+, field 8). 0, what Nebula 1.6 and
	// older meshnode send, means v1 from a peer that cannot read v2 certificates.
	CertVersion uint32
}

// Field numbers of NebulaHandshake and NebulaHandshakeDetails.
const (
	fieldDetails protowire.Number = 1
	fieldHmac    protowire.Number = 2

	fieldCert           protowire.Number = 1
	fieldInitiatorIndex protowire.Number = 2
	fieldResponderIndex protowire.Number = 3
	fieldCookie         protowire.Number = 4
	fieldTime           protowire.Number = 5
	fieldCertVersion    protowire.Number = 8
)

// MarshalPayload appends the proto3 encoding of p to b, fields in ascending order and zero
// values omitted, as Nebula's gogo-protobuf encoder writes them. Details is always present.
func MarshalPayload(b []byte, p *Payload) []byte {
	var size int
	if len(p.Cert) > 0 {
		size += protowire.SizeTag(fieldCert) + protowire.SizeBytes(len(p.Cert))
	}
	for _, v := range [...]uint64{uint64(p.InitiatorIndex), uint64(p.ResponderIndex), p.Cookie, p.Time, uint64(p.CertVersion)} {
		if v != 0 {
			size += 1 + protowire.SizeVarint(v) // tags 2..8 fit in one byte
		}
	}
	b = protowire.AppendTag(b, fieldDetails, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	if len(p.Cert) > 0 {
		b = protowire.AppendTag(b, fieldCert, protowire.BytesType)
		b = protowire.AppendBytes(b, p.Cert)
	}
	b = appendVarintField(b, fieldInitiatorIndex, uint64(p.InitiatorIndex))
	b = appendVarintField(b, fieldResponderIndex, uint64(p.ResponderIndex))
	b = appendVarintField(b, fieldCookie, p.Cookie)
	b = appendVarintField(b, fieldTime, p.Time)
	b = appendVarintField(b, fieldCertVersion, uint64(p.CertVersion))
	if len(p.Hmac) > 0 {
		b = protowire.AppendTag(b, fieldHmac, protowire.BytesType)
		b = protowire.AppendBytes(b, p.Hmac)
	}
	return b
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// UnmarshalPayload decodes a NebulaHandshake like a proto3 decoder: fields in any order, the
// last value of a repeated scalar wins, a repeated Details is merged, unknown fields are
// skipped, and uint32 fields keep the low 32 bits. It rejects truncated or overlong varints,
// bad lengths, field number 0 and known fields with the wrong wire type (as gogo-protobuf
// does). Byte fields are copied, so b may be reused. Errors wrap ErrPayload.
func UnmarshalPayload(b []byte) (*Payload, error) {
	p := &Payload{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, payloadErr("tag", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case fieldDetails, fieldHmac:
			if typ != protowire.BytesType {
				return nil, fmt.Errorf("%w: field %d has wire type %d", ErrPayload, num, typ)
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, payloadErr("field", protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldHmac {
				p.Hmac = cloneNonEmpty(v)
				continue
			}
			if err := p.unmarshalDetails(v); err != nil {
				return nil, err
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, payloadErr("unknown field", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return p, nil
}

func (p *Payload) unmarshalDetails(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return payloadErr("details tag", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case fieldCert:
			if typ != protowire.BytesType {
				return fmt.Errorf("%w: details field %d has wire type %d", ErrPayload, num, typ)
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return payloadErr("cert", protowire.ParseError(n))
			}
			b = b[n:]
			p.Cert = cloneNonEmpty(v)
		case fieldInitiatorIndex, fieldResponderIndex, fieldCookie, fieldTime, fieldCertVersion:
			if typ != protowire.VarintType {
				return fmt.Errorf("%w: details field %d has wire type %d", ErrPayload, num, typ)
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return payloadErr("details varint", protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldInitiatorIndex:
				p.InitiatorIndex = uint32(v)
			case fieldResponderIndex:
				p.ResponderIndex = uint32(v)
			case fieldCookie:
				p.Cookie = v
			case fieldTime:
				p.Time = v
			case fieldCertVersion:
				p.CertVersion = uint32(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return payloadErr("unknown details field", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

func payloadErr(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrPayload, what, err)
}

// cloneNonEmpty copies v, mapping empty to nil so a decoded payload re-encodes identically.
func cloneNonEmpty(v []byte) []byte {
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}
