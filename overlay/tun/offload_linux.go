package tun

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TUNSETOFFLOAD flags (include/uapi/linux/if_tun.h); x/sys/unix does not name them.
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

// openOffload opens one queue of a TUN device with a virtio-net header on every packet and
// asks the kernel for TCP segmentation and checksum offload. water cannot do this (it sets
// neither IFF_VNET_HDR nor TUNSETOFFLOAD), hence our own open. The descriptor is
// non-blocking so that the runtime poller serves it and Close unblocks a Read.
func openOffload(name string, multi bool) (*os.File, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	flags := unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if multi {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(uint16(flags))
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("TUNSETIFF: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("%w: TUNSETVNETHDRSZ: %w", ErrNoOffload, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4|tunFTSO6); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("%w: TUNSETOFFLOAD: %w", ErrNoOffload, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), ifr.Name(), nil
}

// offloadQueue is the state of one queue opened with offloads: a 64 KiB read buffer and
// the super-packet being split on the read side; the coalescer and iovecs on the write side.
type offloadQueue struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool

	rbuf []byte
	sp   splitter

	wmu  sync.Mutex // the overlay writes from its receive path and, for rejects, its send path
	co   *coalescer
	iovs []unix.Iovec
	niov int
	werr syscall.Errno
	wfn  func(fd uintptr) bool

	stats offloadCounters
}

type offloadCounters struct {
	split, segments, coalesced, joined, dropped, fallbacks atomic.Uint64
}

var zeroVnetHdr [vnetHdrLen]byte

func newOffloadQueue(f *os.File, authenticated bool) (*offloadQueue, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	o := &offloadQueue{
		f:    f,
		rc:   rc,
		rbuf: make([]byte, vnetHdrLen+maxSuperPacket),
		co:   newCoalescer(),
		iovs: make([]unix.Iovec, 1+maxCoalesce),
	}
	o.co.authenticated = authenticated
	o.wfn = o.writev
	return o, nil
}

// read hands out packets, splitting super-packets. It makes at most one read system call,
// and none while a super-packet is still being handed out, so it never blocks with packets
// in hand.
func (o *offloadQueue) read(bufs [][]byte, sizes []int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, nil
	}
	k := 0
	for k == 0 {
		if !o.sp.pending() {
			n, err := o.f.Read(o.rbuf)
			if err != nil {
				return 0, err
			}
			if err := o.sp.load(o.rbuf[:n]); err != nil {
				o.stats.dropped.Add(1)
				continue
			}
			if o.sp.gso != 0 {
				o.stats.split.Add(1)
			}
		}
		gso := o.sp.gso != 0
		for k < len(bufs) && k < len(sizes) && o.sp.pending() {
			n, err := o.sp.next(bufs[k])
			if err != nil {
				o.stats.dropped.Add(1)
				break
			}
			sizes[k] = n
			k++
		}
		if gso {
			o.stats.segments.Add(uint64(k))
		}
	}
	return k, nil
}

// write sends bufs, joining runs of segments of one TCP flow into super-packets.
func (o *offloadQueue) write(bufs [][]byte) (int, error) {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	for i := 0; i < len(bufs); {
		k := o.co.group(bufs[i:])
		if k > 1 {
			setIov(&o.iovs[0], o.co.header())
			for j, p := range o.co.payloads {
				setIov(&o.iovs[1+j], p)
			}
			o.niov = 1 + len(o.co.payloads)
			err := o.send()
			if err == nil {
				o.stats.coalesced.Add(1)
				o.stats.joined.Add(uint64(k))
				i += k
				continue
			}
			if o.closed.Load() {
				return i, ErrClosed
			}
			// The kernel refused the super-packet (it should not): the segments go one by
			// one, as they would without offloads.
			o.stats.fallbacks.Add(1)
			k = 1
		}
		if err := o.writeOne(bufs[i]); err != nil {
			return i, err
		}
		i += k
	}
	return len(bufs), nil
}

func (o *offloadQueue) writeOne(p []byte) error {
	setIov(&o.iovs[0], zeroVnetHdr[:])
	o.niov = 1
	if len(p) > 0 {
		setIov(&o.iovs[1], p)
		o.niov = 2
	}
	if err := o.send(); err != nil {
		if o.closed.Load() {
			return ErrClosed
		}
		return err
	}
	return nil
}

func (o *offloadQueue) send() error {
	o.werr = 0
	if err := o.rc.Write(o.wfn); err != nil {
		return err
	}
	if o.werr != 0 {
		return o.werr
	}
	return nil
}

func (o *offloadQueue) writev(fd uintptr) bool {
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&o.iovs[0])), uintptr(o.niov))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		o.werr = e
		return true
	}
}

func setIov(v *unix.Iovec, b []byte) {
	v.Base = &b[0]
	v.SetLen(len(b))
}

func (o *offloadQueue) close() error {
	o.closed.Store(true)
	return o.f.Close()
}

func (s *OffloadStats) add(c *offloadCounters) {
	s.Split += c.split.Load()
	s.Segments += c.segments.Load()
	s.Coalesced += c.coalesced.Load()
	s.Joined += c.joined.Load()
	s.Dropped += c.dropped.Load()
	s.Fallbacks += c.fallbacks.Load()
}
