package udp

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GSO limits: the kernel takes at most 64 segments per send on older kernels
// (UDP_MAX_SEGMENTS), and the whole run must fit one maximum-size IPv6 UDP datagram.
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65535 - 40 - 8
)

var gsoCmsgSpace = unix.CmsgSpace(2)

// probeGSO reports whether the socket accepts UDP_SEGMENT.
func probeGSO(rc syscall.RawConn) bool {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		_, err = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	}); cerr != nil {
		return false
	}
	return err == nil
}

// WriteBatch sends msgs in order, Options.Batch per system call. It returns how many were
// sent; on error msgs[n] is the datagram that failed and the ones after it were not tried.
// With GSO, consecutive datagrams to the same address whose sizes are equal (the last of a
// run may be shorter) leave in one send; the wire sees the same separate datagrams.
func (s *Socket) WriteBatch(msgs []Message) (int, error) {
	sent := 0
	for sent < len(msgs) {
		n, err := s.writeSome(msgs[sent:])
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// writeSome sends up to one batch of datagrams; it may return fewer than it could with a
// nil error (after a GSO failure), and WriteBatch calls again.
func (s *Socket) writeSome(msgs []Message) (int, error) {
	b := &s.wr
	gso := s.gso && !b.noGSO
	b.noGSO = false
	limit := min(len(msgs), len(b.iovs))
	m, h := 0, 0
	for m < limit {
		namelen, ok := s.toSockaddr(&b.names[h], msgs[m].Addr)
		if !ok {
			if m == 0 {
				return 0, fmt.Errorf("udp: send to %v from %v: %w", msgs[0].Addr, s.local, ErrAddressFamily)
			}
			break // send what precedes it; the next call reports it
		}
		hdr := &b.hdrs[h].Hdr
		hdr.Namelen = namelen
		hdr.Iov = &b.iovs[m]
		seg := msgs[m].N
		setIov(&b.iovs[m], msgs[m].Buf[:seg])
		k, total := 1, seg
		for gso && seg > 0 && m+k < limit && k < maxGSOSegments {
			next := &msgs[m+k]
			if next.Addr != msgs[m].Addr || next.N == 0 || next.N > seg || total+next.N > maxGSOBytes {
				break
			}
			setIov(&b.iovs[m+k], next.Buf[:next.N])
			total += next.N
			k++
			if next.N < seg {
				break // only the last segment may be short
			}
		}
		hdr.SetIovlen(k)
		if k > 1 {
			c := b.cmsgs[h*gsoCmsgSpace : (h+1)*gsoCmsgSpace]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(seg))
			hdr.Control = &c[0]
			hdr.SetControllen(gsoCmsgSpace)
		} else {
			hdr.Control = nil
			hdr.SetControllen(0)
		}
		b.first[h] = m
		m += k
		h++
	}
	b.first[h] = m
	b.n = h
	// sendmmsg may stop early (a full buffer, or an error on a later entry, which it reports
	// only on the next call), so keep going from where it stopped.
	for b.off = 0; b.off < b.n; b.off += b.done {
		if err := s.rc.Write(b.fn); err != nil {
			return b.first[b.off], s.mapErr("write", err)
		}
		if b.errno == 0 {
			continue
		}
		if b.hdrs[b.off].Hdr.Iovlen > 1 {
			// The kernel or the route refused the segmented send (EIO: no checksum offload
			// on the device, for good; EINVAL: a segment above the path MTU). Resend the
			// rest one datagram per entry.
			if b.errno == unix.EIO {
				s.gso = false
			}
			b.noGSO = true
			b.gsoFallbacks++
			return b.first[b.off], nil
		}
		return b.first[b.off], fmt.Errorf("udp: send to %v: %w", msgs[b.first[b.off]].Addr, b.errno)
	}
	return m, nil
}

func (s *Socket) send(fd uintptr) bool {
	b := &s.wr
	for {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.off])), uintptr(b.n-b.off), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		b.done, b.errno = int(n), e
		return true
	}
}
