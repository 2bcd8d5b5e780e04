package lighthouse

import (
	"net/netip"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// v2Addr is Nebula 1.10+'s Addr for a: two big-endian halves of the 16-byte (mapped) form.
func v2Addr(a netip.Addr) []byte {
	hi, lo := halves(a)
	var b []byte
	if hi != 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), hi)
	}
	if lo != 0 {
		b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.VarintType), lo)
	}
	return b
}

func v2Meta(typ MetaType, details ...[]byte) []byte {
	var d []byte
	for _, f := range details {
		d = append(d, f...)
	}
	b := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(typ))
	return protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), d)
}

func bytesField(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

// What Nebula 1.11 sends on a tunnel built on v2 certificates (lighthouse.go there): the
// host in VpnAddr (field 6, IPv4 mapped) and relays in RelayVpnAddrs (field 7); an update
// names no host at all.
func TestV2FormsDecode(t *testing.T) {
	host := netip.MustParseAddr("10.99.0.1")
	relay := netip.MustParseAddr("10.99.0.9")
	tests := []struct {
		name string
		in   []byte
		want Meta
	}{
		{"query names the host in VpnAddr", v2Meta(HostQuery, bytesField(6, v2Addr(host))),
			Meta{Type: HostQuery, VpnIP: host, AddrV2: true}},
		{"update names no host, relays in field 7", v2Meta(HostUpdateNotification,
			bytesField(2, []byte{0x08, 0x81, 0x84, 0x80, 0x80, 0x0c, 0x10, 0x92, 0x21}),
			bytesField(7, v2Addr(relay)), bytesField(7, v2Addr(netip.MustParseAddr("fd00::9")))),
			Meta{Type: HostUpdateNotification, VpnIP: netip.IPv4Unspecified(), AddrV2: true,
				V4: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4242")}, Relays: []netip.Addr{relay, netip.MustParseAddr("fd00::9")}}},
		{"an IPv6 relay beside a v1 host field is dropped", v2Meta(HostQueryReply,
			[]byte{0x08, 0x81, 0x80, 0x8c, 0x53}, bytesField(7, v2Addr(netip.MustParseAddr("fd00::9"))), bytesField(7, v2Addr(relay))),
			Meta{Type: HostQueryReply, VpnIP: host, Relays: []netip.Addr{relay}}},
		{"the v1 field wins when both are set", v2Meta(HostQueryReply,
			[]byte{0x08, 0x81, 0x80, 0x8c, 0x53}, bytesField(6, v2Addr(netip.MustParseAddr("10.99.0.2")))),
			Meta{Type: HostQueryReply, VpnIP: host}},
		{"an IPv6 host stays IPv6", v2Meta(HostPunchNotification, bytesField(6, v2Addr(netip.MustParseAddr("fd00::1")))),
			Meta{Type: HostPunchNotification, VpnIP: netip.MustParseAddr("fd00::1"), AddrV2: true}},
		{"the ack is an empty update reply", v2Meta(HostUpdateNotificationAck),
			Meta{Type: HostUpdateNotificationAck, VpnIP: netip.IPv4Unspecified()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Meta
			if err := Unmarshal(tt.in, &m); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, tt.want) {
				t.Fatalf("got %+v\nwant %+v", m, tt.want)
			}
			var again Meta
			if err := Unmarshal(m.Marshal(nil), &again); err != nil || !reflect.DeepEqual(again, m) {
				t.Fatalf("round trip: %+v, %v", again, err)
			}
		})
	}
	if HostUpdateNotificationAck.String() != "HostUpdateNotificationAck" {
		t.Fatal(HostUpdateNotificationAck.String())
	}
}

func TestV2AddrMalformed(t *testing.T) {
	for name, in := range map[string][]byte{
		"addr with a bytes half": v2Meta(HostQuery, bytesField(6, bytesField(1, []byte{1}))),
		"truncated addr":         v2Meta(HostQuery, []byte{0x32, 0x05, 0x10}),
		"vpn addr as varint":     v2Meta(HostQuery, []byte{0x30, 0x01}),
	} {
		var m Meta
		if err := Unmarshal(in, &m); err == nil {
			t.Fatalf("%s: accepted %+v", name, m)
		}
	}
}

// A v2-form update names no host: the book files it under the tunnel's peer. A named host
// must still be the sender.
func TestBookTakesUnnamedUpdateAsTheSenders(t *testing.T) {
	b := NewBook(BookOptions{})
	var m Meta
	if err := Unmarshal(v2Meta(HostUpdateNotification, bytesField(2, []byte{0x08, 0x81, 0x84, 0x80, 0x80, 0x0c, 0x10, 0x92, 0x21})), &m); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(hostA, fromA, &m); err != nil {
		t.Fatal(err)
	}
	if r, ok := b.Lookup(hostA); !ok || len(r.V4) == 0 {
		t.Fatalf("unnamed update not filed under its sender: %+v", r)
	}
	m.VpnIP, m.AddrV2 = hostB, true
	if err := b.Update(hostA, fromA, &m); err == nil {
		t.Fatal("update naming another host accepted")
	}
}
