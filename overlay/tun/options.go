package tun

import "net/netip"

// DefaultMTU is Nebula's tun.mtu default.
const DefaultMTU = 1300

// SmallPacketMax is the largest packet (IP header included) the kernel steers to the
// priority queue: pings, TCP ACKs, DNS, key strokes and voice frames fit, bulk segments
// (and every TCP super-packet) do not.
const SmallPacketMax = 256

// Options describe the device to create. Only Addr is required.
type Options struct {
	// Name is the interface name (tun.dev); empty lets the kernel pick tunN.
	Name string
	// MTU defaults to DefaultMTU.
	MTU int
	// Addr is our VPN address with the mask of the VPN network, e.g. 10.42.0.1/16: the
	// kernel routes that network into the device.
	Addr netip.Prefix
	// Addrs are further addresses in the same form: the other networks of our certificates
	// (a v2 certificate may hold several, IPv6 among them).
	Addrs []netip.Prefix
	// Routes are further networks routed into the device (tun.unsafe_routes).
	Routes []netip.Prefix
	// TxQueueLen sets the kernel's queue towards the device (tun.tx_queue); 0 keeps the
	// kernel default.
	TxQueueLen int
	// Queues opens a multi-queue device with that many queues when > 1, so that several
	// goroutines read and write in parallel (one per Queues() entry).
	Queues int
	// Offload opens the device with TCP segmentation and checksum offloads (Linux): the
	// kernel reads and writes TCP in super-packets of up to 64 KiB, which the device splits
	// and joins, so the caller still sees MTU-sized IP packets. Open fails with ErrNoOffload
	// when the kernel cannot.
	Offload bool
	// AuthenticatedWrites says that every packet the caller writes was authenticated
	// end to end before (the overlay writes only what passed the AEAD of a tunnel, and
	// rejects it builds itself). With offloads, segments are then joined into super-packets
	// without verifying their TCP checksums first; see the coalescer.
	AuthenticatedWrites bool
	// PriorityQueue opens one more queue and has the kernel steer every packet of at most
	// SmallPacketMax bytes to it (a BPF steering program; Linux, one data queue only), so
	// that a ping or a key stroke does not wait behind a bulk transfer's super-packets in
	// the device's ring. The device's PriorityQueue method returns it, or nil when the
	// kernel refused the program (then everything uses the one queue, as without it).
	PriorityQueue bool
}

// Route is a network routed into the device with its own MTU and metric (tun.routes,
// tun.unsafe_routes); zero MTU or metric leaves the kernel's default.
type Route struct {
	Dst    netip.Prefix
	MTU    int
	Metric int
}

// Router is a device whose routes can change while it runs (a reload of tun.unsafe_routes).
type Router interface {
	AddRoute(Route) error
	DeleteRoute(Route) error
}
