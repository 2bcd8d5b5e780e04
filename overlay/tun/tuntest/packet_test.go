package tuntest

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	ipA = netip.MustParseAddr("10.42.0.1")
	ipB = netip.MustParseAddr("10.42.7.200")
)

// reserialize decodes pkt with gopacket and re-encodes it with gopacket computing lengths
// and checksums: equal bytes mean our builders agree with an independent implementation.
func reserialize(t *testing.T, pkt []byte) []byte {
	t.Helper()
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	var ls []gopacket.SerializableLayer
	ls = append(ls, ip)
	switch {
	case p.Layer(layers.LayerTypeUDP) != nil:
		u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if err := u.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, u, gopacket.Payload(u.Payload))
	case p.Layer(layers.LayerTypeICMPv4) != nil:
		ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		ls = append(ls, ic, gopacket.Payload(ic.Payload))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBuildersAgreeWithGopacket(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"echo request", IPv4ICMPEcho(ipA, ipB, 0x1234, 7, []byte("hello"))},
		{"echo request odd length", IPv4ICMPEcho(ipA, ipB, 1, 65535, []byte("abc"))},
		{"echo reply empty", IPv4ICMPEchoReply(ipB, ipA, 0, 0, nil)},
		{"udp", IPv4UDP(netip.AddrPortFrom(ipA, 4000), netip.AddrPortFrom(ipB, 9999), []byte("query"))},
		{"udp odd length", IPv4UDP(netip.AddrPortFrom(ipA, 1), netip.AddrPortFrom(ipB, 2), []byte("x"))},
		{"udp 4-in-6 source", IPv4UDP(netip.MustParseAddrPort("[::ffff:10.42.0.1]:9"), netip.AddrPortFrom(ipB, 9), nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if want := reserialize(t, tt.pkt); !bytes.Equal(tt.pkt, want) {
				t.Fatalf("ours    %x\ngopacket %x", tt.pkt, want)
			}
		})
	}
}

func TestParseReadsWhatTheBuildersWrote(t *testing.T) {
	p, err := Parse(IPv4ICMPEcho(ipA, ipB, 0x1234, 7, []byte("hello")))
	if err != nil {
		t.Fatal(err)
	}
	if p.Src != ipA || p.Dst != ipB || p.Proto != ProtoICMP || p.ICMPType != ICMPEchoRequest ||
		p.ICMPID != 0x1234 || p.ICMPSeq != 7 || string(p.Data) != "hello" || p.TTL != 64 {
		t.Fatalf("echo parsed as %+v", p)
	}
	p, err = Parse(IPv4UDP(netip.AddrPortFrom(ipA, 4000), netip.AddrPortFrom(ipB, 53), []byte("q")))
	if err != nil {
		t.Fatal(err)
	}
	if p.Proto != ProtoUDP || p.SrcPort != 4000 || p.DstPort != 53 || string(p.Data) != "q" {
		t.Fatalf("udp parsed as %+v", p)
	}
}

func TestParseRejectsDamagedPackets(t *testing.T) {
	good := IPv4UDP(netip.AddrPortFrom(ipA, 1), netip.AddrPortFrom(ipB, 2), []byte("payload"))
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		pkt  []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"ipv6", mutate(func(b []byte) []byte { b[0] = 0x60; return b }), ErrNotIPv4},
		{"ihl below 5", mutate(func(b []byte) []byte { b[0] = 0x44; return b }), ErrTruncated},
		{"total length beyond buffer", good[:len(good)-1], ErrTruncated},
		{"ip header bit flipped", mutate(func(b []byte) []byte { b[8]++; return b }), ErrChecksum},
		{"udp payload bit flipped", mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrChecksum},
		{"icmp bit flipped", func() []byte { b := IPv4ICMPEcho(ipA, ipB, 1, 1, []byte("x")); b[len(b)-1] ^= 1; return b }(), ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.pkt); !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(IPv4ICMPEcho(ipA, ipB, 1, 2, []byte("x")))
	f.Add(IPv4UDP(netip.AddrPortFrom(ipA, 1), netip.AddrPortFrom(ipB, 2), []byte("payload")))
	f.Add([]byte{0x4f, 0, 0, 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if !p.Src.Is4() || !p.Dst.Is4() || len(p.Payload) > len(b) || len(p.Data) > len(p.Payload) {
			t.Fatalf("inconsistent parse %+v of %x", p, b)
		}
	})
}

// IPv6UDP's header and checksum agree with gopacket's.
func TestIPv6UDPAgreesWithGopacket(t *testing.T) {
	for _, payload := range []string{"query", "x", ""} {
		pkt := IPv6UDP(netip.MustParseAddrPort("[fd42::1]:4000"), netip.MustParseAddrPort("[fd42::7:200]:9999"), []byte(payload))
		p := gopacket.NewPacket(pkt, layers.LayerTypeIPv6, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Fatalf("gopacket: %v", el.Error())
		}
		ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if err := u.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			ip, u, gopacket.Payload(u.Payload)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pkt, buf.Bytes()) {
			t.Fatalf("payload %q:\nours     %x\ngopacket %x", payload, pkt, buf.Bytes())
		}
	}
}
