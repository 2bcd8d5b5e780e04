package tun

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// refSum is RFC 1071 the slow way: big-endian 16-bit words, odd byte padded, end-around
// carry. The tests check every checksum against it, never against ipsum itself.
func refSum(parts ...[]byte) uint16 {
	var s uint32
	for _, b := range parts {
		for i := 0; i+1 < len(b); i += 2 {
			s += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			s += uint32(b[len(b)-1]) << 8
		}
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// tcpOK verifies an IP/TCP packet's checksums with refSum.
func tcpOK(p []byte) error {
	v6 := p[0]>>4 == 6
	iph, addrs := 40, p[8:40]
	if !v6 {
		iph, addrs = int(p[0]&0xf)*4, p[12:20]
		if refSum(p[:iph]) != 0xffff {
			return fmt.Errorf("bad IPv4 header checksum")
		}
	}
	l := len(p) - iph
	pseudo := []byte{0, protoTCP, byte(l >> 8), byte(l)}
	if refSum(addrs, pseudo, p[iph:]) != 0xffff {
		return fmt.Errorf("bad TCP checksum")
	}
	return nil
}

type pktSpec struct {
	v6      bool
	ipOpts  []byte // IPv4 options (multiple of 4)
	tcpOpts []byte // multiple of 4
	seq     uint32
	id      uint16
	df      bool
	tos     uint8
	flags   uint8
	payload []byte
}

// mkTCP builds a TCP packet with correct checksums.
func mkTCP(s pktSpec) []byte {
	thl := 20 + len(s.tcpOpts)
	iph := 20 + len(s.ipOpts)
	if s.v6 {
		iph = 40
	}
	p := make([]byte, iph+thl+len(s.payload))
	if s.v6 {
		p[0], p[1] = 0x60|s.tos>>4, s.tos<<4|0x0a
		p[2], p[3] = 0xbc, 0xde // flow label
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6], p[7] = protoTCP, 64
		copy(p[8:], []byte{0xfd, 0x42, 15: 1})
		copy(p[24:], []byte{0xfd, 0x42, 15: 2})
	} else {
		p[0], p[1] = 0x40|byte(iph/4), s.tos
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], s.id)
		if s.df {
			p[6] = 0x40
		}
		p[8], p[9] = 64, protoTCP
		copy(p[12:], []byte{10, 42, 0, 1, 10, 42, 0, 2})
		copy(p[20:], s.ipOpts)
		binary.BigEndian.PutUint16(p[10:], ^refSum(p[:iph]))
	}
	t := p[iph:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[4:], s.seq)
	binary.BigEndian.PutUint32(t[8:], 0x01020304)
	t[12] = byte(thl/4) << 4
	t[13] = s.flags
	binary.BigEndian.PutUint16(t[14:], 502)
	copy(t[20:], s.tcpOpts)
	copy(t[thl:], s.payload)
	addrs := p[12:20]
	if s.v6 {
		addrs = p[8:40]
	}
	l := len(t)
	binary.BigEndian.PutUint16(t[16:], ^refSum(addrs, []byte{0, protoTCP, byte(l >> 8), byte(l)}, t))
	return p
}

// asKernelSends turns a whole TCP packet into what a TUN read returns for it as a
// super-packet: virtio-net header, and the pseudo-header sum in the checksum field.
func asKernelSends(p []byte, gso int) []byte {
	v6 := p[0]>>4 == 6
	iph, addrs := 40, p[8:40]
	if !v6 {
		iph, addrs = int(p[0]&0xf)*4, p[12:20]
	}
	thl := int(p[iph+12]>>4) * 4
	h := vnetHdr{flags: vnetFlagNeedsCsum, gsoType: vnetGSOTCPv4, hdrLen: uint16(iph + thl),
		gsoSize: uint16(gso), csumStart: uint16(iph), csumOffset: 16}
	if v6 {
		h.gsoType = vnetGSOTCPv6
	}
	b := make([]byte, vnetHdrLen+len(p))
	h.encode(b)
	q := b[vnetHdrLen:]
	copy(q, p)
	l := len(p) - iph
	binary.BigEndian.PutUint16(q[iph+16:], refSum(addrs, []byte{0, protoTCP, byte(l >> 8), byte(l)}))
	return b
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

// splitAll runs a read through the splitter into buffers of bufSize.
func splitAll(t testing.TB, read []byte, bufSize int) [][]byte {
	t.Helper()
	var s splitter
	if err := s.load(read); err != nil {
		t.Fatalf("load: %v", err)
	}
	var out [][]byte
	for s.pending() {
		buf := make([]byte, bufSize)
		n, err := s.next(buf)
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		out = append(out, buf[:n])
	}
	return out
}

func TestIpsumMatchesRFC1071(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if n%5 == 0 {
			for i := range b {
				b[i] = 0xff // carries everywhere
			}
		}
		init := uint16(r.Uint32())
		if got, want := ipsum(b, init), refSum(b, []byte{byte(init >> 8), byte(init)}); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("len %d: ipsum %#04x, RFC 1071 %#04x", n, got, want)
		}
	}
}

func TestSplitSegmentsASuperPacket(t *testing.T) {
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamp
	for _, tc := range []struct {
		name string
		spec pktSpec
		gso  int
		n    int // segments expected
	}{
		{"v4 even", pktSpec{seq: 1000, id: 7, df: true, flags: tcpACK, payload: payload(3*1200, 1)}, 1200, 3},
		{"v4 last partial, PSH", pktSpec{seq: 0xffffff00, id: 0xffff, flags: tcpACK | tcpPSH, payload: payload(3*1200+5, 2)}, 1200, 4},
		{"v4 FIN and CWR", pktSpec{seq: 5, flags: tcpACK | tcpFIN | tcpCWR | tcpPSH, payload: payload(2500, 3)}, 1000, 3},
		{"v4 timestamps and IP options", pktSpec{ipOpts: []byte{1, 1, 1, 0}, tcpOpts: ts, seq: 9, flags: tcpACK, payload: payload(4000, 4)}, 1188, 4},
		{"v6", pktSpec{v6: true, tcpOpts: ts, seq: 77, flags: tcpACK | tcpPSH, payload: payload(65535-40-32, 5)}, 1208, 55},
		{"gso larger than data", pktSpec{seq: 1, flags: tcpACK | tcpPSH, payload: payload(100, 6)}, 1200, 1},
		{"no data", pktSpec{seq: 1, flags: tcpACK, payload: nil}, 1200, 1},
		{"odd sizes", pktSpec{seq: 3, flags: tcpACK, payload: payload(1001, 7)}, 333, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := mkTCP(tc.spec)
			segs := splitAll(t, asKernelSends(orig, tc.gso), 1400)
			if len(segs) != tc.n {
				t.Fatalf("%d segments, want %d", len(segs), tc.n)
			}
			var data []byte
			iph := 20 + len(tc.spec.ipOpts)
			if tc.spec.v6 {
				iph = 40
			}
			hlen := iph + 20 + len(tc.spec.tcpOpts)
			for i, s := range segs {
				if err := tcpOK(s); err != nil {
					t.Fatalf("segment %d: %v", i, err)
				}
				last := i == len(segs)-1
				want := tc.spec.flags
				if !last {
					want &^= tcpFIN | tcpPSH
				}
				if i > 0 {
					want &^= tcpCWR
				}
				if s[iph+13] != want {
					t.Errorf("segment %d flags %#x, want %#x", i, s[iph+13], want)
				}
				if seq := binary.BigEndian.Uint32(s[iph+4:]); seq != tc.spec.seq+uint32(len(data)) {
					t.Errorf("segment %d seq %d, want %d", i, seq, tc.spec.seq+uint32(len(data)))
				}
				if tc.spec.v6 {
					if int(binary.BigEndian.Uint16(s[4:])) != len(s)-40 {
						t.Errorf("segment %d payload length %d", i, binary.BigEndian.Uint16(s[4:]))
					}
				} else {
					if int(binary.BigEndian.Uint16(s[2:])) != len(s) {
						t.Errorf("segment %d total length %d", i, binary.BigEndian.Uint16(s[2:]))
					}
					if id := binary.BigEndian.Uint16(s[4:]); id != tc.spec.id+uint16(i) {
						t.Errorf("segment %d IP ID %d", i, id)
					}
				}
				if !bytes.Equal(s[:hlen][20:iph], orig[20:iph]) || (!last && len(s)-hlen != tc.gso) {
					t.Errorf("segment %d: options or size wrong", i)
				}
				data = append(data, s[hlen:]...)
			}
			if !bytes.Equal(data, tc.spec.payload) {
				t.Fatal("payload not preserved")
			}
		})
	}
}

// TestSplitThenCoalesceGivesBackTheSuperPacket: the two halves are inverse, byte for byte.
func TestSplitThenCoalesceGivesBackTheSuperPacket(t *testing.T) {
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	for _, tc := range []struct {
		name string
		spec pktSpec
		gso  int
	}{
		{"v4 DF", pktSpec{seq: 1000, id: 7, df: true, flags: tcpACK, tcpOpts: ts, payload: payload(40*1248, 1)}, 1248},
		{"v4 ID wrap, PSH, last partial", pktSpec{seq: 0xfffffff0, id: 0xfffe, flags: tcpACK | tcpPSH, payload: payload(5*1260+17, 2)}, 1260},
		{"v4 CWR first", pktSpec{seq: 3, df: true, flags: tcpACK | tcpCWR | tcpECE, payload: payload(4*1000, 3)}, 1000},
		{"v6", pktSpec{v6: true, flags: tcpACK | tcpPSH, tcpOpts: ts, payload: payload(65535-40-32, 4)}, 1228},
		{"64 segments", pktSpec{seq: 1, df: true, flags: tcpACK, payload: payload(64*500, 5)}, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := asKernelSends(mkTCP(tc.spec), tc.gso)
			segs := splitAll(t, read, 1500)
			c := newCoalescer()
			if k := c.group(segs); k != len(segs) {
				t.Fatalf("joined %d of %d segments", k, len(segs))
			}
			got := append([]byte(nil), c.header()...)
			for _, p := range c.payloads {
				got = append(got, p...)
			}
			if !bytes.Equal(got, read) {
				t.Fatalf("coalesced super-packet differs from the one read:\n got %x\nwant %x", got[:80], read[:80])
			}
		})
	}
}

const tcpECE = 0x40

func TestSplitCompletesPartialChecksums(t *testing.T) {
	// A UDP datagram with NEEDS_CSUM, as a device with checksum offload reads it.
	p := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 42, 0, 1, 10, 42, 0, 2,
		0x9c, 0x40, 0x00, 0x35, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'}
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[10:], ^refSum(p[:20]))
	binary.BigEndian.PutUint16(p[24:], uint16(len(p)-20))
	l := len(p) - 20
	want := ^refSum(p[12:20], []byte{0, 17, byte(l >> 8), byte(l)}, p[20:])
	binary.BigEndian.PutUint16(p[26:], refSum(p[12:20], []byte{0, 17, byte(l >> 8), byte(l)}))
	read := make([]byte, vnetHdrLen+len(p))
	(&vnetHdr{flags: vnetFlagNeedsCsum, csumStart: 20, csumOffset: 6}).encode(read)
	copy(read[vnetHdrLen:], p)
	segs := splitAll(t, read, 1500)
	if len(segs) != 1 || len(segs[0]) != len(p) {
		t.Fatalf("got %d packets", len(segs))
	}
	if got := binary.BigEndian.Uint16(segs[0][26:]); got != want {
		t.Fatalf("UDP checksum %#04x, want %#04x", got, want)
	}
	// A plain packet passes as it is.
	(&vnetHdr{}).encode(read)
	copy(read[vnetHdrLen:], p)
	if segs := splitAll(t, read, 1500); !bytes.Equal(segs[0], p) {
		t.Fatal("plain packet changed")
	}
}

func TestSplitRefusesMalformedInput(t *testing.T) {
	good := asKernelSends(mkTCP(pktSpec{seq: 1, flags: tcpACK, payload: payload(3000, 1)}), 1200)
	good6 := asKernelSends(mkTCP(pktSpec{v6: true, seq: 1, flags: tcpACK, payload: payload(3000, 1)}), 1200)
	mod := func(b []byte, f func(h *vnetHdr, p []byte)) []byte {
		b = append([]byte(nil), b...)
		var h vnetHdr
		h.decode(b)
		f(&h, b[vnetHdrLen:])
		h.encode(b)
		return b
	}
	for _, tc := range []struct {
		name string
		read []byte
	}{
		{"empty", nil},
		{"header only", good[:vnetHdrLen]},
		{"short header", good[:5]},
		{"gso_size 0", mod(good, func(h *vnetHdr, p []byte) { h.gsoSize = 0 })},
		{"csum_start beyond packet", mod(good, func(h *vnetHdr, p []byte) { h.csumStart = 0xfff0 })},
		{"csum_start not the TCP header", mod(good, func(h *vnetHdr, p []byte) { h.csumStart = 24 })},
		{"csum_offset not TCP's", mod(good, func(h *vnetHdr, p []byte) { h.csumOffset = 6 })},
		{"plain csum_offset beyond packet", mod(good, func(h *vnetHdr, p []byte) { h.gsoType, h.csumStart, h.csumOffset = 0, 20, 0xffff })},
		{"unknown gso type", mod(good, func(h *vnetHdr, p []byte) { h.gsoType = 3 })},
		{"v4 type, v6 packet", mod(good6, func(h *vnetHdr, p []byte) { h.gsoType = vnetGSOTCPv4 })},
		{"v6 type, v4 packet", mod(good, func(h *vnetHdr, p []byte) { h.gsoType = vnetGSOTCPv6 })},
		{"total length longer than read", mod(good, func(h *vnetHdr, p []byte) { p[2]++ })},
		{"total length shorter than read", mod(good, func(h *vnetHdr, p []byte) { p[3]-- })},
		{"fragment", mod(good, func(h *vnetHdr, p []byte) { p[6] |= 0x20 })},
		{"not TCP", mod(good, func(h *vnetHdr, p []byte) { p[9] = 17 })},
		{"IHL too small", mod(good, func(h *vnetHdr, p []byte) { p[0] = 0x44 })},
		{"IHL beyond packet", mod(good[:vnetHdrLen+30], func(h *vnetHdr, p []byte) { p[0], p[2], p[3] = 0x4f, 0, 30 })},
		{"TCP data offset too small", mod(good, func(h *vnetHdr, p []byte) { p[32] = 0x40 })},
		{"TCP data offset beyond packet", mod(good[:vnetHdrLen+50], func(h *vnetHdr, p []byte) { p[2], p[3], p[32] = 0, 50, 0xf0 })},
		{"v6 extension header", mod(good6, func(h *vnetHdr, p []byte) { p[6] = 0 })},
		{"v6 payload length wrong", mod(good6, func(h *vnetHdr, p []byte) { p[5]++ })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s splitter
			if err := s.load(tc.read); err == nil {
				t.Fatalf("accepted: %x", tc.read[:min(len(tc.read), 64)])
			}
			if s.pending() {
				t.Fatal("refused packet left pending")
			}
		})
	}
	// garbage hdr_len is ignored: the header lengths come from the packet.
	if segs := splitAll(t, mod(good, func(h *vnetHdr, p []byte) { h.hdrLen = 0xffff }), 1500); len(segs) != 3 {
		t.Fatalf("%d segments", len(segs))
	}
}

func TestSplitDropsWhatDoesNotFitTheBuffer(t *testing.T) {
	var s splitter
	if err := s.load(asKernelSends(mkTCP(pktSpec{flags: tcpACK, payload: payload(3000, 1)}), 1400)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.next(make([]byte, 1000)); err != errShortBuf || s.pending() {
		t.Fatalf("next into a short buffer: %v, pending %v", err, s.pending())
	}
}

func TestCoalesceOnlyWhatMayBeJoined(t *testing.T) {
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	base := pktSpec{seq: 1000, id: 10, df: true, flags: tcpACK, payload: payload(1000, 1)}
	next := func(f func(s *pktSpec)) []byte {
		s := base
		s.seq, s.id, s.payload = 2000, 11, payload(1000, 2)
		f(&s)
		return mkTCP(s)
	}
	first := mkTCP(base)
	for _, tc := range []struct {
		name   string
		pkts   [][]byte
		joined int
	}{
		{"two", [][]byte{first, next(func(s *pktSpec) {})}, 2},
		{"shorter second closes", [][]byte{first, next(func(s *pktSpec) { s.payload = payload(10, 1) }), next(func(s *pktSpec) { s.seq = 2010 })}, 2},
		{"longer second", [][]byte{first, next(func(s *pktSpec) { s.payload = payload(1001, 1) })}, 1},
		{"PSH closes", [][]byte{first, next(func(s *pktSpec) { s.flags |= tcpPSH }), next(func(s *pktSpec) { s.seq = 3000 })}, 2},
		{"PSH on first", [][]byte{mkTCP(pktSpec{flags: tcpACK | tcpPSH, seq: 1000, payload: payload(1000, 1)}), next(func(s *pktSpec) {})}, 1},
		{"seq gap", [][]byte{first, next(func(s *pktSpec) { s.seq = 2001 })}, 1},
		{"retransmit", [][]byte{first, next(func(s *pktSpec) { s.seq = 1000 })}, 1},
		{"SYN", [][]byte{first, next(func(s *pktSpec) { s.flags |= tcpSYN })}, 1},
		{"RST", [][]byte{first, next(func(s *pktSpec) { s.flags |= tcpRST })}, 1},
		{"FIN", [][]byte{first, next(func(s *pktSpec) { s.flags |= tcpFIN })}, 1},
		{"URG", [][]byte{first, next(func(s *pktSpec) { s.flags |= tcpURG })}, 1},
		{"no ACK", [][]byte{mkTCP(pktSpec{seq: 1000, payload: payload(1000, 1)}), next(func(s *pktSpec) { s.flags = 0 })}, 1},
		{"CWR on second", [][]byte{first, next(func(s *pktSpec) { s.flags |= tcpCWR })}, 1},
		{"ECE differs", [][]byte{first, next(func(s *pktSpec) { s.flags |= tcpECE })}, 1},
		{"CE mark", [][]byte{first, next(func(s *pktSpec) { s.tos = 3 })}, 1},
		{"CE on both", [][]byte{mkTCP(pktSpec{seq: 1000, id: 10, df: true, tos: 3, flags: tcpACK, payload: payload(1000, 1)}), next(func(s *pktSpec) { s.tos = 3 })}, 1},
		{"TOS differs", [][]byte{first, next(func(s *pktSpec) { s.tos = 0x10 })}, 1},
		{"options differ", [][]byte{first, next(func(s *pktSpec) { s.tcpOpts = ts })}, 1},
		{"IP options", [][]byte{mkTCP(pktSpec{ipOpts: []byte{1, 1, 1, 0}, seq: 1000, flags: tcpACK, payload: payload(1000, 1)}), next(func(s *pktSpec) { s.ipOpts = []byte{1, 1, 1, 0} })}, 1},
		{"IPv4 after IPv6", [][]byte{mkTCP(pktSpec{v6: true, seq: 1000, flags: tcpACK, payload: payload(1000, 1)}), next(func(s *pktSpec) {})}, 1},
		{"DF equal IDs", [][]byte{first, next(func(s *pktSpec) { s.id = 10 })}, 2},
		{"DF odd IDs", [][]byte{first, next(func(s *pktSpec) { s.id = 99 })}, 1},
		{"no DF equal IDs", [][]byte{mkTCP(pktSpec{seq: 1000, id: 10, flags: tcpACK, payload: payload(1000, 1)}), next(func(s *pktSpec) { s.df, s.id = false, 10 })}, 1},
		{"no DF running IDs", [][]byte{mkTCP(pktSpec{seq: 1000, id: 10, flags: tcpACK, payload: payload(1000, 1)}), next(func(s *pktSpec) { s.df = false })}, 2},
		{"DF differs", [][]byte{first, next(func(s *pktSpec) { s.df = false })}, 1},
		{"pure ACK", [][]byte{mkTCP(pktSpec{seq: 1000, flags: tcpACK}), mkTCP(pktSpec{seq: 1000, flags: tcpACK})}, 1},
		{"v6 two", [][]byte{mkTCP(pktSpec{v6: true, seq: 1000, flags: tcpACK, payload: payload(1000, 1)}), mkTCP(pktSpec{v6: true, seq: 2000, flags: tcpACK, payload: payload(1000, 1)})}, 2},
		{"v6 traffic class differs", [][]byte{mkTCP(pktSpec{v6: true, seq: 1000, flags: tcpACK, payload: payload(1000, 1)}), mkTCP(pktSpec{v6: true, tos: 0x20, seq: 2000, flags: tcpACK, payload: payload(1000, 1)})}, 1},
		{"alone", [][]byte{first}, 1},
		{"garbage", [][]byte{{0x45, 1, 2}, first}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCoalescer()
			if k := c.group(tc.pkts); k != tc.joined {
				t.Fatalf("group covers %d packets, want %d", k, tc.joined)
			}
			if tc.joined > 1 {
				checkSuper(t, c, tc.pkts[:tc.joined])
			}
		})
	}
}

// checkSuper checks a coalesced super-packet by completing its checksum as the kernel would
// and splitting it again: the segments must carry the packets' data and flags.
func checkSuper(t *testing.T, c *coalescer, pkts [][]byte) {
	t.Helper()
	read := append([]byte(nil), c.header()...)
	for _, p := range c.payloads {
		read = append(read, p...)
	}
	segs := splitAll(t, read, 1500)
	if len(segs) != len(pkts) {
		t.Fatalf("super-packet splits into %d, want %d", len(segs), len(pkts))
	}
	for i, s := range segs {
		if err := sameSegment(s, pkts[i]); err != nil {
			t.Fatalf("segment %d: %v\n got %x\nwant %x", i, err, s, pkts[i])
		}
	}
}

// sameSegment compares a packet that went through coalescing and splitting with the
// original: equal but for what re-segmenting rewrites (IPv4 ID of DF packets, checksums, which
// may differ as +0 and -0) and with valid checksums.
func sameSegment(got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("length %d, want %d", len(got), len(want))
	}
	if err := tcpOK(got); err != nil {
		return err
	}
	g, w := bytes.Clone(got), bytes.Clone(want)
	iph := 40
	if g[0]>>4 == 4 {
		iph = int(g[0]&0xf) * 4
		g[10], g[11], w[10], w[11] = 0, 0, 0, 0
		if w[6]&0x40 != 0 {
			g[4], g[5], w[4], w[5] = 0, 0, 0, 0
		}
	}
	g[iph+16], g[iph+17], w[iph+16], w[iph+17] = 0, 0, 0, 0
	if !bytes.Equal(g, w) {
		return fmt.Errorf("bytes differ")
	}
	return nil
}

func TestCoalesceVerifiesChecksums(t *testing.T) {
	a := mkTCP(pktSpec{seq: 1000, df: true, flags: tcpACK, payload: payload(1000, 1)})
	b := mkTCP(pktSpec{seq: 2000, df: true, flags: tcpACK, payload: payload(1000, 2)})
	for i, corrupt := range [][]int{{0, 100}, {1, 100}, {0, 10}, {1, 10}} {
		pkts := [][]byte{append([]byte(nil), a...), append([]byte(nil), b...)}
		pkts[corrupt[0]][corrupt[1]] ^= 1
		if k := newCoalescer().group(pkts); k != 1 {
			t.Errorf("case %d: a corrupt segment was joined", i)
		}
	}
}

// With authenticated writes the checksums are the writer's business: a segment with a bad
// one is joined all the same (the kernel computes the super-packet's), while every header
// rule still holds.
func TestCoalesceOfAuthenticatedWritesSkipsChecksums(t *testing.T) {
	a := mkTCP(pktSpec{seq: 1000, df: true, flags: tcpACK, payload: payload(1000, 1)})
	b := mkTCP(pktSpec{seq: 2000, df: true, flags: tcpACK, payload: payload(1000, 2)})
	gap := mkTCP(pktSpec{seq: 3001, df: true, flags: tcpACK, payload: payload(1000, 3)})
	b[100] ^= 1 // payload byte: the TCP checksum no longer matches
	c := newCoalescer()
	c.authenticated = true
	if k := c.group([][]byte{a, b, gap}); k != 2 {
		t.Fatalf("joined %d segments, want 2 (the third does not follow in sequence)", k)
	}
	if got := c.payloads[1][100-40]; got != b[100] {
		t.Fatalf("payload byte %#x, want the written %#x", got, b[100])
	}
	if k := newCoalescer().group([][]byte{a, b}); k != 1 {
		t.Fatalf("a verifying coalescer joined the corrupt segment")
	}
}

func TestCoalesceStopsAtTheLimits(t *testing.T) {
	var pkts [][]byte
	for i := range 70 {
		pkts = append(pkts, mkTCP(pktSpec{seq: uint32(i * 500), df: true, flags: tcpACK, payload: payload(500, byte(i))}))
	}
	if k := newCoalescer().group(pkts); k != maxCoalesce {
		t.Fatalf("joined %d, want %d", k, maxCoalesce)
	}
	pkts = pkts[:0]
	for i := range 60 {
		pkts = append(pkts, mkTCP(pktSpec{seq: uint32(i * 1400), df: true, flags: tcpACK, payload: payload(1400, byte(i))}))
	}
	c := newCoalescer()
	k := c.group(pkts)
	if total := 40 + k*1400; total > maxSuperPacket || total+1400 <= maxSuperPacket {
		t.Fatalf("joined %d segments: %d bytes", k, total)
	}
	checkSuper(t, c, pkts[:k])
}

func BenchmarkSplit(b *testing.B) {
	read := asKernelSends(mkTCP(pktSpec{seq: 1, df: true, flags: tcpACK, payload: payload(65535-40, 1)}), 1260)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 1400)
	}
	b.SetBytes(int64(len(read)))
	b.ReportAllocs()
	var s splitter
	for b.Loop() {
		if err := s.load(read); err != nil {
			b.Fatal(err)
		}
		for k := 0; s.pending(); k++ {
			if _, err := s.next(bufs[k]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkCoalesce(b *testing.B) {
	var pkts [][]byte
	for i := range 51 {
		pkts = append(pkts, mkTCP(pktSpec{seq: uint32(i * 1260), df: true, flags: tcpACK, payload: payload(1260, byte(i))}))
	}
	for _, auth := range []bool{false, true} {
		b.Run(map[bool]string{false: "verify", true: "authenticated"}[auth], func(b *testing.B) {
			b.SetBytes(51 * 1300)
			b.ReportAllocs()
			c := newCoalescer()
			c.authenticated = auth
			for b.Loop() {
				if k := c.group(pkts); k != 51 {
					b.Fatal(k)
				}
			}
		})
	}
}

func BenchmarkIpsum(b *testing.B) {
	buf := payload(1300, 1)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		ipsum(buf, 0)
	}
}

func fuzzSeeds() [][]byte {
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	return [][]byte{
		mkTCP(pktSpec{seq: 1000, id: 7, df: true, flags: tcpACK, tcpOpts: ts, payload: payload(3*600+5, 1)}),
		mkTCP(pktSpec{seq: 5, flags: tcpACK | tcpFIN | tcpCWR | tcpPSH, payload: payload(2500, 3)}),
		mkTCP(pktSpec{v6: true, seq: 77, flags: tcpACK | tcpPSH, tcpOpts: ts, payload: payload(2000, 5)}),
		mkTCP(pktSpec{ipOpts: []byte{1, 1, 1, 0}, seq: 9, flags: tcpACK, payload: payload(1000, 4)}),
	}
}

// FuzzSplit feeds arbitrary reads (virtio-net header and packet) to the splitter: it must
// never panic or write past a buffer, and every TCP segment it makes must be valid.
func FuzzSplit(f *testing.F) {
	for _, p := range fuzzSeeds() {
		f.Add(asKernelSends(p, 600), uint16(1400))
		f.Add(asKernelSends(p, 1), uint16(100))
	}
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x45}, uint16(1500))
	f.Fuzz(func(t *testing.T, read []byte, bufSize uint16) {
		var h vnetHdr
		if len(read) >= vnetHdrLen {
			h.decode(read)
		}
		var s splitter
		if err := s.load(read); err != nil {
			return
		}
		gso := s.gso != 0
		buf := make([]byte, bufSize)
		var data []byte
		for i := 0; s.pending(); i++ {
			if i > 1<<16 {
				t.Fatal("no end to the segments")
			}
			n, err := s.next(buf)
			if err != nil {
				if s.pending() {
					t.Fatal("error left the packet pending")
				}
				return
			}
			if !gso {
				continue
			}
			seg := buf[:n]
			if err := tcpOK(seg); err != nil {
				t.Fatalf("segment %d: %v", i, err)
			}
			data = append(data, seg[s.hlen:]...)
		}
		if gso && !bytes.Equal(data, read[vnetHdrLen+s.hlen:]) {
			t.Fatal("payload not preserved")
		}
	})
}

// FuzzCoalesce feeds arbitrary packet runs (each prefixed by a length byte pair) to the
// coalescer: what it joins must split back into the same packets.
func FuzzCoalesce(f *testing.F) {
	enc := func(pkts ...[]byte) []byte {
		var b []byte
		for _, p := range pkts {
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
		return b
	}
	for _, p := range fuzzSeeds() {
		segs := splitAll(f, asKernelSends(p, 600), 1500)
		f.Add(enc(segs...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var pkts [][]byte
		for len(in) >= 2 && len(pkts) < 80 {
			n := min(int(binary.BigEndian.Uint16(in)), len(in)-2)
			pkts = append(pkts, in[2:2+n])
			in = in[2+n:]
		}
		if len(pkts) == 0 {
			return
		}
		c := newCoalescer()
		k := c.group(pkts)
		if k < 1 || k > len(pkts) || k > maxCoalesce {
			t.Fatalf("group covers %d of %d", k, len(pkts))
		}
		if k == 1 {
			return
		}
		read := append([]byte(nil), c.header()...)
		for _, p := range c.payloads {
			read = append(read, p...)
		}
		if len(read)-vnetHdrLen > maxSuperPacket {
			t.Fatalf("super-packet of %d bytes", len(read)-vnetHdrLen)
		}
		var s splitter
		if err := s.load(read); err != nil {
			t.Fatalf("own super-packet refused: %v", err)
		}
		for i := 0; s.pending(); i++ {
			buf := make([]byte, 65536)
			n, err := s.next(buf)
			if err != nil || i >= k {
				t.Fatalf("segment %d: %v", i, err)
			}
			if err := sameSegment(buf[:n], pkts[i]); err != nil {
				t.Fatalf("segment %d: %v\n got %x\nwant %x", i, err, buf[:n], pkts[i])
			}
		}
	})
}
