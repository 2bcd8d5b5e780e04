package firewall

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// checksumOK verifies a one's-complement checksum over b (plus an optional pseudo-header sum).
func checksumOK(pseudo uint32, b []byte) bool { return onesSum(pseudo, b) == 0xffff }

// reserialize rebuilds reply with gopacket computing every checksum, an independent check of
// ours.
func reserialize(t *testing.T, reply []byte) []byte {
	t.Helper()
	first := layers.LayerTypeIPv4
	if reply[0]>>4 == 6 {
		first = layers.LayerTypeIPv6
	}
	p := gopacket.NewPacket(reply, first, gopacket.Default)
	var ls []gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	switch ip := p.Layers()[0].(type) {
	case *layers.IPv4:
		ls, nl = append(ls, ip), ip
	case *layers.IPv6:
		ls, nl = append(ls, ip), ip
	}
	l4 := p.Layers()[1]
	switch l := l4.(type) {
	case *layers.TCP:
		_ = l.SetNetworkLayerForChecksum(nl)
		ls = append(ls, l)
	case *layers.ICMPv4:
		ls = append(ls, l)
	case *layers.ICMPv6:
		_ = l.SetNetworkLayerForChecksum(nl)
		ls = append(ls, l)
	default:
		t.Fatalf("unexpected layer %v", l4.LayerType())
	}
	ls = append(ls, gopacket.Payload(l4.LayerPayload()))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRejectPacketAnswersTCPWithReset(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pkt        []byte
		wantSeq    uint32
		wantAck    uint32
		wantACKBit bool
	}{
		// tcpSeg uses seq 1000, ack 2000.
		{"syn gets rst+ack of seq+1", tcpIn("10.42.1.5", 40000, 22, tcpSYN), 0, 1001, true},
		{"data without ack gets seq+len", v4{src: "10.42.1.5", dst: local, proto: ProtoTCP, payload: tcpSeg(40000, 22, 0, 1, 2, 3)}.bytes(), 0, 1003, true},
		{"segment with ack gets rst at its ack", tcpIn("10.42.1.5", 40000, 22, tcpACK|tcpFIN), 2000, 0, false},
		{"ipv6", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoTCP, payload: tcpSeg(40000, 22, tcpSYN)}.bytes(), 0, 1001, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply, ok := RejectPacket(make([]byte, 0, 1500), tc.pkt)
			if !ok {
				t.Fatal("no reply")
			}
			var orig, got Packet
			orig.Parse(tc.pkt)
			if !got.Parse(reply) {
				t.Fatalf("reply does not parse: %v", got.Reason)
			}
			if got.Src != orig.Dst || got.Dst != orig.Src || got.SrcPort != orig.DstPort || got.DstPort != orig.SrcPort {
				t.Fatalf("reply addresses %v:%d -> %v:%d", got.Src, got.SrcPort, got.Dst, got.DstPort)
			}
			p := gopacket.NewPacket(reply, map[uint8]gopacket.LayerType{4: layers.LayerTypeIPv4, 6: layers.LayerTypeIPv6}[got.Version], gopacket.Default)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp == nil {
				t.Fatalf("gopacket finds no TCP in %x", reply)
			}
			if !tcp.RST || tcp.SYN || tcp.FIN || tcp.ACK != tc.wantACKBit || tcp.Seq != tc.wantSeq || tcp.Ack != tc.wantAck {
				t.Fatalf("RST seq %d ack %d flags rst=%v ack=%v; want seq %d ack %d ack=%v", tcp.Seq, tcp.Ack, tcp.RST, tcp.ACK, tc.wantSeq, tc.wantAck, tc.wantACKBit)
			}
			if got.Version == 4 && !checksumOK(0, reply[:20]) {
				t.Fatal("bad IPv4 header checksum")
			}
			if !checksumOK(pseudoSum(&orig, ProtoTCP, 20), reply[got.L4Offset:]) {
				t.Fatal("bad TCP checksum")
			}
			if again := reserialize(t, reply); !bytes.Equal(again, reply) {
				t.Fatalf("gopacket's checksums differ:\nours     %x\ngopacket %x", reply, again)
			}
		})
	}
}

func TestRejectPacketAnswersOthersWithAdminProhibited(t *testing.T) {
	big := v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, payload: udpDgram(5000, 53, make([]byte, 1000)...)}.bytes()
	for _, tc := range []struct {
		name      string
		pkt       []byte
		typ, code uint8
		max       int
	}{
		{"udp over ipv4", udpIn("10.42.1.5", 5000, 53), 3, 13, 576},
		{"large udp is quoted within 576 bytes", big, 3, 13, 576},
		{"echo request", pingIn("10.42.1.5", 8), 3, 13, 576},
		{"udp over ipv6", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoUDP, payload: udpDgram(1, 53)}.bytes(), 1, 1, 1280},
		{"first fragment", v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, more: true, payload: udpDgram(1, 53, make([]byte, 8)...)}.bytes(), 3, 13, 576},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply, ok := RejectPacket(nil, tc.pkt)
			if !ok {
				t.Fatal("no reply")
			}
			var orig, got Packet
			orig.Parse(tc.pkt)
			if !got.Parse(reply) || got.Src != orig.Dst || got.Dst != orig.Src || !got.isICMP() {
				t.Fatalf("reply %+v", got)
			}
			if got.ICMPType != tc.typ || got.ICMPCode != tc.code {
				t.Fatalf("ICMP %d/%d, want %d/%d", got.ICMPType, got.ICMPCode, tc.typ, tc.code)
			}
			if len(reply) > tc.max {
				t.Fatalf("reply is %d bytes, over %d", len(reply), tc.max)
			}
			quote := reply[got.L4Offset+8:]
			if n := min(len(tc.pkt), len(quote)); string(quote[:n]) != string(tc.pkt[:n]) || len(quote) < 28 {
				t.Fatal("reply does not quote the offending packet's headers")
			}
			var pseudo uint32
			if got.Version == 6 {
				pseudo = pseudoSum(&orig, ProtoICMPv6, len(reply)-40)
			} else if !checksumOK(0, reply[:20]) {
				t.Fatal("bad IPv4 header checksum")
			}
			if !checksumOK(pseudo, reply[got.L4Offset:]) {
				t.Fatal("bad ICMP checksum")
			}
			if again := reserialize(t, reply); !bytes.Equal(again, reply) {
				t.Fatalf("gopacket's checksums differ:\nours     %x\ngopacket %x", reply, again)
			}
			if got.Version == 4 && int(binary.BigEndian.Uint16(reply[2:])) != len(reply) {
				t.Fatal("IPv4 total length wrong")
			}
		})
	}
}

func TestRejectPacketStaysSilentWhereAReplyWouldBeWrong(t *testing.T) {
	rst := tcpIn("10.42.1.5", 1, 2, tcpRST)
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"garbage", []byte{0x45, 0, 0}},
		{"tcp rst", rst},
		{"icmp error", pingIn("10.42.1.5", 3)},
		{"icmpv6 error", v6{src: "fd00::5", dst: "fd00::1", nh: ProtoICMPv6, payload: icmpMsg(1, 4, 0)}.bytes()},
		{"later fragment", v4{src: "10.42.1.5", dst: local, proto: ProtoUDP, off8: 4, payload: make([]byte, 8)}.bytes()},
		{"to broadcast", v4{src: "10.42.1.5", dst: "255.255.255.255", proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes()},
		{"to multicast", v4{src: "10.42.1.5", dst: "224.0.0.251", proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes()},
		{"from unspecified", v4{src: "0.0.0.0", dst: local, proto: ProtoUDP, payload: udpDgram(1, 2)}.bytes()},
		{"ipv6 multicast", v6{src: "fd00::5", dst: "ff02::1", nh: ProtoUDP, payload: udpDgram(1, 2)}.bytes()},
	} {
		if reply, ok := RejectPacket(nil, tc.pkt); ok || len(reply) != 0 {
			t.Errorf("%s: got a reply %x", tc.name, reply)
		}
	}
}

func TestRejectPacketReusesTheBuffer(t *testing.T) {
	buf := make([]byte, 0, 1500)
	pkt := udpIn("10.42.1.5", 5000, 53)
	if n := testing.AllocsPerRun(100, func() { buf, _ = RejectPacket(buf, pkt) }); n != 0 {
		t.Fatalf("RejectPacket allocates %v times with a large enough buffer", n)
	}
}

func FuzzRejectPacket(f *testing.F) {
	for _, tc := range parseCases() {
		f.Add(tc.pkt)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		reply, ok := RejectPacket(nil, b)
		if !ok {
			return
		}
		var p Packet
		if !p.Parse(reply) {
			t.Fatalf("reply to %x does not parse: %v", b, p.Reason)
		}
		if p.Proto == ProtoTCP && p.TCPFlags&tcpRST == 0 {
			t.Fatal("TCP reply without RST")
		}
	})
}
