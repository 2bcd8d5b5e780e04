package overlay_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/tun"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
	"github.com/meshnode/meshnode/overlay/udp"
)

// multiQueue is an in-memory multi-queue device: queue 0 is the device itself.
type multiQueue struct {
	*tuntest.Device
	qs []*tuntest.Device
}

func (m *multiQueue) Queues() []tun.Device {
	out := make([]tun.Device, len(m.qs))
	for i, q := range m.qs {
		out[i] = q
	}
	return out
}

func (m *multiQueue) Close() error {
	for _, q := range m.qs {
		q.Close()
	}
	return nil
}

// TestRoutinesRunALanePerQueue: two nodes with routines: 3, each on three in-memory queues
// and three real SO_REUSEPORT loopback sockets. Packets injected on every queue of one node
// in both directions at once all arrive at the other (on whichever queue its lane writes),
// and with -race this shows the lanes share no unguarded state. A packet injected on a
// queue is read only by that queue's lane, so one lane missing means lost packets.
func TestRoutinesRunALanePerQueue(t *testing.T) {
	ca := certtest.NewCA(t, "lanes")
	const lanes = 3
	type host struct {
		vpn   netip.Addr
		queue []*tuntest.Device
		node  *overlay.Node
		addr  netip.AddrPort
	}
	hosts := make([]*host, 2)
	conns := make([][]udp.Conn, 2)
	for i := range hosts {
		h := &host{vpn: netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 1)})}
		c0, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"), udp.Options{ReusePort: true})
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = []udp.Conn{c0}
		for range lanes - 1 {
			c, err := udp.Listen(c0.LocalAddr(), udp.Options{ReusePort: true})
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = append(conns[i], c)
		}
		h.addr = c0.LocalAddr()
		for q := range lanes {
			h.queue = append(h.queue, tuntest.NewDevice(fmt.Sprintf("h%dq%d", i, q), 1300))
		}
		hosts[i] = h
	}
	for i, h := range hosts {
		other := hosts[1-i]
		ch := ca.NewHost(t, fmt.Sprintf("host%d", i+1), h.vpn.String()+"/16")
		y := fmt.Sprintf("pki:\n  ca: %q\n  cert: %q\n  key: %q\n", ca.PEM, ch.PEM, ch.KeyPEM)
		y += fmt.Sprintf("static_host_map:\n  %q: [%q]\n", other.vpn, other.addr)
		y += fmt.Sprintf("routines: %d\nhandshakes:\n  try_interval: 20ms\n", lanes)
		y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"
		cfg, err := overlay.ParseConfig([]byte(y), "lanes.yml")
		if err != nil {
			t.Fatal(err)
		}
		pki, err := overlay.LoadPKI(cfg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		dev := &multiQueue{Device: h.queue[0], qs: h.queue}
		h.node, err = overlay.New(cfg, pki, overlay.Options{Device: dev, Conn: conns[i][0], Conns: conns[i][1:],
			Registerer: prom.NewRegistry(), Tick: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = h.node.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}

	// Every queue of each host sends 50 distinct packets to the other host, all at once.
	const per = 50
	var wg sync.WaitGroup
	for i, h := range hosts {
		other := hosts[1-i]
		for q := range lanes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range per {
					payload := []byte(fmt.Sprintf("from %d queue %d packet %d", i, q, k))
					pkt := tuntest.IPv4UDP(netip.AddrPortFrom(h.vpn, uint16(5000+q)), netip.AddrPortFrom(other.vpn, 6000), payload)
					h.queue[q].Inject(pkt)
				}
			}()
		}
	}
	wg.Wait()

	// The first packets wait for the handshake (a bounded queue) or are dropped; resend
	// until each packet has been seen once. Collect from every queue of both hosts.
	for i, h := range hosts {
		other := hosts[1-i]
		want := map[string]bool{}
		for q := range lanes {
			for k := range per {
				want[fmt.Sprintf("from %d queue %d packet %d", i, q, k)] = true
			}
		}
		deadline := time.Now().Add(20 * time.Second)
		resend := time.Now().Add(500 * time.Millisecond)
		for len(want) > 0 && time.Now().Before(deadline) {
			got := false
			for _, q := range other.queue {
				select {
				case p := <-q.Delivered():
					got = true
					if d, err := tuntest.Parse(p); err == nil {
						delete(want, string(d.Data))
					}
				default:
				}
			}
			if time.Now().After(resend) {
				for s := range want { // resend what is missing, on its own queue
					var q, k int
					fmt.Sscanf(s, "from %d queue %d packet %d", new(int), &q, &k)
					h.queue[q].Inject(tuntest.IPv4UDP(netip.AddrPortFrom(h.vpn, uint16(5000+q)), netip.AddrPortFrom(other.vpn, 6000), []byte(s)))
				}
				resend = time.Now().Add(500 * time.Millisecond)
			}
			if !got {
				time.Sleep(2 * time.Millisecond)
			}
		}
		if len(want) > 0 {
			t.Fatalf("host %d -> host %d: %d of %d packets never arrived", i+1, 2-i, len(want), lanes*per)
		}
	}
}
