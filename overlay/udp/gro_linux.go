package udp

import (
	"encoding/binary"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// With UDP_GRO the kernel may hand over several datagrams from one sender as one buffer of
// up to 64 KiB, so reads go to buffers of that size owned by the socket and are split into
// the caller's messages. Few are kept, to bound memory: 8 × 64 KiB per socket (under load
// they are all touched, so they count in peak RSS; 8 entries are still some 400 datagrams
// per recvmmsg).
const (
	maxGROEntries = 8
	groBufSize    = 1 << 16
)

var groCmsgSpace = unix.CmsgSpace(4)

// groReader is the reader's state between calls: datagrams received but not yet returned.
type groReader struct {
	bufs  []byte // maxGROEntries × groBufSize
	cmsgs []byte
	seg   []int // segment size of each entry; 0 for a plain datagram
	got   int   // entries filled by the last recvmmsg
	next  int   // entry to take the next segment from
	off   int   // offset of that segment in its entry
	limit int   // most messages per ReadBatch (Options.Batch)

	coalesced int // entries that held more than one datagram, for tests
}

// enableGRO turns on UDP_GRO and reports whether the kernel took it (Linux 5.0+).
func enableGRO(rc syscall.RawConn) bool {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); cerr != nil {
		return false
	}
	return err == nil
}

// setupGRO points the reader's vectors at socket-owned buffers.
func (s *Socket) setupGRO(batch int) {
	n := min(batch, maxGROEntries)
	g := &groReader{
		bufs:  make([]byte, n*groBufSize),
		cmsgs: make([]byte, n*groCmsgSpace),
		seg:   make([]int, n),
		limit: batch,
	}
	s.rd = newBatch(n)
	for i := range n {
		setIov(&s.rd.iovs[i], g.bufs[i*groBufSize:(i+1)*groBufSize])
	}
	s.gro = g
}

func (s *Socket) readGRO(msgs []Message) (int, error) {
	g, b := s.gro, &s.rd
	if len(msgs) == 0 {
		return 0, nil
	}
	if s.closed.Load() {
		return 0, ErrClosed
	}
	if g.next >= g.got {
		b.n = len(b.hdrs)
		for i := range b.n {
			h := &b.hdrs[i]
			h.Hdr.Namelen = unix.SizeofSockaddrInet6
			h.Hdr.Flags = 0
			h.Hdr.Control = &g.cmsgs[i*groCmsgSpace]
			h.Hdr.SetControllen(groCmsgSpace)
			h.Len = 0
		}
		if err := s.rc.Read(b.fn); err != nil {
			return 0, s.mapErr("read", err)
		}
		if b.errno != 0 {
			return 0, s.mapErr("recvmmsg", b.errno)
		}
		for i := range b.done {
			g.seg[i] = groSegment(g.cmsgs[i*groCmsgSpace:(i+1)*groCmsgSpace], int(b.hdrs[i].Hdr.Controllen))
			if g.seg[i] > 0 && g.seg[i] < int(b.hdrs[i].Len) {
				g.coalesced++
			}
		}
		g.got, g.next, g.off = b.done, 0, 0
	}
	k := 0
	for k < len(msgs) && k < g.limit && g.next < g.got {
		j := g.next
		total := int(b.hdrs[j].Len)
		seg := g.seg[j]
		if seg <= 0 || seg > total {
			seg = total
		}
		end := min(g.off+seg, total)
		// A view, not a copy: the entry is not read into again before the next ReadBatch.
		n := min(end-g.off, len(msgs[k].Buf))
		start := j*groBufSize + g.off
		msgs[k].Data = g.bufs[start : start+n : start+n]
		msgs[k].N = n
		msgs[k].Addr = fromSockaddr(&b.names[j])
		k++
		g.off = end
		if g.off >= total {
			g.next++
			g.off = 0
		}
	}
	return k, nil
}

// groSegment returns the UDP_GRO segment size in a control buffer of length l, or 0.
func groSegment(c []byte, l int) int {
	c = c[:min(l, len(c))]
	for len(c) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		hl := int(h.Len)
		if hl < unix.SizeofCmsghdr || hl > len(c) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && hl >= unix.CmsgLen(2) {
			data := c[unix.CmsgLen(0):hl]
			if len(data) >= 4 {
				return int(binary.NativeEndian.Uint32(data))
			}
			return int(binary.NativeEndian.Uint16(data))
		}
		c = c[min(unix.CmsgSpace(hl-unix.CmsgLen(0)), len(c)):]
	}
	return 0
}
