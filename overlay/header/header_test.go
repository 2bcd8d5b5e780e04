package header

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// Bytes taken from NEBULA-WIRE §2 and §4.5 (a RecvError naming 0xdeadbeef) and from the
// captured type/subtype pairs in §7.
func TestEncodeMatchesWireLayout(t *testing.T) {
	tests := []struct {
		name    string
		typ     Type
		subtype uint8
		index   uint32
		counter uint64
		want    string
	}{
		{"recv error echoes index with counter 0", RecvError, SubtypeNone, 0xdeadbeef, 0, "12000000deadbeef0000000000000000"},
		{"first data packet has counter 3", Message, SubtypeNone, 0x0a0b0c0d, 3, "110000000a0b0c0d0000000000000003"},
		{"relay frame is message/1", Message, SubtypeRelay, 1, 0x0102030405060708, "11010000000000010102030405060708"},
		{"handshake msg1 has index 0 and counter 1", Handshake, SubtypeHandshakeIXPSK0, 0, 1, "10000000000000000000000000000001"},
		{"test reply", Test, SubtypeTestReply, 0xffffffff, 9, "14010000ffffffff0000000000000009"},
		{"close tunnel", CloseTunnel, SubtypeNone, 7, 1 << 63, "15000000000000078000000000000000"},
		{"control", Control, SubtypeNone, 0, 0, "16000000000000000000000000000000"},
		{"lighthouse", LightHouse, SubtypeNone, 0, 0, "13000000000000000000000000000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, 32)
			got := Encode(buf, tt.typ, tt.subtype, tt.index, tt.counter)
			if hex.EncodeToString(got) != tt.want {
				t.Fatalf("Encode = %x, want %s", got, tt.want)
			}
			if &got[0] != &buf[0] || len(got) != Len {
				t.Fatal("Encode must return b[:Len] without copying")
			}
			var h Header
			if err := h.Parse(got); err != nil {
				t.Fatal(err)
			}
			want := Header{Version: 1, Type: tt.typ, Subtype: tt.subtype, RemoteIndex: tt.index, Counter: tt.counter}
			if h != want {
				t.Fatalf("Parse = %+v, want %+v", h, want)
			}
		})
	}
}

func TestParseIgnoresVersionAndReserved(t *testing.T) {
	// NEBULA-WIRE §2: a data packet with version 2 and reserved 0xabcd was accepted by 1.6.1.
	b, _ := hex.DecodeString("2100abcd0000000100000000000000ff")
	var h Header
	if err := h.Parse(b); err != nil {
		t.Fatalf("Parse rejected version 2: %v", err)
	}
	want := Header{Version: 2, Type: Message, Subtype: 0, Reserved: 0xabcd, RemoteIndex: 1, Counter: 255}
	if h != want {
		t.Fatalf("got %+v, want %+v", h, want)
	}
	if out := h.Encode(make([]byte, Len)); !bytes.Equal(out, b) {
		t.Fatalf("Header.Encode = %x, want %x", out, b)
	}
}

func TestParseRejectsShortDatagrams(t *testing.T) {
	for n := 0; n < Len; n++ {
		var h Header
		if err := h.Parse(make([]byte, n)); !errors.Is(err, ErrTooShort) {
			t.Fatalf("len %d: err = %v, want ErrTooShort", n, err)
		}
	}
	var h Header
	if err := h.Parse(make([]byte, Len+100)); err != nil {
		t.Fatalf("longer datagram: %v", err)
	}
}

func TestParseReadsOnlyTheFirstSixteenBytes(t *testing.T) {
	b := Encode(make([]byte, 40), Test, SubtypeTestRequest, 5, 6)[:40]
	for i := Len; i < len(b); i++ {
		b[i] = 0xff
	}
	var h Header
	if err := h.Parse(b); err != nil || h.Counter != 6 || h.RemoteIndex != 5 {
		t.Fatalf("got %+v, %v", h, err)
	}
}

func TestEncodePanicsWithoutRoom(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Encode into 15 bytes did not panic")
		}
	}()
	Encode(make([]byte, Len-1), Message, 0, 0, 0)
}

func TestTypeNames(t *testing.T) {
	tests := []struct {
		t     Type
		want  string
		known bool
	}{
		{Handshake, "handshake", true},
		{Message, "message", true},
		{RecvError, "recvError", true},
		{LightHouse, "lightHouse", true},
		{Test, "test", true},
		{CloseTunnel, "closeTunnel", true},
		{Control, "control", true},
		{7, "unknown(7)", false},
		{15, "unknown(15)", false},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("Type(%d).String() = %q, want %q", tt.t, got, tt.want)
		}
		if tt.t.Known() != tt.known {
			t.Errorf("Type(%d).Known() = %v", tt.t, !tt.known)
		}
	}
	h := Header{Version: 1, Type: Message, RemoteIndex: 0x0a, Counter: 3}
	if got, want := h.String(), "v1 message/0 idx=0x0000000a ctr=3"; got != want {
		t.Errorf("Header.String() = %q, want %q", got, want)
	}
}

func TestEncodeAndParseDoNotAllocate(t *testing.T) {
	buf := make([]byte, Len)
	var h Header
	n := testing.AllocsPerRun(100, func() {
		Encode(buf, Message, 0, 1, 2)
		_ = h.Parse(buf)
	})
	if n != 0 {
		t.Fatalf("%v allocs per Encode+Parse, want 0", n)
	}
}

// FuzzParse: any 16+ bytes parse, and re-encoding the parsed header reproduces them exactly
// (Version and Type are nibbles, so nothing is lost); shorter input is ErrTooShort.
func FuzzParse(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x01})
	f.Add(Encode(make([]byte, Len), Message, SubtypeNone, 1, 3))
	f.Add(Encode(make([]byte, Len), RecvError, SubtypeNone, 0xdeadbeef, 0))
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Header
		err := h.Parse(b)
		if len(b) < Len {
			if !errors.Is(err, ErrTooShort) {
				t.Fatalf("short input: err = %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Parse(%x): %v", b, err)
		}
		if h.Version > 15 || h.Type > 15 {
			t.Fatalf("nibble out of range: %+v", h)
		}
		if out := h.Encode(make([]byte, Len)); !bytes.Equal(out, b[:Len]) {
			t.Fatalf("round trip %x -> %+v -> %x", b[:Len], h, out)
		}
		if h.Version == Version && h.Reserved == 0 {
			if out := Encode(make([]byte, Len), h.Type, h.Subtype, h.RemoteIndex, h.Counter); !bytes.Equal(out, b[:Len]) {
				t.Fatalf("Encode disagrees with Header.Encode: %x vs %x", out, b[:Len])
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	buf := make([]byte, Len)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Encode(buf, Message, SubtypeNone, 0x01020304, uint64(i))
	}
}

func BenchmarkParse(b *testing.B) {
	buf := Encode(make([]byte, Len), Message, SubtypeNone, 0x01020304, 99)
	var h Header
	b.ReportAllocs()
	for b.Loop() {
		if err := h.Parse(buf); err != nil {
			b.Fatal(err)
		}
	}
}
