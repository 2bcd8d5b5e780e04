package overlay

import (
	"bytes"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestControlMessageRoundTripsAndMatchesNebulaLayout(t *testing.T) {
	c := &control{Type: controlCreateRelayResponse, InitiatorIndex: 0x01020304, ResponderIndex: 7,
		RelayTo: netip.MustParseAddr("10.99.0.2"), RelayFrom: netip.MustParseAddr("10.99.0.1")}
	b := c.marshal()
	// Fields ascending, varints: 08 02 | 10 84 86 88 08 | 18 07 | 20 <10.99.0.2> | 28 <10.99.0.1>
	if b[0] != 0x08 || b[1] != 0x02 || b[2] != 0x10 {
		t.Fatalf("unexpected encoding % x", b)
	}
	got, err := unmarshalControl(b)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *c {
		t.Fatalf("round trip: %+v != %+v", got, c)
	}
}

func TestMalformedControlMessagesAreRefused(t *testing.T) {
	for _, b := range [][]byte{{0x08}, {0x08, 0x80}, {0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, {0x0a, 0x05, 0x01}} {
		if _, err := unmarshalControl(b); err == nil {
			t.Errorf("% x accepted", b)
		}
	}
}

func FuzzUnmarshalControl(f *testing.F) {
	f.Add((&control{Type: 1, InitiatorIndex: 9, RelayTo: netip.MustParseAddr("10.0.0.2"), RelayFrom: netip.MustParseAddr("10.0.0.1")}).marshal())
	f.Add((&control{Type: 1, InitiatorIndex: 9, RelayTo: netip.MustParseAddr("fd42::2"), RelayFrom: netip.MustParseAddr("10.0.0.1"), v2: true}).marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := unmarshalControl(b)
		if err != nil {
			return
		}
		again, err := unmarshalControl(c.marshal())
		if err != nil || *again != *c {
			t.Fatalf("re-encoding changed the message: %+v vs %+v (%v)", c, again, err)
		}
	})
}

func FuzzParseExt(f *testing.F) {
	f.Add(appendExt(nil, extOpFirewallQuery, 7))
	f.Add([]byte("MNX1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		op, id, body, ok := parseExt(b)
		if !ok {
			return
		}
		again := append(appendExt(nil, op, id), body...)
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: % x vs % x", again, b)
		}
	})
}

// FuzzRelayControl feeds control messages from an authenticated peer to a relay: nothing
// panics and the table stays within its bounds and consistent.
func FuzzRelayControl(f *testing.F) {
	p := newPathPair(f, "aes")
	r := p.b.relay
	r.conf.Store(&relayConf{amRelay: true})
	r.table.mu.Lock()
	r.table.maxPairsPerPeer, r.table.maxEntries = 3, 8
	r.table.mu.Unlock()
	from := p.b.hosts.byVPNIP(p.a.vpnIP)
	for _, c := range []control{
		{Type: controlCreateRelayRequest, InitiatorIndex: 5, RelayTo: p.b.vpnIP, RelayFrom: p.a.vpnIP},
		{Type: controlCreateRelayRequest, InitiatorIndex: 6, RelayTo: p.a.vpnIP, RelayFrom: p.a.vpnIP},
		{Type: controlCreateRelayResponse, InitiatorIndex: 7, ResponderIndex: 8, RelayTo: p.b.vpnIP, RelayFrom: p.a.vpnIP},
		{Type: controlCreateRelayRequest, InitiatorIndex: 5, RelayTo: p.b.vpnIP, RelayFrom: p.a.vpnIP, v2: true},
	} {
		f.Add(c.marshal())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r.handleControl(from, b)
		r.table.mu.Lock()
		defer r.table.mu.Unlock()
		n := 0
		r.table.byIndex.Range(func(_, v any) bool {
			n++
			if e := v.(*relayEntry); e.forward != nil && e.forward.forward != e {
				t.Fatalf("pair sides not joined: %+v", e)
			}
			return true
		})
		if n != r.table.entries || n > r.table.maxEntries {
			t.Fatalf("%d entries, counted %d, bound %d", n, r.table.entries, r.table.maxEntries)
		}
	})
}

// On v2 tunnels (and for IPv6) the addresses go in RelayToAddr/RelayFromAddr, fields 6 and
// 7, as Nebula 1.10+'s Addr messages; the v1 fields 4 and 5 are left out.
func TestControlMessageV2Form(t *testing.T) {
	for _, c := range []*control{
		{Type: controlCreateRelayRequest, InitiatorIndex: 9, RelayTo: netip.MustParseAddr("fd42::2"), RelayFrom: netip.MustParseAddr("fd42::1"), v2: true},
		{Type: controlCreateRelayResponse, InitiatorIndex: 9, ResponderIndex: 3, RelayTo: netip.MustParseAddr("10.99.0.2"), RelayFrom: netip.MustParseAddr("10.99.0.1"), v2: true},
	} {
		b := c.marshal()
		for _, tag := range []byte{0x32, 0x3a} { // fields 6 and 7, length-delimited
			if !bytes.Contains(b, []byte{tag}) {
				t.Fatalf("no field tag %#x in % x", tag, b)
			}
		}
		got, err := unmarshalControl(b)
		if err != nil || *got != *c {
			t.Fatalf("round trip: %+v, %v; want %+v", got, err, c)
		}
	}
	// Field 6 written by hand as Nebula's Addr { hi = 0, lo = ::ffff:10.99.0.2's low half }.
	addr := protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 0x0000ffff0a630002)
	b := []byte{0x08, 0x01, 0x10, 0x09}
	b = protowire.AppendBytes(protowire.AppendTag(b, 6, protowire.BytesType), addr)
	if got, err := unmarshalControl(b); err != nil || got.RelayTo != netip.MustParseAddr("10.99.0.2") || !got.v2 {
		t.Fatalf("Nebula's v2 form: %+v, %v", got, err)
	}
}
