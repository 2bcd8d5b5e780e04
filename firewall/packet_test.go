package firewall

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

type parseCase struct {
	name string
	pkt  []byte
	want Packet // compared field by field below; Reason decides success
}

func parseCases() []parseCase {
	const a, b = "10.42.1.5", "10.42.0.1"
	const a6, b6 = "fd00::5", "fd00::1"
	hbh200 := make([]byte, 0, 200*8+20)
	for i := 0; i < 200; i++ {
		hbh200 = append(hbh200, ext6(ProtoHopByHop, 0)...)
	}
	hbh200[len(hbh200)-8] = ProtoTCP
	hbh200 = append(hbh200, tcpSeg(1, 2, tcpSYN)...)
	dst9 := []byte{}
	for i := 0; i < 9; i++ {
		nh := uint8(ProtoDstOpts)
		if i == 8 {
			nh = ProtoUDP
		}
		dst9 = append(dst9, ext6(nh, 0)...)
	}
	dst9 = append(dst9, udpDgram(1, 2)...)
	badTCPOpt := tcpSeg(1000, 80, tcpSYN, 2, 1, 0, 0) // MSS option with length 1
	badTCPOpt[12] = 6 << 4
	tcpMSS := tcpSeg(1000, 80, tcpSYN, 2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 0, 0, 0) // MSS, NOP, NOP, SACK-permitted, NOP, end
	tcpMSS[12] = 8 << 4
	tcpDoffLow := tcpSeg(1000, 80, tcpSYN)
	tcpDoffLow[12] = 4 << 4
	tcpDoffHigh := tcpSeg(1000, 80, tcpSYN)
	tcpDoffHigh[12] = 15 << 4
	udpLenShort := udpDgram(1, 53)
	udpLenShort[5] = 4
	udpLenLong := udpDgram(1, 53)
	udpLenLong[5] = 40
	ihlLow := v4{src: a, dst: b, proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes()
	ihlLow[0] = 0x44
	totalLong := v4{src: a, dst: b, proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes()
	binary.BigEndian.PutUint16(totalLong[2:], 100)
	totalShort := v4{src: a, dst: b, proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes()
	binary.BigEndian.PutUint16(totalShort[2:], 19)
	trailing := append(v4{src: a, dst: b, proto: ProtoUDP, payload: udpDgram(7, 8)}.bytes(), 0, 0, 0, 0)
	v6Trunc := v6{src: a6, dst: b6, nh: ProtoUDP, payload: udpDgram(1, 2)}.bytes()
	binary.BigEndian.PutUint16(v6Trunc[4:], 9)
	v6Jumbo := v6{src: a6, dst: b6, nh: ProtoUDP, payload: udpDgram(1, 2)}.bytes()
	binary.BigEndian.PutUint16(v6Jumbo[4:], 0)
	hbhJumboOpt := ext6(ProtoUDP, 0)
	hbhJumboOpt[2], hbhJumboOpt[3] = 0xc2, 4
	hbhOptOverrun := ext6(ProtoUDP, 0)
	hbhOptOverrun[3] = 10

	ok4 := func(proto uint8, sp, dp uint16) Packet {
		return Packet{Version: 4, Proto: proto, Src: addr(a), Dst: addr(b), SrcPort: sp, DstPort: dp}
	}
	ok6 := func(proto uint8, sp, dp uint16) Packet {
		return Packet{Version: 6, Proto: proto, Src: addr(a6), Dst: addr(b6), SrcPort: sp, DstPort: dp}
	}
	fail := func(r Reason) Packet { return Packet{Reason: r} }
	withFrag := func(p Packet, k FragKind, id uint32) Packet { p.Frag, p.FragID = k, id; return p }
	withICMP := func(p Packet, t, c uint8, id uint16) Packet {
		p.ICMPType, p.ICMPCode, p.ICMPID = t, c, id
		return p
	}

	return []parseCase{
		{"ipv4 tcp", v4{src: a, dst: b, proto: ProtoTCP, payload: tcpSeg(40000, 443, tcpSYN)}.bytes(), ok4(ProtoTCP, 40000, 443)},
		{"ipv4 udp", v4{src: a, dst: b, proto: ProtoUDP, payload: udpDgram(5353, 53, 1, 2, 3)}.bytes(), ok4(ProtoUDP, 5353, 53)},
		{"ipv4 icmp echo", v4{src: a, dst: b, proto: ProtoICMP, payload: icmpMsg(8, 0, 77)}.bytes(), withICMP(ok4(ProtoICMP, 0, 0), 8, 0, 77)},
		{"ipv4 icmp error has no id", v4{src: a, dst: b, proto: ProtoICMP, payload: icmpMsg(3, 1, 77)}.bytes(), withICMP(ok4(ProtoICMP, 0, 0), 3, 1, 0)},
		{"ipv4 other protocol has no ports", v4{src: a, dst: b, proto: 47, payload: []byte{0, 0, 8, 0}}.bytes(), ok4(47, 0, 0)},
		{"ipv4 zero-length payload of a portless protocol", v4{src: a, dst: b, proto: 253}.bytes(), ok4(253, 0, 0)},
		{"ipv4 zero-length tcp payload is truncated", v4{src: a, dst: b, proto: ProtoTCP}.bytes(), fail(ReasonTruncated)},
		{"ipv4 zero-length udp payload is truncated", v4{src: a, dst: b, proto: ProtoUDP}.bytes(), fail(ReasonTruncated)},
		{"ipv4 tcp with options", v4{src: a, dst: b, proto: ProtoTCP, options: []byte{7, 7, 4, 0, 0, 0, 0, 0}, payload: tcpSeg(1, 22, tcpSYN)}.bytes(), ok4(ProtoTCP, 1, 22)},
		{"ipv4 options nop and end", v4{src: a, dst: b, proto: ProtoUDP, options: []byte{1, 1, 0, 9}, payload: udpDgram(1, 2)}.bytes(), ok4(ProtoUDP, 1, 2)},
		{"ipv4 option length too short", v4{src: a, dst: b, proto: ProtoUDP, options: []byte{7, 2, 0, 0}, payload: udpDgram(1, 2)}.bytes(), fail(ReasonMalformed)},
		{"ipv4 option overruns header", v4{src: a, dst: b, proto: ProtoUDP, options: []byte{7, 9, 0, 0}, payload: udpDgram(1, 2)}.bytes(), fail(ReasonMalformed)},
		{"ipv4 option type without length", v4{src: a, dst: b, proto: ProtoUDP, options: []byte{1, 1, 1, 7}, payload: udpDgram(1, 2)}.bytes(), fail(ReasonMalformed)},
		{"ipv4 trailing bytes ignored", trailing, ok4(ProtoUDP, 7, 8)},
		{"empty buffer", nil, fail(ReasonTruncated)},
		{"ipv4 header cut short", v4{src: a, dst: b, proto: ProtoTCP}.bytes()[:19], fail(ReasonTruncated)},
		{"ipv4 ihl below 5", ihlLow, fail(ReasonMalformed)},
		{"ipv4 total length beyond buffer", totalLong, fail(ReasonTruncated)},
		{"ipv4 total length below header", totalShort, fail(ReasonMalformed)},
		{"ipv4 tcp header cut short", v4{src: a, dst: b, proto: ProtoTCP, payload: tcpSeg(1, 2, 0)[:19]}.bytes(), fail(ReasonTruncated)},
		{"ipv4 tcp data offset below 5", v4{src: a, dst: b, proto: ProtoTCP, payload: tcpDoffLow}.bytes(), fail(ReasonMalformed)},
		{"ipv4 tcp data offset beyond segment", v4{src: a, dst: b, proto: ProtoTCP, payload: tcpDoffHigh}.bytes(), fail(ReasonTruncated)},
		{"ipv4 tcp with options", v4{src: a, dst: b, proto: ProtoTCP, payload: tcpMSS}.bytes(), ok4(ProtoTCP, 1000, 80)},
		{"ipv4 tcp option length 1", v4{src: a, dst: b, proto: ProtoTCP, payload: badTCPOpt}.bytes(), fail(ReasonMalformed)},
		{"ipv4 udp length below header", v4{src: a, dst: b, proto: ProtoUDP, payload: udpLenShort}.bytes(), fail(ReasonMalformed)},
		{"ipv4 udp length beyond packet", v4{src: a, dst: b, proto: ProtoUDP, payload: udpLenLong}.bytes(), fail(ReasonMalformed)},
		{"ipv4 icmp cut short", v4{src: a, dst: b, proto: ProtoICMP, payload: icmpMsg(8, 0, 1)[:7]}.bytes(), fail(ReasonTruncated)},
		{"version 5", []byte{0x50, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, fail(ReasonBadVersion)},

		// IPv4 fragments.
		{"ipv4 first fragment has ports", v4{src: a, dst: b, proto: ProtoUDP, id: 9, more: true, payload: udpDgram(1, 53, 1, 2, 3, 4, 5, 6, 7, 8)}.bytes(), withFrag(ok4(ProtoUDP, 1, 53), FragFirst, 9)},
		{"ipv4 later fragment has none", v4{src: a, dst: b, proto: ProtoUDP, id: 9, off8: 2, payload: make([]byte, 8)}.bytes(), withFrag(ok4(ProtoUDP, 0, 0), FragLater, 9)},
		{"ipv4 first fragment without the whole tcp header", v4{src: a, dst: b, proto: ProtoTCP, id: 9, more: true, payload: tcpSeg(1, 2, 0)[:16]}.bytes(), fail(ReasonFragmentTooSmall)},
		{"ipv4 tcp fragment at offset 8 overlaps the header", v4{src: a, dst: b, proto: ProtoTCP, id: 9, off8: 1, payload: make([]byte, 16)}.bytes(), fail(ReasonFragmentOverlap)},
		{"ipv4 zero-length fragment", v4{src: a, dst: b, proto: ProtoUDP, id: 9, off8: 3}.bytes(), fail(ReasonMalformed)},
		{"ipv4 non-final fragment not a multiple of 8", v4{src: a, dst: b, proto: ProtoUDP, id: 9, more: true, off8: 3, payload: make([]byte, 12)}.bytes(), fail(ReasonMalformed)},
		{"ipv4 fragment reassembling beyond 64k", v4{src: a, dst: b, proto: ProtoUDP, id: 9, off8: 8190, payload: make([]byte, 64)}.bytes(), fail(ReasonMalformed)},

		// IPv6.
		{"ipv6 tcp", v6{src: a6, dst: b6, nh: ProtoTCP, payload: tcpSeg(40000, 22, tcpSYN)}.bytes(), ok6(ProtoTCP, 40000, 22)},
		{"ipv6 icmpv6 echo", v6{src: a6, dst: b6, nh: ProtoICMPv6, payload: icmpMsg(128, 0, 5)}.bytes(), withICMP(ok6(ProtoICMPv6, 0, 0), 128, 0, 5)},
		{"ipv6 hop-by-hop then udp", v6{src: a6, dst: b6, nh: ProtoHopByHop, payload: cat(ext6(ProtoUDP, 0), udpDgram(1, 53))}.bytes(), ok6(ProtoUDP, 1, 53)},
		{"ipv6 full legal chain", v6{src: a6, dst: b6, nh: ProtoHopByHop, payload: cat(ext6(ProtoDstOpts, 0), ext6(ProtoRouting, 1), routing6(ProtoAH, 0, 0), ah6(ProtoDstOpts), ext6(ProtoTCP, 2), tcpSeg(5, 6, tcpACK))}.bytes(), ok6(ProtoTCP, 5, 6)},
		{"ipv6 esp is final", v6{src: a6, dst: b6, nh: ProtoESP, payload: make([]byte, 16)}.bytes(), ok6(ProtoESP, 0, 0)},
		{"ipv6 esp cut short", v6{src: a6, dst: b6, nh: ProtoESP, payload: make([]byte, 4)}.bytes(), fail(ReasonTruncated)},
		{"ipv6 unknown next header is final", v6{src: a6, dst: b6, nh: ProtoDstOpts, payload: cat(ext6(253, 0), []byte{1, 2, 3, 4, 5, 6, 7, 8})}.bytes(), ok6(253, 0, 0)},
		{"ipv6 no next header", v6{src: a6, dst: b6, nh: ProtoDstOpts, payload: ext6(ProtoNoNext, 1)}.bytes(), ok6(ProtoNoNext, 0, 0)},
		{"ipv6 200 hop-by-hop headers", v6{src: a6, dst: b6, nh: ProtoHopByHop, payload: hbh200}.bytes(), fail(ReasonMalformed)},
		{"ipv6 chain beyond the walk budget", v6{src: a6, dst: b6, nh: ProtoDstOpts, payload: dst9}.bytes(), fail(ReasonExtHeaderLimit)},
		{"ipv6 extension header cut short", v6{src: a6, dst: b6, nh: ProtoDstOpts, payload: ext6(ProtoTCP, 1)[:12]}.bytes(), fail(ReasonTruncated)},
		{"ipv6 extension header length beyond packet", v6{src: a6, dst: b6, nh: ProtoDstOpts, payload: cat(ext6(ProtoUDP, 0)[:1], []byte{4}, make([]byte, 14))}.bytes(), fail(ReasonTruncated)},
		{"ipv6 jumbo option", v6{src: a6, dst: b6, nh: ProtoHopByHop, payload: cat(hbhJumboOpt, udpDgram(1, 2))}.bytes(), fail(ReasonMalformed)},
		{"ipv6 option overruns its header", v6{src: a6, dst: b6, nh: ProtoHopByHop, payload: cat(hbhOptOverrun, udpDgram(1, 2))}.bytes(), fail(ReasonMalformed)},
		{"ipv6 routing header with segments left", v6{src: a6, dst: b6, nh: ProtoRouting, payload: cat(routing6(ProtoUDP, 0, 1), udpDgram(1, 2))}.bytes(), fail(ReasonRoutingHeader)},
		{"ipv6 segment routing header", v6{src: a6, dst: b6, nh: ProtoRouting, payload: cat(routing6(ProtoUDP, 4, 0), udpDgram(1, 2))}.bytes(), fail(ReasonRoutingHeader)},
		{"ipv6 two routing headers", v6{src: a6, dst: b6, nh: ProtoRouting, payload: cat(routing6(ProtoRouting, 0, 0), routing6(ProtoUDP, 0, 0), udpDgram(1, 2))}.bytes(), fail(ReasonMalformed)},
		{"ipv6 transport cut short", v6{src: a6, dst: b6, nh: ProtoTCP, payload: tcpSeg(1, 2, 0)[:10]}.bytes(), fail(ReasonTruncated)},
		{"ipv6 payload length beyond buffer", v6Trunc, fail(ReasonTruncated)},
		{"ipv6 payload length zero", v6Jumbo, fail(ReasonMalformed)},
		{"ipv6 header cut short", v6{src: a6, dst: b6, nh: ProtoTCP}.bytes()[:39], fail(ReasonTruncated)},
		{"ipv6 first fragment", v6{src: a6, dst: b6, nh: ProtoFragment, payload: cat(frag6(ProtoUDP, 0, true, 77), udpDgram(1, 53, 1, 2, 3, 4, 5, 6, 7, 8))}.bytes(), withFrag(ok6(ProtoUDP, 1, 53), FragFirst, 77)},
		{"ipv6 later fragment", v6{src: a6, dst: b6, nh: ProtoFragment, payload: cat(frag6(ProtoUDP, 2, false, 77), make([]byte, 5))}.bytes(), withFrag(ok6(ProtoUDP, 0, 0), FragLater, 77)},
		{"ipv6 atomic fragment is whole", v6{src: a6, dst: b6, nh: ProtoFragment, payload: cat(frag6(ProtoUDP, 0, false, 77), udpDgram(1, 53))}.bytes(), ok6(ProtoUDP, 1, 53)},
		{"ipv6 first fragment without its chain", v6{src: a6, dst: b6, nh: ProtoFragment, payload: cat(frag6(ProtoDstOpts, 0, true, 77), ext6(ProtoTCP, 0))}.bytes(), fail(ReasonFragmentTooSmall)},
		{"ipv6 two fragment headers", v6{src: a6, dst: b6, nh: ProtoFragment, payload: cat(frag6(ProtoFragment, 0, false, 1), frag6(ProtoUDP, 0, false, 2), udpDgram(1, 2))}.bytes(), fail(ReasonMalformed)},
		{"ipv6 tcp fragment at offset 8", v6{src: a6, dst: b6, nh: ProtoFragment, payload: cat(frag6(ProtoTCP, 1, false, 3), make([]byte, 8))}.bytes(), fail(ReasonFragmentOverlap)},
		{"ipv6 zero-length fragment", v6{src: a6, dst: b6, nh: ProtoFragment, payload: frag6(ProtoUDP, 2, false, 3)}.bytes(), fail(ReasonMalformed)},
	}
}

// TestParseClassifiesOrFailsClosed checks every field Parse fills, and that a failed parse
// leaves nothing but the reason behind.
func TestParseClassifiesOrFailsClosed(t *testing.T) {
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			var p Packet
			p.Version = 9 // garbage from an earlier use must not survive
			ok := p.Parse(tc.pkt)
			if ok != (tc.want.Reason == ReasonNone) || p.Reason != tc.want.Reason {
				t.Fatalf("Parse = %v, reason %v; want reason %v", ok, p.Reason, tc.want.Reason)
			}
			if !ok {
				if (p != Packet{Reason: p.Reason}) {
					t.Fatalf("failed parse left fields set: %+v", p)
				}
				return
			}
			w := tc.want
			if p.Version != w.Version || p.Proto != w.Proto || p.Src != w.Src || p.Dst != w.Dst ||
				p.SrcPort != w.SrcPort || p.DstPort != w.DstPort || p.Frag != w.Frag || p.FragID != w.FragID ||
				p.ICMPType != w.ICMPType || p.ICMPCode != w.ICMPCode || p.ICMPID != w.ICMPID {
				t.Fatalf("got  %+v\nwant %+v", p, w)
			}
		})
	}
}

// TestParseAgreesWithGopacket runs the differential check on the table cases and on every
// truncation of each, so each length check meets its edge.
func TestParseAgreesWithGopacket(t *testing.T) {
	for _, tc := range parseCases() {
		for n := 0; n <= len(tc.pkt); n++ {
			checkAgainstGopacket(t, tc.name, tc.pkt[:n])
		}
		// Flip the length fields of each case too: they are what the parser trusts most.
		for _, off := range []int{2, 3, 4, 5, 6, 9, 40, 41} {
			if off < len(tc.pkt) {
				mut := bytes.Clone(tc.pkt)
				mut[off] ^= 0x5a
				checkAgainstGopacket(t, tc.name+" mutated", mut)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range parseCases() {
		f.Add(tc.pkt)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAgainstGopacket(t, "fuzz", b)
		var p Packet
		if p.Parse(b) {
			if p.Length > len(b) || p.L4Offset > p.Length || !p.Src.IsValid() || !p.Dst.IsValid() {
				t.Fatalf("inconsistent accept: %+v (len %d)", p, len(b))
			}
			if p.Frag == FragLater && (p.SrcPort != 0 || p.DstPort != 0) {
				t.Fatalf("later fragment with ports: %+v", p)
			}
		} else if (p != Packet{Reason: p.Reason}) || p.Reason == ReasonNone {
			t.Fatalf("failed parse not clean: %+v", p)
		}
	})
}

func TestParseDoesNotAllocate(t *testing.T) {
	pkt := v6{src: "fd00::5", dst: "fd00::1", nh: ProtoHopByHop, payload: cat(ext6(ProtoDstOpts, 0), ext6(ProtoTCP, 0), tcpSeg(1, 2, tcpSYN))}.bytes()
	var p Packet
	if n := testing.AllocsPerRun(100, func() { p.Parse(pkt) }); n != 0 {
		t.Fatalf("Parse allocates %v times", n)
	}
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"ipv4-tcp", v4{src: "10.0.0.1", dst: "10.0.0.2", proto: ProtoTCP, payload: tcpSeg(1, 2, tcpACK, make([]byte, 1200)...)}.bytes()},
		{"ipv6-chain", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoHopByHop, payload: cat(ext6(ProtoDstOpts, 0), ext6(ProtoTCP, 0), tcpSeg(1, 2, tcpSYN))}.bytes()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.pkt)))
			var p Packet
			for b.Loop() {
				p.Parse(bc.pkt)
			}
		})
	}
}

var _ = netip.Addr{}
