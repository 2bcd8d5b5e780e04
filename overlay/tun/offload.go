package tun

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// TUN offloads move TCP data between the kernel and the daemon as super-packets of up to 64 KiB
// behind a virtio_net_hdr (include/uapi/linux/virtio_net.h), one system call for dozens of
// packets. The overlay keeps seeing ordinary MTU-sized IP packets: reads are split here
// (splitter) and writes of consecutive segments of one flow are joined here (coalescer), so
// what goes on the wire is unchanged and Nebula peers see nothing new. This file is plain
// byte work, free of system calls, so it is tested and fuzzed on any platform.

// OffloadStats counts the work of the offload path of a device (all queues), for tests and
// metrics. All zero when the device was opened without offloads.
type OffloadStats struct {
	Split     uint64 // super-packets read and split
	Segments  uint64 // packets those became
	Coalesced uint64 // super-packets written
	Joined    uint64 // packets that went into them
	Dropped   uint64 // reads that yielded nothing: malformed virtio-net header or super-packet, or a packet too big for the caller's buffer
	Fallbacks uint64 // super-packets the kernel refused, written one packet at a time instead
}

// The virtio_net_hdr without the num_buffers field: what TUNSETVNETHDRSZ is given.
const (
	vnetHdrLen = 10

	vnetFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: complete the checksum at csum_start+csum_offset

	vnetGSONone  = 0
	vnetGSOTCPv4 = 1
	vnetGSOTCPv6 = 4
	vnetGSOECN   = 0x80 // the super-packet carries CWR (only seen with TUN_F_TSO_ECN, which we do not ask for)
)

const (
	protoTCP = 6

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpCWR = 0x80

	// maxSuperPacket bounds a super-packet: the IPv4 total length (and IPv6 payload length)
	// field is 16 bits. BIG TCP is not asked for, so the kernel sends nothing longer.
	maxSuperPacket = 65535
	// maxCoalesce caps the segments joined in one write, so the iovec array is fixed.
	maxCoalesce = 64
	// maxHeaders is the longest IPv6 + TCP header (with options) the coalescer copies.
	maxHeaders = 40 + 60
)

// Errors of the offload path. Each is one packet (or the rest of a super-packet) dropped;
// Read counts them and goes on, it never returns them.
var (
	errVnetHdr  = errors.New("tun: malformed virtio-net header or super-packet")
	errShortBuf = errors.New("tun: packet larger than the read buffer")
)

// vnetHdr is a decoded virtio_net_hdr. The kernel uses native byte order on a TUN device
// unless TUNSETVNETBE/LE says otherwise, and we never do.
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	_ = b[vnetHdrLen-1]
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h *vnetHdr) encode(b []byte) {
	_ = b[vnetHdrLen-1]
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// ipsum is the Internet checksum sum (RFC 1071) of b, as big-endian 16-bit words, plus
// initial, folded to 16 bits and not complemented. b must start at an even offset of the
// data it is summed with. It adds little-endian 64-bit words with carries (the one's
// complement sum does not depend on byte order up to a final swap): a few GB/s in pure Go.
func ipsum(b []byte, initial uint16) uint16 {
	var s, c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	t := c + uint64(bits.ReverseBytes16(initial))
	if len(b) >= 4 {
		t += uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		t += uint64(binary.LittleEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		t += uint64(b[0]) // the odd byte is the high half of a zero-padded word
	}
	s, c = bits.Add64(s, t, 0)
	s += c // cannot carry again: s is at most 2^64-2 after a carry
	s = s>>32 + s&0xffffffff
	s = s>>32 + s&0xffffffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return bits.ReverseBytes16(uint16(s))
}

// addsum adds two folded one's complement sums.
func addsum(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s + s>>16)
}

// pseudoSum is the sum of a TCP/UDP pseudo-header without the length: the addresses (v4
// bytes 12-19, v6 bytes 8-39 of the IP header, contiguous) and the protocol.
func pseudoSum(ip []byte, v6 bool, proto uint8) uint16 {
	if v6 {
		return ipsum(ip[8:40], uint16(proto))
	}
	return ipsum(ip[12:20], uint16(proto))
}

// completeCsum fills in a checksum the kernel left partial (NEEDS_CSUM): the field holds
// the pseudo-header sum and the checksum covers everything from start to the end.
func completeCsum(p []byte, start, off int) error {
	if start+off+2 > len(p) {
		return errVnetHdr
	}
	c := ^ipsum(p[start:], 0)
	if c == 0 {
		c = 0xffff // as the kernel does: 0 means "no checksum" to UDP over IPv4
	}
	binary.BigEndian.PutUint16(p[start+off:], c)
	return nil
}

// splitter holds one packet read from the device and hands it out as ordinary IP packets:
// a TCP super-packet as segments of gso bytes of payload, over as many Reads as it takes.
type splitter struct {
	pkt    []byte // the packet after its virtio-net header; nil when nothing is pending
	gso    int    // payload bytes per segment; 0: pkt goes out whole
	iph    int    // IP header length
	hlen   int    // IP + TCP header length
	off    int    // payload offset of the next segment
	idx    int    // index of the next segment
	v6     bool
	pseudo uint16 // pseudo-header sum without the length
}

func (s *splitter) pending() bool { return s.pkt != nil }

// load takes what one read returned (virtio-net header and packet) and checks it. Header
// lengths come from the packet itself; the header's hdr_len is only a hint and is ignored.
// On error nothing is pending.
func (s *splitter) load(b []byte) error {
	s.pkt = nil
	if len(b) <= vnetHdrLen {
		return errVnetHdr
	}
	var h vnetHdr
	h.decode(b)
	p := b[vnetHdrLen:]
	switch h.gsoType &^ vnetGSOECN {
	case vnetGSONone:
		if h.flags&vnetFlagNeedsCsum != 0 {
			if err := completeCsum(p, int(h.csumStart), int(h.csumOffset)); err != nil {
				return err
			}
		}
		s.pkt, s.gso = p, 0
		return nil
	case vnetGSOTCPv4:
		if len(p) < 20 || p[0]>>4 != 4 {
			return errVnetHdr
		}
		s.v6, s.iph = false, int(p[0]&0xf)*4
		// No fragments (MF or an offset) and a total length that is what was read: a
		// longer one (BIG TCP) would have been cut by our buffer.
		if s.iph < 20 || len(p) < s.iph || p[9] != protoTCP ||
			int(binary.BigEndian.Uint16(p[2:])) != len(p) || binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return errVnetHdr
		}
	case vnetGSOTCPv6:
		// Extension headers are not split (the kernel puts none on TCP it sends).
		if len(p) < 40 || p[0]>>4 != 6 || p[6] != protoTCP || int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			return errVnetHdr
		}
		s.v6, s.iph = true, 40
	default:
		return errVnetHdr
	}
	if len(p) < s.iph+20 {
		return errVnetHdr
	}
	thl := int(p[s.iph+12]>>4) * 4
	if thl < 20 || len(p) < s.iph+thl || h.gsoSize == 0 {
		return errVnetHdr
	}
	if h.flags&vnetFlagNeedsCsum != 0 && (int(h.csumStart) != s.iph || h.csumOffset != 16) {
		return errVnetHdr
	}
	s.pkt, s.gso, s.hlen, s.off, s.idx = p, int(h.gsoSize), s.iph+thl, 0, 0
	s.pseudo = pseudoSum(p, s.v6, protoTCP)
	return nil
}

// next writes the next packet into dst and returns its length. When dst is too small the
// rest of the pending packet is dropped and errShortBuf returned.
func (s *splitter) next(dst []byte) (int, error) {
	p := s.pkt
	if s.gso == 0 {
		s.pkt = nil
		if len(dst) < len(p) {
			return 0, errShortBuf
		}
		return copy(dst, p), nil
	}
	payload := len(p) - s.hlen
	n := min(s.gso, payload-s.off)
	size := s.hlen + n
	if len(dst) < size {
		s.pkt = nil
		return 0, errShortBuf
	}
	last := s.off+n >= payload
	q := dst[:size]
	copy(q, p[:s.hlen])
	copy(q[s.hlen:], p[s.hlen+s.off:s.hlen+s.off+n])
	if s.v6 {
		binary.BigEndian.PutUint16(q[4:], uint16(size-40))
	} else {
		binary.BigEndian.PutUint16(q[2:], uint16(size))
		binary.BigEndian.PutUint16(q[4:], binary.BigEndian.Uint16(p[4:])+uint16(s.idx))
		q[10], q[11] = 0, 0
		binary.BigEndian.PutUint16(q[10:], ^ipsum(q[:s.iph], 0))
	}
	t := q[s.iph:]
	binary.BigEndian.PutUint32(t[4:], binary.BigEndian.Uint32(p[s.iph+4:])+uint32(s.off))
	if !last {
		t[13] &^= tcpFIN | tcpPSH // they belong to the end of the data
	}
	if s.idx > 0 {
		t[13] &^= tcpCWR // the window was reduced once, at the start
	}
	t[16], t[17] = 0, 0
	binary.BigEndian.PutUint16(t[16:], ^ipsum(t, addsum(s.pseudo, uint16(len(t)))))
	s.off += n
	s.idx++
	if last {
		s.pkt = nil
	}
	return size, nil
}

// tcpSeg is what the coalescer needs to know of one TCP segment.
type tcpSeg struct {
	v6      bool
	iph     int // IP header length
	hlen    int // IP + TCP header length
	seq     uint32
	flags   uint8
	payload int
}

// parseSeg reports whether p is a TCP segment that may take part in a super-packet at all:
// IPv4 without options or fragmentation, or IPv6 without extension headers; lengths that
// agree with the buffer; data to carry; no CE mark (each one must reach the receiver's
// count); none of SYN, RST, URG, FIN (rare, and each has meaning of its own); ACK set.
func parseSeg(p []byte, s *tcpSeg) bool {
	switch {
	case len(p) >= 20 && p[0] == 0x45:
		if p[9] != protoTCP || int(binary.BigEndian.Uint16(p[2:])) != len(p) ||
			binary.BigEndian.Uint16(p[6:])&0x3fff != 0 || p[1]&3 == 3 {
			return false
		}
		s.v6, s.iph = false, 20
	case len(p) >= 40 && p[0]>>4 == 6:
		if p[6] != protoTCP || int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) || (p[1]>>4)&3 == 3 {
			return false
		}
		s.v6, s.iph = true, 40
	default:
		return false
	}
	if len(p) < s.iph+20 {
		return false
	}
	thl := int(p[s.iph+12]>>4) * 4
	if thl < 20 || len(p) <= s.iph+thl {
		return false
	}
	s.flags = p[s.iph+13]
	if s.flags&(tcpSYN|tcpRST|tcpURG|tcpFIN) != 0 || s.flags&tcpACK == 0 {
		return false
	}
	s.hlen = s.iph + thl
	s.seq = binary.BigEndian.Uint32(p[s.iph+4:])
	s.payload = len(p) - s.hlen
	return true
}

// tcpChecksumOK verifies the IPv4 header and TCP checksums of a parsed segment. A
// super-packet is handed to the kernel with its checksum to be computed (CHECKSUM_PARTIAL),
// which the kernel takes as verified; so a segment is only joined if it would have passed
// the kernel's own check. Packets that fail are written alone and the kernel drops them.
//
// A coalescer of authenticated writes skips this (about 6 % of a receiving daemon's CPU):
// the checksum guards against corruption on the way, and the way was covered by the
// tunnel's AEAD, which no corrupted packet passes. A bad checksum could only come from the
// authenticated peer itself, which could as well have sent the same bytes with a good one,
// so accepting it grants the peer nothing; the firewall has judged the headers already.
// Linux's own WireGuard marks decrypted packets checksum-verified for the same reason.
func tcpChecksumOK(p []byte, s *tcpSeg) bool {
	if !s.v6 && ipsum(p[:20], 0) != 0xffff {
		return false
	}
	return ipsum(p[s.iph:], addsum(pseudoSum(p, s.v6, protoTCP), uint16(len(p)-s.iph))) == 0xffff
}

// sameFlow reports whether q may follow p (the group's first segment) in a super-packet, as
// far as headers go: every field that a re-segmenting kernel copies from the first header
// must be equal, except what it rewrites (lengths, IPv4 ID, sequence, checksums, PSH/CWR).
func sameFlow(p []byte, ps *tcpSeg, q []byte, qs *tcpSeg) bool {
	if ps.v6 != qs.v6 || ps.hlen != qs.hlen {
		return false
	}
	if ps.v6 {
		// version, traffic class, flow label; hop limit; addresses
		if [4]byte(p[0:4]) != [4]byte(q[0:4]) || p[7] != q[7] || [32]byte(p[8:40]) != [32]byte(q[8:40]) {
			return false
		}
	} else {
		// TOS, DF (and the reserved bit), TTL, addresses
		if p[1] != q[1] || p[6]&0xc0 != q[6]&0xc0 || p[8] != q[8] || [8]byte(p[12:20]) != [8]byte(q[12:20]) {
			return false
		}
	}
	pt, qt := p[ps.iph:ps.hlen], q[qs.iph:qs.hlen]
	// ports, ack, data offset, window and urgent pointer equal; flags equal except PSH, and
	// CWR only on the first; options byte for byte (timestamps included: segments of one
	// send share them).
	if [4]byte(pt[0:4]) != [4]byte(qt[0:4]) || [5]byte(pt[8:13]) != [5]byte(qt[8:13]) ||
		[2]byte(pt[14:16]) != [2]byte(qt[14:16]) || [2]byte(pt[18:20]) != [2]byte(qt[18:20]) ||
		string(pt[20:]) != string(qt[20:]) {
		return false
	}
	return qs.flags&tcpCWR == 0 && (ps.flags&^(tcpPSH|tcpCWR)) == qs.flags&^tcpPSH
}

// coalescer joins runs of consecutive segments of one TCP flow, as written to the device,
// into one super-packet. It owns the header of the super-packet; payloads stay where the
// caller keeps them, so a write is a writev of head and payloads.
type coalescer struct {
	head     [vnetHdrLen + maxHeaders]byte
	headLen  int
	payloads [][]byte // the payload of each joined segment, in order
	first    tcpSeg
	// authenticated: every packet written was authenticated by the writer (the overlay's
	// AEAD), so checksums are not verified before joining (Options.AuthenticatedWrites).
	authenticated bool
}

func newCoalescer() *coalescer {
	return &coalescer{payloads: make([][]byte, 0, maxCoalesce)}
}

// group looks at the run that starts at pkts[0] and returns how many packets it covers.
// For k > 1, header() and payloads make up one super-packet to write with its virtio-net header;
// for k == 1, pkts[0] goes out alone (behind a zero virtio-net header).
func (c *coalescer) group(pkts [][]byte) int {
	c.payloads = c.payloads[:0]
	p := pkts[0]
	f := &c.first
	if len(pkts) < 2 || !parseSeg(p, f) {
		return 1
	}
	total := len(p) // bytes of the IP super-packet
	prevSeq, prevLen := f.seq, f.payload
	prevID := uint16(0)
	if !f.v6 {
		prevID = binary.BigEndian.Uint16(p[4:])
	}
	k := 1
	var s tcpSeg
	// A segment shorter than the first, or one with PSH, ends the run.
	for open := f.flags&tcpPSH == 0; open && k < len(pkts) && k < maxCoalesce; k++ {
		q := pkts[k]
		if !parseSeg(q, &s) || !sameFlow(p, f, q, &s) || s.seq != prevSeq+uint32(prevLen) ||
			s.payload > f.payload || total+s.payload > maxSuperPacket {
			break
		}
		if !f.v6 {
			id := binary.BigEndian.Uint16(q[4:])
			// Without DF the IDs must run on, as re-segmenting would number them; with DF
			// they mean nothing (RFC 6864) and the kernel may send them equal.
			if id != prevID+1 && (p[6]&0x40 == 0 || id != prevID) {
				break
			}
			prevID = id
		}
		if !c.authenticated && (!tcpChecksumOK(q, &s) || (k == 1 && !tcpChecksumOK(p, f))) {
			break
		}
		c.payloads = append(c.payloads, q[s.hlen:])
		total += s.payload
		prevSeq, prevLen = s.seq, s.payload
		open = s.payload == f.payload && s.flags&tcpPSH == 0
		if s.flags&tcpPSH != 0 {
			c.first.flags |= tcpPSH
		}
	}
	if k == 1 {
		c.payloads = c.payloads[:0]
		return 1
	}
	c.build(p, total)
	return k
}

// build writes the super-packet's virtio-net header and IP/TCP header into head, and puts
// the first segment's payload in front of the others.
func (c *coalescer) build(p []byte, total int) {
	f := &c.first
	h := vnetHdr{
		flags:      vnetFlagNeedsCsum,
		gsoType:    vnetGSOTCPv4,
		hdrLen:     uint16(f.hlen),
		gsoSize:    uint16(f.payload),
		csumStart:  uint16(f.iph),
		csumOffset: 16,
	}
	if f.v6 {
		h.gsoType = vnetGSOTCPv6
	}
	h.encode(c.head[:])
	ip := c.head[vnetHdrLen : vnetHdrLen+f.hlen]
	copy(ip, p[:f.hlen])
	if f.v6 {
		binary.BigEndian.PutUint16(ip[4:], uint16(total-40))
	} else {
		binary.BigEndian.PutUint16(ip[2:], uint16(total))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], ^ipsum(ip[:20], 0))
	}
	t := ip[f.iph:]
	t[13] = f.flags
	// NEEDS_CSUM wants the pseudo-header sum, not complemented, in the checksum field.
	binary.BigEndian.PutUint16(t[16:], addsum(pseudoSum(ip, f.v6, protoTCP), uint16(total-f.iph)))
	c.headLen = vnetHdrLen + f.hlen
	// Shift the others up by one to put the first payload in front: k is at most 64.
	c.payloads = append(c.payloads, nil)
	copy(c.payloads[1:], c.payloads)
	c.payloads[0] = p[f.hlen:]
}

func (c *coalescer) header() []byte { return c.head[:c.headLen] }
