package handshake

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestMarshalPayloadWritesNebulaLayout(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
		want string // hex
	}{
		{"empty payload still carries Details", Payload{}, "0a00"},
		{"msg1 fields in ascending order", Payload{Cert: []byte{0xaa, 0xbb}, InitiatorIndex: 1, Time: 300},
			"0a09" + "0a02aabb" + "1001" + "28ac02"},
		{"msg2 with responder index", Payload{Cert: []byte{0xaa}, InitiatorIndex: 0xffffffff, ResponderIndex: 2, Time: 1},
			"0a0d" + "0a01aa" + "10ffffffff0f" + "1802" + "2801"},
		{"cookie and hmac are kept", Payload{Cookie: 5, Hmac: []byte{1, 2}}, "0a022005" + "12020102"},
		// Nebula 1.10+ writes CertVersion (field 8) last in Details, for v1 as well as v2.
		{"cert version is field 8", Payload{Cert: []byte{0xaa}, InitiatorIndex: 1, Time: 1, CertVersion: 2},
			"0a09" + "0a01aa" + "1001" + "2801" + "4002"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := hex.EncodeToString(MarshalPayload(nil, &tt.p))
			if got != tt.want {
				t.Fatalf("MarshalPayload = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestUnmarshalPayloadAcceptsProto3Variants(t *testing.T) {
	want := &Payload{Cert: []byte{0xaa}, InitiatorIndex: 7, ResponderIndex: 9, Time: 42}
	tests := []struct {
		name string
		in   string
	}{
		{"canonical", "0a09" + "0a01aa" + "1007" + "1809" + "282a"},
		{"reversed field order", "0a09" + "282a" + "1809" + "1007" + "0a01aa"},
		{"unknown fields skipped", "0a17" + "0a01aa" + "1007" + "1809" + "282a" + "3801" + "4a03616263" + "4d01020304" + "3000"},
		{"details split in two is merged", "0a05" + "0a01aa" + "1007" + "0a04" + "1809" + "282a"},
		{"last scalar wins", "0a0b" + "0a01aa" + "1001" + "1007" + "1809" + "282a"},
		{"non-minimal varint accepted", "0a0a" + "0a01aa" + "108700" + "1809" + "282a"},
		{"uint32 keeps low bits", "0a0e" + "0a01aa" + "1087808080f001" + "1809" + "282a"},
		{"top-level unknown field", "0a09" + "0a01aa" + "1007" + "1809" + "282a" + "1801"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := hex.DecodeString(tt.in)
			got, err := UnmarshalPayload(b)
			if err != nil {
				t.Fatalf("UnmarshalPayload: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestUnmarshalPayloadRejectsMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"truncated tag", "0a"},
		{"length past end", "0a05" + "0a01"},
		{"details with wire type varint", "0801"},
		{"hmac with wire type fixed32", "1501020304"},
		{"cert with wire type varint", "0a02" + "0801"},
		{"index with wire type bytes", "0a03" + "120101"},
		{"time as fixed64", "0a09" + "290102030405060708"},
		{"field number zero", "0001"},
		{"varint overflow", "0a0c" + "10ffffffffffffffffff7f"},
		{"truncated varint in details", "0a02" + "1080"},
		{"cert length past end of details", "0a03" + "0a05aa"},
		{"unknown field truncated", "0a02" + "3a05"},
		{"unterminated group", "0a01" + "3b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := hex.DecodeString(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := UnmarshalPayload(b); !errors.Is(err, ErrPayload) {
				t.Fatalf("UnmarshalPayload(%s) error = %v, want ErrPayload", tt.in, err)
			}
		})
	}
}

func TestUnmarshalPayloadCopiesBytes(t *testing.T) {
	b := MarshalPayload(nil, &Payload{Cert: []byte{1, 2, 3}, Hmac: []byte{4}})
	p, err := UnmarshalPayload(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xff
	}
	if !bytes.Equal(p.Cert, []byte{1, 2, 3}) || !bytes.Equal(p.Hmac, []byte{4}) {
		t.Fatalf("decoded payload aliases the input: %+v", p)
	}
}

// FuzzPayload checks that no input panics and that anything accepted reaches a fixed point:
// decode(encode(decode(x))) == decode(x), and encode is stable.
func FuzzPayload(f *testing.F) {
	f.Add(MarshalPayload(nil, &Payload{Cert: bytes.Repeat([]byte{7}, 140), InitiatorIndex: 0xdeadbeef, Time: 1 << 60}))
	f.Add(MarshalPayload(nil, &Payload{Cert: []byte{1}, InitiatorIndex: 1, ResponderIndex: 2, Cookie: 3, Time: 4, Hmac: []byte{5}}))
	f.Add(MarshalPayload(nil, &Payload{Cert: []byte{0x30, 0}, InitiatorIndex: 1, ResponderIndex: 2, Time: 4, CertVersion: 2}))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Add(protowire.AppendTag(nil, 1, protowire.StartGroupType))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := UnmarshalPayload(b)
		if err != nil {
			if !errors.Is(err, ErrPayload) {
				t.Fatalf("error does not wrap ErrPayload: %v", err)
			}
			return
		}
		enc := MarshalPayload(nil, p)
		p2, err := UnmarshalPayload(enc)
		if err != nil {
			t.Fatalf("re-decoding our own encoding failed: %v", err)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("not a fixed point: %+v != %+v", p, p2)
		}
		if enc2 := MarshalPayload(nil, p2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding unstable: %x != %x", enc, enc2)
		}
	})
}
