// Package udptest is an in-memory UDP network for tests: every udp.Conn it hands out has an
// address, and datagrams between them can be lost, duplicated, reordered, delayed,
// partitioned, observed, dropped, tampered with or forged; hosts can sit behind NATs (full
// cone, easy, hard) and move (Rebind). A whole mesh runs in one process without root. It is
// not a model of real network timing.
package udptest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshnode/meshnode/overlay/udp"
)

// DefaultQueueLen is how many datagrams wait for a reader before more are dropped.
const DefaultQueueLen = 1024

// ReorderTimeout bounds how long a held datagram waits for a later one to overtake it.
const ReorderTimeout = 20 * time.Millisecond

// firstEphemeralPort is where Listen starts when asked for port 0, as Linux does.
const firstEphemeralPort = 49152

// ErrNoListener is returned by Inject when nothing listens at the destination.
var ErrNoListener = errors.New("udptest: no listener at destination")

// Direction tells a Tap which way a datagram passes the node it is installed on.
type Direction int

const (
	// Outbound datagrams are seen as the node writes them, before any fault.
	Outbound Direction = iota
	// Inbound datagrams are seen as they arrive at the node, after the faults.
	Inbound
)

func (d Direction) String() string {
	if d == Outbound {
		return "out"
	}
	return "in"
}

// Tap observes a datagram passing a node and returns false to drop it. b is the network's
// own copy: the tap may modify it in place (to tamper) but must copy it to keep it. A tap
// runs without the network's lock, so it may call Inject or change knobs.
type Tap func(dir Direction, from, to netip.AddrPort, b []byte) bool

// Stats counts what happened to datagrams since the network was made.
type Stats struct {
	Sent        uint64 // written by a Conn
	Delivered   uint64 // queued for a reader, duplicates and injections included
	Lost        uint64 // dropped by SetLoss
	Duplicated  uint64 // extra copies made by SetDuplicate
	Reordered   uint64 // held back by SetReorder
	Partitioned uint64 // dropped by Partition
	NoListener  uint64 // nobody at the destination address
	QueueFull   uint64 // dropped because the reader's queue was full
	TapDropped  uint64 // dropped by a Tap
	Injected    uint64 // forged through Inject
	NATDropped  uint64 // refused by a NAT: no mapping, or a sender it does not admit
}

// Network is a set of in-memory sockets. All knobs are safe to change while traffic flows.
type Network struct {
	mu       sync.Mutex
	rng      *rand.Rand
	conns    map[netip.AddrPort]*Conn
	nextPort map[netip.Addr]uint16
	taps     map[netip.AddrPort]Tap
	wire     func(from, to netip.AddrPort, b []byte) bool
	nats     []*nat
	parts    map[[2]netip.Addr]bool
	loss     float64
	dup      float64
	reorder  float64
	delay    time.Duration
	queueLen int

	sent, delivered, lost, duplicated, reordered, partitioned atomic.Uint64
	noListener, queueFull, tapDropped, injected, natDropped   atomic.Uint64
}

// NewNetwork returns an empty network whose random faults are drawn from seed, so a failing
// test replays with the same decisions (given the same order of sends).
func NewNetwork(seed uint64) *Network {
	return &Network{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		conns:    map[netip.AddrPort]*Conn{},
		nextPort: map[netip.Addr]uint16{},
		taps:     map[netip.AddrPort]Tap{},
		parts:    map[[2]netip.Addr]bool{},
		queueLen: DefaultQueueLen,
	}
}

// SetLoss drops each datagram with probability p.
func (n *Network) SetLoss(p float64) { n.mu.Lock(); n.loss = p; n.mu.Unlock() }

// SetDuplicate delivers each datagram twice with probability p.
func (n *Network) SetDuplicate(p float64) { n.mu.Lock(); n.dup = p; n.mu.Unlock() }

// SetReorder holds each datagram with probability p and delivers it right after the next
// one to the same destination (or after ReorderTimeout if none follows).
func (n *Network) SetReorder(p float64) { n.mu.Lock(); n.reorder = p; n.mu.Unlock() }

// SetDelay delays every datagram by d, keeping the order per destination.
func (n *Network) SetDelay(d time.Duration) { n.mu.Lock(); n.delay = d; n.mu.Unlock() }

// SetQueueLen sets the reader queue length of Conns opened afterwards.
func (n *Network) SetQueueLen(l int) { n.mu.Lock(); n.queueLen = max(l, 1); n.mu.Unlock() }

// Partition drops all datagrams between addresses a and b, both ways, until Heal.
func (n *Network) Partition(a, b netip.Addr) {
	n.mu.Lock()
	n.parts[pairKey(a, b)] = true
	n.mu.Unlock()
}

// Heal removes every partition.
func (n *Network) Heal() { n.mu.Lock(); clear(n.parts); n.mu.Unlock() }

// SetTap installs t on the node listening at addr (nil removes it).
func (n *Network) SetTap(addr netip.AddrPort, t Tap) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t == nil {
		delete(n.taps, addr)
		return
	}
	n.taps[addr] = t
}

// Tap installs f on the whole network (nil removes it): it sees every datagram a Conn
// writes, before faults and before the sender's node Tap, and returns false to drop it.
// Like a node Tap it may modify b in place but must copy it to keep it, and it does not
// see Inject.
func (n *Network) Tap(f func(from, to netip.AddrPort, b []byte) bool) {
	n.mu.Lock()
	n.wire = f
	n.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (n *Network) Stats() Stats {
	return Stats{
		Sent: n.sent.Load(), Delivered: n.delivered.Load(), Lost: n.lost.Load(),
		Duplicated: n.duplicated.Load(), Reordered: n.reordered.Load(),
		Partitioned: n.partitioned.Load(), NoListener: n.noListener.Load(),
		QueueFull: n.queueFull.Load(), TapDropped: n.tapDropped.Load(), Injected: n.injected.Load(),
		NATDropped: n.natDropped.Load(),
	}
}

// Listen opens a Conn at addr. Port 0 picks a free port. An unspecified address (0.0.0.0 or
// ::) receives for every address at its port that has no exact listener.
func (n *Network) Listen(addr netip.AddrPort) (udp.Conn, error) {
	if !addr.Addr().IsValid() {
		return nil, fmt.Errorf("udptest: listen %v: address required", addr)
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	n.mu.Lock()
	defer n.mu.Unlock()
	if addr.Port() == 0 {
		port, err := n.freePort(addr.Addr())
		if err != nil {
			return nil, err
		}
		addr = netip.AddrPortFrom(addr.Addr(), port)
	}
	if _, ok := n.conns[addr]; ok {
		return nil, fmt.Errorf("udptest: listen %v: address in use", addr)
	}
	c := &Conn{
		net:    n,
		queue:  make(chan *packet, n.queueLen),
		closed: make(chan struct{}),
	}
	c.local.Store(&addr)
	n.conns[addr] = c
	return c, nil
}

func (n *Network) freePort(ip netip.Addr) (uint16, error) {
	p := max(n.nextPort[ip], firstEphemeralPort)
	for range 1 << 16 {
		if p == 0 {
			p = firstEphemeralPort
		}
		if _, used := n.conns[netip.AddrPortFrom(ip, p)]; !used {
			n.nextPort[ip] = p + 1
			return p, nil
		}
		p++
	}
	return 0, fmt.Errorf("udptest: no free port on %v", ip)
}

// Rebind moves the Conn listening at from to the address to, as when a host changes its
// underlay address or a NAT its mapping: its later datagrams come from to, datagrams to from
// find no listener, and its node Tap moves along. Port 0 picks a free port. It returns the
// new address.
func (n *Network) Rebind(from, to netip.AddrPort) (netip.AddrPort, error) {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.conns[from]
	if c == nil {
		return netip.AddrPort{}, fmt.Errorf("udptest: rebind %v: %w", from, ErrNoListener)
	}
	if to.Port() == 0 {
		port, err := n.freePort(to.Addr())
		if err != nil {
			return netip.AddrPort{}, err
		}
		to = netip.AddrPortFrom(to.Addr(), port)
	}
	if _, used := n.conns[to]; used {
		return netip.AddrPort{}, fmt.Errorf("udptest: rebind to %v: address in use", to)
	}
	delete(n.conns, from)
	n.conns[to] = c
	if tap, ok := n.taps[from]; ok {
		delete(n.taps, from)
		n.taps[to] = tap
	}
	c.local.Store(&to)
	return to, nil
}

// Inject delivers b to the Conn at to as if from sent it, bypassing faults, partitions,
// taps and NAT filtering (a NAT's public address:port still leads to its inside host):
// tests forge, replay and reflect packets with it.
func (n *Network) Inject(from, to netip.AddrPort, b []byte) error {
	n.mu.Lock()
	dst := n.lookup(to)
	if dst == nil {
		for _, x := range n.nats {
			if m := x.in[to.Port()]; to.Addr() == x.public && m != nil {
				dst = n.lookup(m.inside)
			}
		}
	}
	n.mu.Unlock()
	if dst == nil {
		n.noListener.Add(1)
		return fmt.Errorf("udptest: inject to %v: %w", to, ErrNoListener)
	}
	n.injected.Add(1)
	dst.enqueue(newPacket(from, b))
	return nil
}

// lookup finds the Conn for to: exact address first, then a wildcard at its port.
func (n *Network) lookup(to netip.AddrPort) *Conn {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	if c := n.conns[to]; c != nil {
		return c
	}
	if to.Addr().Is4() {
		if c := n.conns[netip.AddrPortFrom(netip.IPv4Unspecified(), to.Port())]; c != nil {
			return c
		}
	}
	return n.conns[netip.AddrPortFrom(netip.IPv6Unspecified(), to.Port())]
}

func pairKey(a, b netip.Addr) [2]netip.Addr {
	a, b = a.Unmap(), b.Unmap()
	if b.Less(a) {
		a, b = b, a
	}
	return [2]netip.Addr{a, b}
}

// send runs one written datagram through the faults to its destination.
func (n *Network) send(from, to netip.AddrPort, b []byte) {
	n.sent.Add(1)
	n.mu.Lock()
	wire, tap := n.wire, n.taps[from]
	n.mu.Unlock()
	if wire != nil && !wire(from, to, b) {
		n.tapDropped.Add(1)
		return
	}
	if tap != nil && !tap(Outbound, from, to, b) {
		n.tapDropped.Add(1)
		return
	}

	n.mu.Lock()
	src := n.natOut(from, to)
	inside, admitted := n.natIn(src, to)
	if !admitted {
		n.mu.Unlock()
		n.natDropped.Add(1)
		return
	}
	dst := n.lookup(inside)
	switch {
	case dst == nil:
		n.mu.Unlock()
		n.noListener.Add(1)
		return
	case n.parts[pairKey(from.Addr(), to.Addr())]:
		n.mu.Unlock()
		n.partitioned.Add(1)
		return
	case n.loss > 0 && n.rng.Float64() < n.loss:
		n.mu.Unlock()
		n.lost.Add(1)
		return
	}
	p := newPacket(src, b)
	p.to = to
	pkts := []*packet{p}
	if n.dup > 0 && n.rng.Float64() < n.dup {
		n.duplicated.Add(1)
		pkts = append(pkts, newPacket(src, b))
		pkts[1].to = to
	}
	hold := n.reorder > 0 && n.rng.Float64() < n.reorder
	delay := n.delay
	n.mu.Unlock()

	if delay > 0 {
		dst.delayLine(pkts, hold, delay)
		return
	}
	dst.arrive(pkts, hold)
}

type packet struct {
	from, to netip.AddrPort
	b        []byte
}

func newPacket(from netip.AddrPort, b []byte) *packet {
	return &packet{from: from, b: append([]byte(nil), b...)}
}

// Conn is one in-memory socket.
type Conn struct {
	net    *Network
	local  atomic.Pointer[netip.AddrPort] // changed by Rebind
	queue  chan *packet
	closed chan struct{}
	once   sync.Once

	// arriveMu keeps arrivals (taps and queueing) in order when timers deliver.
	arriveMu sync.Mutex
	// held and delayed are guarded by arriveMu.
	held    *packet
	delayed []delayedPacket
	timer   *time.Timer
}

type delayedPacket struct {
	due  time.Time
	pkt  *packet
	hold bool
}

func (c *Conn) delayLine(pkts []*packet, hold bool, d time.Duration) {
	c.arriveMu.Lock()
	defer c.arriveMu.Unlock()
	due := time.Now().Add(d)
	if l := len(c.delayed); l > 0 && c.delayed[l-1].due.After(due) {
		due = c.delayed[l-1].due // a shortened delay must not overtake queued datagrams
	}
	for i, p := range pkts {
		c.delayed = append(c.delayed, delayedPacket{due: due, pkt: p, hold: hold && i == 0})
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.releaseDelayed)
	}
}

func (c *Conn) releaseDelayed() {
	c.arriveMu.Lock()
	defer c.arriveMu.Unlock()
	now := time.Now()
	for len(c.delayed) > 0 && !c.delayed[0].due.After(now) {
		d := c.delayed[0]
		c.delayed = c.delayed[1:]
		c.arriveLocked([]*packet{d.pkt}, d.hold)
	}
	c.timer = nil
	if len(c.delayed) > 0 {
		c.timer = time.AfterFunc(c.delayed[0].due.Sub(now), c.releaseDelayed)
	}
}

func (c *Conn) arrive(pkts []*packet, hold bool) {
	c.arriveMu.Lock()
	defer c.arriveMu.Unlock()
	c.arriveLocked(pkts, hold)
}

// arriveLocked queues pkts, or holds the first back when hold is set and nothing is held
// yet; a held datagram follows the next arrival.
func (c *Conn) arriveLocked(pkts []*packet, hold bool) {
	if hold && c.held == nil {
		c.net.reordered.Add(1)
		c.held = pkts[0]
		pkts = pkts[1:]
		held := c.held
		time.AfterFunc(ReorderTimeout, func() {
			c.arriveMu.Lock()
			defer c.arriveMu.Unlock()
			if c.held == held {
				c.held = nil
				c.tapAndEnqueue(held)
			}
		})
		if len(pkts) == 0 {
			return
		}
	}
	for _, p := range pkts {
		c.tapAndEnqueue(p)
	}
	if c.held != nil {
		p := c.held
		c.held = nil
		c.tapAndEnqueue(p)
	}
}

func (c *Conn) tapAndEnqueue(p *packet) {
	c.net.mu.Lock()
	tap := c.net.taps[c.LocalAddr()]
	c.net.mu.Unlock()
	if tap != nil && !tap(Inbound, p.from, p.to, p.b) {
		c.net.tapDropped.Add(1)
		return
	}
	c.enqueue(p)
}

func (c *Conn) enqueue(p *packet) {
	select {
	case <-c.closed:
		return
	default:
	}
	select {
	case c.queue <- p:
		c.net.delivered.Add(1)
	default:
		c.net.queueFull.Add(1)
	}
}

// ReadBatch blocks until a datagram arrives or the Conn is closed, then fills as many of
// msgs as are waiting. A datagram longer than its Buf is truncated.
func (c *Conn) ReadBatch(msgs []udp.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	select {
	case <-c.closed:
		return 0, udp.ErrClosed
	case p := <-c.queue:
		fill(&msgs[0], p)
	}
	i := 1
	for ; i < len(msgs); i++ {
		select {
		case p := <-c.queue:
			fill(&msgs[i], p)
			continue
		default:
		}
		break
	}
	return i, nil
}

func fill(m *udp.Message, p *packet) {
	m.N = copy(m.Buf, p.b)
	m.Data = m.Buf[:m.N]
	m.Addr = p.from
}

// WriteBatch sends each msgs[i].Buf[:N] to msgs[i].Addr. It never blocks: datagrams that
// cannot be delivered are dropped and counted, as on a real network.
func (c *Conn) WriteBatch(msgs []udp.Message) (int, error) {
	for i := range msgs {
		select {
		case <-c.closed:
			return i, udp.ErrClosed
		default:
		}
		c.net.send(c.LocalAddr(), msgs[i].Addr, msgs[i].Buf[:msgs[i].N])
	}
	return len(msgs), nil
}

// LocalAddr returns the address the Conn listens on.
func (c *Conn) LocalAddr() netip.AddrPort { return *c.local.Load() }

// Close frees the address and unblocks ReadBatch with udp.ErrClosed. Queued datagrams are
// discarded.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.net.mu.Lock()
		if local := c.LocalAddr(); c.net.conns[local] == c {
			delete(c.net.conns, local)
		}
		c.net.mu.Unlock()
		close(c.closed)
	})
	return nil
}
