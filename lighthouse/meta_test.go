package lighthouse

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "", "(", "", ")", "").Replace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The HostUpdateNotification from 10.99.0.1 captured from a real 1.6.1 node (NEBULA-WIRE §5.2).
const goldenUpdate = "08 03 12 21 | 08 81808c53 | 12 09 (08 818480800c 10 9221) | 22 0f (08 8080808080b7c38020 10 01 18 9221)"

func goldenUpdateMeta() Meta {
	return Meta{
		Type:  HostUpdateNotification,
		VpnIP: netip.MustParseAddr("10.99.0.1"),
		V4:    []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4242")},
		V6:    []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:4242")},
	}
}

func TestMarshalMatchesRealNodeBytes(t *testing.T) {
	m := goldenUpdateMeta()
	got := m.Marshal(nil)
	if want := unhex(t, goldenUpdate); !bytes.Equal(got, want) {
		t.Fatalf("Marshal\n got %x\nwant %x", got, want)
	}
}

func TestUnmarshalRealNodeBytes(t *testing.T) {
	var m Meta
	if err := Unmarshal(unhex(t, goldenUpdate), &m); err != nil {
		t.Fatal(err)
	}
	if want := goldenUpdateMeta(); !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
}

func TestMarshalPacksRelaysAndAppends(t *testing.T) {
	m := Meta{Type: HostQueryReply, VpnIP: netip.MustParseAddr("10.99.0.2"),
		Relays: []netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.3")}}
	prefix := []byte{0xaa}
	b := m.Marshal(prefix)
	if b[0] != 0xaa {
		t.Fatal("Marshal did not append to its argument")
	}
	// 08 02 | 12 0f | 08 82808c53 | 2a 08 81808c53 83808c53
	want := unhex(t, "aa 0802 120f 0882808c53 2a08 81808c53 83808c53")
	if !bytes.Equal(b, want) {
		t.Fatalf("got %x\nwant %x", b, want)
	}
}

// Tests build messages by hand with protowire so that orders and encodings real nodes never
// produce are covered.
func tag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	return protowire.AppendTag(b, num, typ)
}

func TestUnmarshalAcceptsWhatProto3Allows(t *testing.T) {
	ip4 := func(ip, port uint64) []byte {
		var s []byte
		s = protowire.AppendVarint(tag(s, 1, protowire.VarintType), ip)
		s = protowire.AppendVarint(tag(s, 2, protowire.VarintType), port)
		return s
	}
	details := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	meta := func(typ uint64, d []byte) []byte {
		var b []byte
		b = protowire.AppendBytes(tag(b, 2, protowire.BytesType), d) // details before type
		return protowire.AppendVarint(tag(b, 1, protowire.VarintType), typ)
	}
	bytesField := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(tag(nil, num, protowire.BytesType), v)
	}
	varintField := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(nil, num, protowire.VarintType), v)
	}
	tests := []struct {
		name string
		in   []byte
		want Meta
	}{
		{"fields out of order", meta(3, details(bytesField(2, ip4(0xC0000201, 4242)), varintField(1, 0x0A630001))),
			Meta{Type: 3, VpnIP: netip.MustParseAddr("10.99.0.1"), V4: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4242")}}},
		{"unpacked relays", meta(2, details(varintField(5, 0x0A630001), varintField(5, 0x0A630002))),
			Meta{Type: 2, VpnIP: netip.IPv4Unspecified(), Relays: []netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")}}},
		{"unknown fields skipped and counter ignored", meta(1, details(varintField(3, 7), bytesField(9, []byte("x")), varintField(1, 0x0A630005))),
			Meta{Type: 1, VpnIP: netip.MustParseAddr("10.99.0.5")}},
		{"repeated details merge", append(meta(1, varintField(1, 0x0A630005)), bytesField(2, bytesField(2, ip4(0x01020304, 1)))...),
			Meta{Type: 1, VpnIP: netip.MustParseAddr("10.99.0.5"), V4: []netip.AddrPort{netip.MustParseAddrPort("1.2.3.4:1")}}},
		{"empty message", nil, Meta{VpnIP: netip.IPv4Unspecified()}},
		{"unknown type kept", meta(42, nil), Meta{Type: 42, VpnIP: netip.IPv4Unspecified()}},
		{"mapped v6 stays mapped", meta(3, bytesField(4, details(varintField(1, 0), varintField(2, 0x0000ffff0a000001), varintField(3, 80)))),
			Meta{Type: 3, VpnIP: netip.IPv4Unspecified(), V6: []netip.AddrPort{netip.MustParseAddrPort("[::ffff:10.0.0.1]:80")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m Meta
			if err := Unmarshal(tc.in, &m); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, tc.want) {
				t.Fatalf("got %+v\nwant %+v", m, tc.want)
			}
		})
	}
}

func TestUnmarshalRejectsMalformed(t *testing.T) {
	many := func(n int) []byte {
		var d []byte
		for i := 0; i < n; i++ {
			d = protowire.AppendVarint(tag(d, 5, protowire.VarintType), uint64(i))
		}
		return protowire.AppendBytes(tag(nil, 2, protowire.BytesType), d)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"truncated tag", []byte{0x80}, ErrMalformed},
		{"truncated details", unhex(t, goldenUpdate)[:10], ErrMalformed},
		{"details as varint", []byte{0x10, 0x01}, ErrMalformed},
		{"type as bytes", []byte{0x0a, 0x00}, ErrMalformed},
		{"type out of int32", protowire.AppendVarint([]byte{0x08}, 1<<40), ErrMalformed},
		{"vpn ip above 32 bits", []byte{0x12, 0x06, 0x08, 0x80, 0x80, 0x80, 0x80, 0x10}, ErrMalformed},
		{"port above 65535", []byte{0x12, 0x06, 0x12, 0x04, 0x10, 0x80, 0x80, 0x04}, ErrMalformed},
		{"ip6 hi as bytes", []byte{0x12, 0x04, 0x22, 0x02, 0x0a, 0x00}, ErrMalformed},
		{"group field", []byte{0x1b, 0x1c}, ErrMalformed},
		{"field number zero", []byte{0x00, 0x00}, ErrMalformed},
		{"packed relays truncated", []byte{0x12, 0x03, 0x2a, 0x01, 0x80}, ErrMalformed},
		{"too many entries", many(MaxMetaEntries + 1), ErrTooMany},
		{"too large", append(many(1), make([]byte, MaxMetaSize)...), ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m Meta
			err := Unmarshal(tc.in, &m)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal(%x) = %v, want %v", tc.in, err, tc.want)
			}
		})
	}
}

func TestUnmarshalAcceptsExactlyMaxEntries(t *testing.T) {
	m := Meta{Type: HostQueryReply, VpnIP: netip.MustParseAddr("10.0.0.1")}
	for i := 0; i < MaxMetaEntries; i++ {
		m.Relays = append(m.Relays, netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}))
	}
	var got Meta
	if err := Unmarshal(m.Marshal(nil), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip changed the message")
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(unhex(f, goldenUpdate))
	f.Add([]byte{0x12, 0x03, 0x2a, 0x01, 0x80})
	f.Add([]byte{0x08, 0x01, 0x12, 0x05, 0x08, 0x81, 0x80, 0x8c, 0x53})
	// Nebula 1.10+'s v2 forms: VpnAddr (field 6) and RelayVpnAddrs (field 7).
	f.Add(v2Meta(HostQuery, bytesField(6, v2Addr(netip.MustParseAddr("10.99.0.1")))))
	f.Add(v2Meta(HostUpdateNotification, bytesField(7, v2Addr(netip.MustParseAddr("10.99.0.9"))), bytesField(7, v2Addr(netip.MustParseAddr("fd00::9")))))
	f.Fuzz(func(t *testing.T, in []byte) {
		var m Meta
		if err := Unmarshal(in, &m); err != nil {
			return
		}
		out := m.Marshal(nil)
		var again Meta
		if err := Unmarshal(out, &again); err != nil {
			t.Fatalf("re-decoding %x: %v", out, err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip\n got %+v\nwant %+v", again, m)
		}
	})
}

func BenchmarkUnmarshal(b *testing.B) {
	in := unhex(b, goldenUpdate)
	b.ReportAllocs()
	var m Meta
	for i := 0; i < b.N; i++ {
		if err := Unmarshal(in, &m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	m := goldenUpdateMeta()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = m.Marshal(buf[:0])
	}
}

func TestMetaTypeNames(t *testing.T) {
	for typ, want := range map[MetaType]string{0: "None", HostQuery: "HostQuery", PathCheckReply: "PathCheckReply", 42: "MetaType(42)"} {
		if got := typ.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint32(typ), got, want)
		}
	}
}
