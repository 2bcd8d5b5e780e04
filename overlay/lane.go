package overlay

import (
	"sync"

	"github.com/meshnode/meshnode/overlay/header"
	"github.com/meshnode/meshnode/overlay/tun"
	"github.com/meshnode/meshnode/overlay/udp"
)

// lane is one routine of the data path: a TUN queue and a UDP socket with a receive
// goroutine (socket -> queue) and a send goroutine (queue -> socket). With routines: N the
// kernel spreads flows over N queues (by flow hash) and datagrams over N SO_REUSEPORT
// sockets (by source address and port), so N pairs of goroutines work in parallel.
type lane struct {
	idx  int
	dev  tun.Device // nil when tun.disabled
	conn udp.Conn
	mu   *sync.Mutex // serialises writes to conn (lane 0 shares Node.sendMu with the control path)
}

// PriorityDatagramMax bounds the datagrams the priority lane's socket is given
// (udp.SteerSmall): a header, a packet of tun.SmallPacketMax bytes and the AEAD tag.
const PriorityDatagramMax = header.Len + tun.SmallPacketMax + tagLen

// prioritised is a device with a queue of its own for small packets (tun.Linux).
type prioritised interface {
	PriorityQueue() tun.Device
}

// priorityLane is the lane of the device's priority queue (tun.priority_queue), or nil. It
// sits outside Node.lanes: a send goroutine, and a receive goroutine when it has a socket
// of its own that the kernel gives small datagrams (else it sends through lane 0's
// socket). Its index is -1: it keeps no firewall memo (lanes' memos belong to their own
// goroutines), so a small packet is classified in full, which costs little next to the
// wait behind a bulk transfer that it saves.
func (n *Node) priorityLane(dev tun.Device, conn, own udp.Conn) *lane {
	p, ok := dev.(prioritised)
	if !ok {
		return nil
	}
	q := p.PriorityQueue()
	if q == nil {
		return nil
	}
	if own != nil {
		return &lane{idx: -1, dev: q, conn: own, mu: new(sync.Mutex)}
	}
	return &lane{idx: -1, dev: q, conn: conn, mu: &n.sendMu}
}

// buildLanes makes lane 0 of Options.Device and Options.Conn, and one more lane per extra
// socket when the device has a queue for each. Anything else runs on one lane, with a warning
// when more were asked for.
func (n *Node) buildLanes(opts Options) []*lane {
	lanes := []*lane{{idx: 0, dev: opts.Device, conn: opts.Conn, mu: &n.sendMu}}
	want := n.cfg.Routines
	if want <= 1 {
		return lanes
	}
	var queues []tun.Device
	if mq, ok := opts.Device.(tun.MultiQueue); ok {
		queues = mq.Queues()
	}
	if opts.Device == nil {
		queues = make([]tun.Device, want) // tun.disabled: sockets only
	}
	if len(queues) < want || len(opts.Conns) < want-1 {
		n.log.Warn("routines: the device or the sockets cannot serve that many; using 1",
			"routines", want, "tun_queues", len(queues), "sockets", 1+len(opts.Conns))
		return lanes
	}
	lanes[0].dev = queues[0]
	for i := 1; i < want; i++ {
		lanes = append(lanes, &lane{idx: i, dev: queues[i], conn: opts.Conns[i-1], mu: new(sync.Mutex)})
	}
	n.log.Info("data path", "routines", want)
	return lanes
}

// writeLane sends a batch through the lane's own socket.
func (n *Node) writeLane(l *lane, msgs []udp.Message) {
	l.mu.Lock()
	sent, err := l.conn.WriteBatch(msgs)
	l.mu.Unlock()
	if err != nil {
		for range len(msgs) - sent {
			n.m.dropped(dropUDPWrite)
		}
		if !n.closed() {
			n.log.Debug("udp write failed", "err", err)
		}
	}
}
