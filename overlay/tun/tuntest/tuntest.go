// Package tuntest is an in-memory tun.Device for tests: the test plays the kernel, injecting
// packets the overlay reads and collecting the packets the overlay delivers. It also builds
// and parses the small IPv4 packets such tests send. It needs no root and no real device.
package tuntest

import (
	"sync"
	"sync/atomic"

	"github.com/meshnode/meshnode/overlay/tun"
)

// DefaultQueueLen bounds both directions of a Device.
const DefaultQueueLen = 1024

// Device implements tun.Device over two bounded queues.
type Device struct {
	name      string
	mtu       int
	in        chan []byte // Inject -> Read
	out       chan []byte // Write -> Delivered
	closed    chan struct{}
	closeOnce sync.Once
	dropped   atomic.Uint64
}

var _ tun.Device = (*Device)(nil)

// NewDevice returns an open device with queues of DefaultQueueLen packets.
func NewDevice(name string, mtu int) *Device {
	return NewDeviceQueue(name, mtu, DefaultQueueLen)
}

// NewDeviceQueue is NewDevice with queues of n packets, for tests of overflow.
func NewDeviceQueue(name string, mtu, n int) *Device {
	n = max(n, 1)
	return &Device{
		name:   name,
		mtu:    mtu,
		in:     make(chan []byte, n),
		out:    make(chan []byte, n),
		closed: make(chan struct{}),
	}
}

// Inject queues a copy of pkt as if the kernel had routed it into the tunnel; Read returns
// it. It blocks while the queue is full and returns false if the device is closed.
func (d *Device) Inject(pkt []byte) bool {
	p := append([]byte(nil), pkt...)
	select {
	case <-d.closed:
		return false
	default:
	}
	select {
	case d.in <- p:
		return true
	case <-d.closed:
		return false
	}
}

// TryInject is Inject without blocking: it returns false when the queue is full or closed.
func (d *Device) TryInject(pkt []byte) bool {
	select {
	case <-d.closed:
		return false
	default:
	}
	select {
	case d.in <- append([]byte(nil), pkt...):
		return true
	default:
		return false
	}
}

// Delivered yields copies of the packets the overlay wrote, as if delivered to the kernel.
// Packets written while it is full are dropped (see Dropped), as a real stack would.
func (d *Device) Delivered() <-chan []byte { return d.out }

// Dropped counts packets Write discarded because Delivered was full.
func (d *Device) Dropped() uint64 { return d.dropped.Load() }

// Read blocks until a packet was injected, then fills as many of bufs as are waiting. A
// packet longer than its buffer is truncated, as a real TUN read would.
func (d *Device) Read(bufs [][]byte, sizes []int) (int, error) {
	n := min(len(bufs), len(sizes))
	if n == 0 {
		return 0, nil
	}
	select {
	case <-d.closed:
		return 0, tun.ErrClosed
	case p := <-d.in:
		sizes[0] = copy(bufs[0], p)
	}
	i := 1
	for ; i < n; i++ {
		select {
		case p := <-d.in:
			sizes[i] = copy(bufs[i], p)
			continue
		default:
		}
		break
	}
	return i, nil
}

// Write delivers a copy of each packet; it never blocks.
func (d *Device) Write(bufs [][]byte) (int, error) {
	for i, b := range bufs {
		select {
		case <-d.closed:
			return i, tun.ErrClosed
		default:
		}
		select {
		case d.out <- append([]byte(nil), b...):
		default:
			d.dropped.Add(1)
		}
	}
	return len(bufs), nil
}

// MTU returns the MTU given to NewDevice.
func (d *Device) MTU() int { return d.mtu }

// Name returns the name given to NewDevice.
func (d *Device) Name() string { return d.name }

// Close unblocks Read with tun.ErrClosed; later Writes fail with it. Delivered stays
// readable so a test can still drain it.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}
