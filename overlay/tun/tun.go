// Package tun is the overlay's view of a TUN device: something that yields and accepts whole
// IP packets. The Linux device lives beside an in-memory one (tuntest) so that whole meshes
// run in one test process without root.
package tun

import "errors"

// ErrClosed is returned by Read and Write after Close.
var ErrClosed = errors.New("tun: device closed")

// ErrNoOffload is returned by Open with Options.Offload when the kernel refuses the virtio-net
// header or TCP offloads; the device is not left behind, and opening it without offloads
// is the way on.
var ErrNoOffload = errors.New("tun: the kernel does not support TUN offloads")

// Device moves IP packets between the kernel (or a test) and the overlay.
//
// Read fills bufs[i] with packets and sizes[i] with their lengths, returning how many it
// filled (at least one unless err != nil). It blocks until a packet is available. Write sends
// each of bufs as one packet. Implementations must be safe for one reader and one writer at
// the same time.
type Device interface {
	Read(bufs [][]byte, sizes []int) (int, error)
	Write(bufs [][]byte) (int, error)
	MTU() int
	Name() string
	Close() error
}

// MultiQueue is implemented by devices opened with several queues (Options.Queues > 1 on
// Linux). Each queue is a Device of its own for one reader and one writer goroutine; the
// kernel spreads flows across them. Closing the device closes every queue.
type MultiQueue interface {
	Device
	Queues() []Device
}
