package udp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket is the Linux Conn: an unconnected UDP socket read and written in batches with
// recvmmsg/sendmmsg through the runtime poller, so Close unblocks a blocked ReadBatch.
// After setup it allocates nothing per datagram.
type Socket struct {
	pc     *net.UDPConn
	rc     syscall.RawConn
	local  netip.AddrPort
	v6     bool // AF_INET6 socket: IPv4 peers are written as v4-mapped addresses
	closed atomic.Bool
	// gso: the kernel takes UDP_SEGMENT, so runs of equal-sized datagrams to one address go
	// down as one send. Only the writer reads or clears it.
	gso bool
	// gro is set when the kernel coalesces received datagrams (UDP_GRO); reads then go
	// through its buffers.
	gro *groReader

	rd batch // owned by the one reader
	wr batch // owned by the one writer
}

// batch is the mmsghdr vector of one direction, built once. fn is the method value handed
// to RawConn.Read/Write, made once so that calls do not allocate a closure.
type batch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // big enough for either family
	n     int                     // entries of hdrs used by this call
	off   int                     // first entry of hdrs not yet sent
	done  int                     // result of the system call
	errno syscall.Errno
	fn    func(fd uintptr) bool

	// Writer only: with GSO one entry of hdrs carries several datagrams.
	cmsgs        []byte // one UDP_SEGMENT control message per entry
	first        []int  // first[h] is the index of the first datagram in hdrs[h]
	noGSO        bool   // the next call sends without GSO, after an error on a GSO send
	gsoFallbacks int    // GSO sends refused and resent singly, for tests
}

func newBatch(size int) batch {
	b := batch{
		hdrs:  make([]unix.Mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet6, size),
	}
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Iov = &b.iovs[i]
		b.hdrs[i].Hdr.Iovlen = 1
		b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
	return b
}

// Listen opens a UDP socket on addr. An unspecified address without a family (the zero
// Addr, as in ":4242") or "[::]" listens dual-stack; "0.0.0.0" listens IPv4 only. Source
// addresses are reported unmapped (::ffff:a.b.c.d becomes a.b.c.d).
func Listen(addr netip.AddrPort, opts Options) (Conn, error) {
	s, err := ListenSocket(addr, opts)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return s, nil
}

// ListenSocket is Listen returning the concrete type, for callers that want BufferSizes.
func ListenSocket(addr netip.AddrPort, opts Options) (*Socket, error) {
	size := opts.Batch
	if size <= 0 {
		size = DefaultBatch
	}
	network, address := "udp", net.JoinHostPort("", strconv.Itoa(int(addr.Port())))
	if ip := addr.Addr().Unmap(); ip.IsValid() {
		address = netip.AddrPortFrom(ip, addr.Port()).String()
		if ip.Is4() {
			network = "udp4"
		} else if !ip.IsUnspecified() {
			network = "udp6"
		}
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = setOptions(int(fd), opts) }); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, address)
	if err != nil {
		return nil, fmt.Errorf("udp: listen %s: %w", address, err)
	}
	s := &Socket{pc: pc.(*net.UDPConn)}
	if s.rc, err = s.pc.SyscallConn(); err != nil {
		s.pc.Close()
		return nil, fmt.Errorf("udp: listen %s: %w", address, err)
	}
	var sa unix.Sockaddr
	var serr error
	if err := s.rc.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil || serr != nil {
		s.pc.Close()
		return nil, fmt.Errorf("udp: listen %s: getsockname: %w", address, errors.Join(err, serr))
	}
	_, s.v6 = sa.(*unix.SockaddrInet6)
	la := s.pc.LocalAddr().(*net.UDPAddr).AddrPort()
	s.local = netip.AddrPortFrom(la.Addr().Unmap(), la.Port())
	s.rd, s.wr = newBatch(size), newBatch(size)
	s.wr.cmsgs = make([]byte, size*gsoCmsgSpace)
	s.wr.first = make([]int, size+1)
	if !opts.DisableGSO {
		s.gso = probeGSO(s.rc)
	}
	if !opts.DisableGRO && enableGRO(s.rc) {
		s.setupGRO(size)
	}
	s.rd.fn, s.wr.fn = s.recv, s.send
	return s, nil
}

func setOptions(fd int, opts Options) error {
	if opts.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fmt.Errorf("SO_REUSEPORT: %w", err)
		}
	}
	if opts.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(opts.Mark)); err != nil {
			return fmt.Errorf("SO_MARK %d (listen.so_mark; needs CAP_NET_ADMIN): %w", opts.Mark, err)
		}
	}
	if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, opts.ReadBuffer); err != nil {
		return fmt.Errorf("read buffer %d: %w", opts.ReadBuffer, err)
	}
	if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, opts.WriteBuffer); err != nil {
		return fmt.Errorf("write buffer %d: %w", opts.WriteBuffer, err)
	}
	return nil
}

// setBuffer tries the forcing option (needs CAP_NET_ADMIN), then the capped one.
func setBuffer(fd, force, plain, size int) error {
	if size <= 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size); err == nil {
		return nil
	}
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
}

// BufferSizes returns the kernel's receive and send buffer sizes (which count bookkeeping
// too: Linux reports twice the requested size).
func (s *Socket) BufferSizes() (read, write int, err error) {
	var rerr, werr error
	cerr := s.rc.Control(func(fd uintptr) {
		read, rerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		write, werr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if err := errors.Join(cerr, rerr, werr); err != nil {
		return 0, 0, fmt.Errorf("udp: buffer sizes: %w", err)
	}
	return read, write, nil
}

// Drops returns how many datagrams the kernel dropped for this socket, mostly because the
// receive buffer was full (SK_MEMINFO_DROPS; the per-socket share of UdpRcvbufErrors).
func (s *Socket) Drops() (uint64, error) {
	var info [unix.SK_MEMINFO_VARS]uint32
	var errno syscall.Errno
	err := s.rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(info))
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return 0, fmt.Errorf("udp: drops: %w", err)
	}
	return uint64(info[unix.SK_MEMINFO_DROPS]), nil
}

// LocalAddr returns the bound address, with the port the kernel chose for port 0.
func (s *Socket) LocalAddr() netip.AddrPort { return s.local }

// Close closes the socket and unblocks ReadBatch and WriteBatch with ErrClosed.
func (s *Socket) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.pc.Close(); err != nil {
		return fmt.Errorf("udp: close: %w", err)
	}
	return nil
}

// ReadBatch blocks until at least one datagram arrives, then returns up to min(len(msgs),
// Options.Batch) of them. A datagram longer than its Buf is truncated to len(Buf).
func (s *Socket) ReadBatch(msgs []Message) (int, error) {
	if s.gro != nil {
		return s.readGRO(msgs)
	}
	b := &s.rd
	b.n = min(len(msgs), len(b.hdrs))
	if b.n == 0 {
		return 0, nil
	}
	for i := range b.n {
		setIov(&b.iovs[i], msgs[i].Buf)
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].Hdr.Flags = 0
		b.hdrs[i].Len = 0
	}
	if err := s.rc.Read(b.fn); err != nil {
		return 0, s.mapErr("read", err)
	}
	if b.errno != 0 {
		return 0, s.mapErr("recvmmsg", b.errno)
	}
	for i := range b.done {
		msgs[i].N = min(int(b.hdrs[i].Len), len(msgs[i].Buf))
		msgs[i].Data = msgs[i].Buf[:msgs[i].N]
		msgs[i].Addr = fromSockaddr(&b.names[i])
	}
	return b.done, nil
}

func (s *Socket) recv(fd uintptr) bool {
	b := &s.rd
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(b.n), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait for the poller
		}
		b.done, b.errno = int(n), e
		return true
	}
}

// ErrAddressFamily is returned for an IPv6 destination on an IPv4-only socket (or an
// invalid address).
var ErrAddressFamily = errors.New("address family not supported by this socket")

func (s *Socket) mapErr(op string, err error) error {
	if errors.Is(err, net.ErrClosed) || s.closed.Load() {
		return ErrClosed
	}
	return fmt.Errorf("udp: %s: %w", op, err)
}

func setIov(iov *unix.Iovec, buf []byte) {
	if len(buf) == 0 {
		iov.Base = nil
		iov.SetLen(0)
		return
	}
	iov.Base = &buf[0]
	iov.SetLen(len(buf))
}

// toSockaddr writes a into sa in the socket's family and returns its length.
func (s *Socket) toSockaddr(sa *unix.RawSockaddrInet6, a netip.AddrPort) (uint32, bool) {
	ip := a.Addr()
	if !ip.IsValid() {
		return 0, false
	}
	port := a.Port()
	if s.v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
		putPort(&sa.Port, port)
		return unix.SizeofSockaddrInet6, true
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return 0, false
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.As4()}
	putPort(&sa4.Port, port)
	return unix.SizeofSockaddrInet4, true
}

func fromSockaddr(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port))
	case unix.AF_INET6:
		// The scope id of a link-local source is dropped: naming the zone would allocate.
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), getPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// Ports in sockaddrs are in network byte order.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}
