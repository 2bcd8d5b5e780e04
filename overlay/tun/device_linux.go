package tun

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
)

// Linux is a TUN device (IFF_TUN, no packet info). Without offloads it is opened through
// water; with them (Options.Offload) by openOffload, because water cannot ask for the
// virtio-net header. As a Device it uses its first queue; Queues returns all of them.
type Linux struct {
	name    string
	mtu     int
	queues  []*Queue
	prio    *Queue // Options.PriorityQueue's queue, nil without one
	prioErr error  // why a priority queue asked for is missing
	once    sync.Once
}

// Queue is one file descriptor of a multi-queue device. The kernel spreads packets across
// queues by flow; each Queue is safe for one reader and one writer.
type Queue struct {
	dev *Linux
	rw  io.ReadWriteCloser
	off *offloadQueue // nil without offloads
}

var (
	_ MultiQueue = (*Linux)(nil)
	_ Router     = (*Linux)(nil)
	_ Device     = (*Queue)(nil)
)

// Open creates the device, sets MTU, transmit queue length and address, brings the link up
// and adds the routes. Closing it removes the device and with it the address and routes.
// It needs CAP_NET_ADMIN in the network namespace of the calling thread. The Device is a
// *Linux; its Queues method gives the extra queues of a multi-queue device.
func Open(opts Options) (Device, error) {
	d, err := OpenLinux(opts)
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return d, nil
}

// OpenLinux is Open returning the concrete type.
func OpenLinux(opts Options) (*Linux, error) {
	if !opts.Addr.IsValid() {
		return nil, errors.New("tun: Options.Addr is required")
	}
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	queues := max(opts.Queues, 1)
	prio := opts.PriorityQueue && queues == 1
	if prio {
		queues++
	}
	d := &Linux{name: opts.Name, mtu: opts.MTU}
	for range queues {
		if opts.Offload {
			f, name, err := openOffload(d.name, queues > 1)
			if err != nil {
				d.Close()
				return nil, fmt.Errorf("tun: open %q: %w", d.name, err)
			}
			off, err := newOffloadQueue(f, opts.AuthenticatedWrites)
			if err != nil {
				f.Close()
				d.Close()
				return nil, fmt.Errorf("tun: open %q: %w", d.name, err)
			}
			d.name = name
			d.queues = append(d.queues, &Queue{dev: d, rw: f, off: off})
			continue
		}
		ifce, err := water.New(water.Config{
			DeviceType: water.TUN,
			PlatformSpecificParams: water.PlatformSpecificParams{
				Name:       d.name,
				MultiQueue: queues > 1,
			},
		})
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("tun: open %q: %w", d.name, err)
		}
		d.name = ifce.Name() // later queues attach to the same device
		d.queues = append(d.queues, &Queue{dev: d, rw: ifce.ReadWriteCloser})
	}
	if prio {
		d.prio = d.queues[1]
		d.queues = d.queues[:1]
		if d.prioErr = d.steer(); d.prioErr != nil {
			// Without the program the kernel would spread flows over both queues; closing
			// the second leaves a device that behaves as if opened with one.
			_ = d.prio.close()
			d.prio = nil
		}
	}
	if err := configure(d.name, opts); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun: configure %s: %w", d.name, err)
	}
	return d, nil
}

func (d *Linux) steer() error {
	f, err := fileOf(d.queues[0])
	if err != nil {
		return err
	}
	return steer(f)
}

// PriorityQueueErr says why the priority queue Options asked for is missing (nil if it
// was not asked for or is there).
func (d *Linux) PriorityQueueErr() error { return d.prioErr }

// PriorityQueue returns the queue small packets are steered to (Options.PriorityQueue), or
// nil. It is not among Queues; Close closes it with the others.
func (d *Linux) PriorityQueue() Device {
	if d.prio == nil {
		return nil // not a typed nil inside the interface
	}
	return d.prio
}

func configure(name string, opts Options) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ioctl socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return fmt.Errorf("interface index: %w", err)
	}
	index := ifr.Uint32()

	ifr.SetUint32(uint32(opts.MTU))
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("set MTU %d: %w", opts.MTU, err)
	}
	if opts.TxQueueLen > 0 {
		ifr.SetUint32(uint32(opts.TxQueueLen))
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFTXQLEN, ifr); err != nil {
			return fmt.Errorf("set tx queue length %d: %w", opts.TxQueueLen, err)
		}
	}

	nl, err := openNetlink()
	if err != nil {
		return err
	}
	defer nl.close()
	if err := nl.addAddr(index, opts.Addr); err != nil {
		return err
	}
	for _, a := range opts.Addrs {
		if a != opts.Addr {
			if err := nl.addAddr(index, a); err != nil {
				return err
			}
		}
	}

	// The link goes up before the routes: the kernel refuses routes via a down link.
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("link up: %w", err)
	}
	for _, r := range opts.Routes {
		if err := nl.addRoute(index, r); err != nil {
			return err
		}
	}
	return nil
}

// AddRoute routes r.Dst into the device (with r's MTU and metric).
func (d *Linux) AddRoute(r Route) error { return d.changeRoute(unix.RTM_NEWROUTE, r) }

// DeleteRoute removes a route AddRoute made.
func (d *Linux) DeleteRoute(r Route) error { return d.changeRoute(unix.RTM_DELROUTE, r) }

func (d *Linux) changeRoute(typ uint16, r Route) error {
	ifi, err := net.InterfaceByName(d.name)
	if err != nil {
		return fmt.Errorf("tun: %s: %w", d.name, err)
	}
	nl, err := openNetlink()
	if err != nil {
		return err
	}
	defer nl.close()
	if err := nl.route(typ, uint32(ifi.Index), r); err != nil {
		return fmt.Errorf("tun: %s: %w", d.name, err)
	}
	return nil
}

// Queues returns one Device per queue; the first is the queue the Linux device itself uses.
func (d *Linux) Queues() []Device {
	qs := make([]Device, len(d.queues))
	for i, q := range d.queues {
		qs[i] = q
	}
	return qs
}

// Offload reports whether the device was opened with offloads.
func (d *Linux) Offload() bool { return len(d.queues) > 0 && d.queues[0].off != nil }

// OffloadStats sums the offload counters of all queues.
func (d *Linux) OffloadStats() OffloadStats {
	var s OffloadStats
	for _, q := range d.queues {
		if q.off != nil {
			s.add(&q.off.stats)
		}
	}
	return s
}

// Read reads from the first queue.
func (d *Linux) Read(bufs [][]byte, sizes []int) (int, error) { return d.queues[0].Read(bufs, sizes) }

// Write writes each of bufs as one packet to the first queue.
func (d *Linux) Write(bufs [][]byte) (int, error) { return d.queues[0].Write(bufs) }

// MTU returns the MTU the device was configured with.
func (d *Linux) MTU() int { return d.mtu }

// Name returns the interface name.
func (d *Linux) Name() string { return d.name }

// Close closes every queue, which removes the device; blocked Reads return ErrClosed.
func (d *Linux) Close() error {
	var errs []error
	d.once.Do(func() {
		if d.prio != nil {
			if err := d.prio.close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, err)
			}
		}
		for _, q := range d.queues {
			if err := q.close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, err)
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tun: close %s: %w", d.name, err)
	}
	return nil
}

// Read reads packets: without offloads one into bufs[0] (a TUN read returns exactly one
// packet); with them as many as one read of the device yields, split into MTU-sized
// packets, keeping those that did not fit for the next Read.
func (q *Queue) Read(bufs [][]byte, sizes []int) (int, error) {
	if q.off != nil {
		n, err := q.off.read(bufs, sizes)
		if err != nil {
			return 0, q.mapErr("read", err)
		}
		return n, nil
	}
	if len(bufs) == 0 || len(sizes) == 0 {
		return 0, nil
	}
	n, err := q.rw.Read(bufs[0])
	if err != nil {
		return 0, q.mapErr("read", err)
	}
	sizes[0] = n
	return 1, nil
}

// Write writes each of bufs as one packet; with offloads, runs of segments of one TCP flow
// go to the kernel as one super-packet.
func (q *Queue) Write(bufs [][]byte) (int, error) {
	if q.off != nil {
		n, err := q.off.write(bufs)
		if err != nil {
			return n, q.mapErr("write", err)
		}
		return n, nil
	}
	for i, b := range bufs {
		if _, err := q.rw.Write(b); err != nil {
			return i, q.mapErr("write", err)
		}
	}
	return len(bufs), nil
}

func (q *Queue) mapErr(op string, err error) error {
	if errors.Is(err, os.ErrClosed) || errors.Is(err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("tun: %s %s: %w", op, q.dev.name, err)
}

// MTU returns the device's MTU.
func (q *Queue) MTU() int { return q.dev.mtu }

// Name returns the device's name.
func (q *Queue) Name() string { return q.dev.name }

// Close closes this queue only; the device goes away when its last queue is closed.
func (q *Queue) Close() error {
	if err := q.close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("tun: close queue of %s: %w", q.dev.name, err)
	}
	return nil
}

func (q *Queue) close() error {
	if q.off != nil {
		return q.off.close()
	}
	return q.rw.Close()
}
