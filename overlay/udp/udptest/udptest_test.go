package udptest

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay/udp"
)

var (
	addrA = netip.MustParseAddrPort("198.18.0.1:4242")
	addrB = netip.MustParseAddrPort("198.18.0.2:4242")
	addrC = netip.MustParseAddrPort("198.18.0.3:4242")
)

func listen(t *testing.T, n *Network, a netip.AddrPort) *peer {
	t.Helper()
	c, err := n.Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{Conn: c}
}

func send(t *testing.T, c udp.Conn, to netip.AddrPort, payloads ...string) {
	t.Helper()
	msgs := make([]udp.Message, len(payloads))
	for i, p := range payloads {
		msgs[i] = udp.Message{Buf: []byte(p), N: len(p), Addr: to}
	}
	if n, err := c.WriteBatch(msgs); n != len(msgs) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
}

type result struct {
	p    string
	from netip.AddrPort
}

// peer is a Conn with one reading goroutine, started on first use, so that no datagram is
// lost between calls to recv. It ends when the Conn is closed.
type peer struct {
	udp.Conn
	once sync.Once
	ch   chan result
}

func (p *peer) results() chan result {
	p.once.Do(func() {
		p.ch = make(chan result, 4096)
		go func() {
			msgs := make([]udp.Message, 16)
			for i := range msgs {
				msgs[i].Buf = make([]byte, 1500)
			}
			for {
				n, err := p.ReadBatch(msgs)
				if err != nil {
					return
				}
				for _, m := range msgs[:n] {
					p.ch <- result{string(m.Buf[:m.N]), m.Addr}
				}
			}
		}()
	})
	return p.ch
}

// recv waits until want datagrams arrived or the wait ran out, returning payloads and
// sources. A dropped datagram shows as a short result, never as a hang.
func recv(t *testing.T, c *peer, want int, wait time.Duration) ([]string, []netip.AddrPort) {
	t.Helper()
	ch := c.results()
	var ps []string
	var froms []netip.AddrPort
	deadline := time.After(wait)
	for len(ps) < want {
		select {
		case r := <-ch:
			ps = append(ps, r.p)
			froms = append(froms, r.from)
		case <-deadline:
			return ps, froms
		}
	}
	return ps, froms
}

func seq(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprint(i)
	}
	return s
}

func TestDeliversWithSourceAddress(t *testing.T) {
	n := NewNetwork(1)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	send(t, a, addrB, "hello", "world")
	got, from := recv(t, b, 2, time.Second)
	if fmt.Sprint(got) != "[hello world]" || from[0] != addrA || from[1] != addrA {
		t.Fatalf("got %v from %v", got, from)
	}
	send(t, b, from[0], "back")
	if got, _ := recv(t, a, 1, time.Second); fmt.Sprint(got) != "[back]" {
		t.Fatalf("reply %v", got)
	}
	if s := n.Stats(); s.Sent != 3 || s.Delivered != 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestListenAddresses(t *testing.T) {
	n := NewNetwork(1)
	listen(t, n, addrA)
	if _, err := n.Listen(addrA); err == nil {
		t.Fatal("second Listen on the same address succeeded")
	}
	if _, err := n.Listen(netip.AddrPort{}); err == nil {
		t.Fatal("Listen without an address succeeded")
	}
	ip := netip.MustParseAddr("198.18.0.9")
	c1 := listen(t, n, netip.AddrPortFrom(ip, 0))
	c2 := listen(t, n, netip.AddrPortFrom(ip, 0))
	if p1, p2 := c1.LocalAddr().Port(), c2.LocalAddr().Port(); p1 == 0 || p2 == 0 || p1 == p2 {
		t.Fatalf("ephemeral ports %d, %d", p1, p2)
	}
	// 4-in-6 listen and send addresses are the IPv4 ones.
	m := listen(t, n, netip.MustParseAddrPort("[::ffff:198.18.0.5]:1"))
	if m.LocalAddr() != netip.MustParseAddrPort("198.18.0.5:1") {
		t.Fatalf("LocalAddr %v not unmapped", m.LocalAddr())
	}
	send(t, c1, netip.MustParseAddrPort("[::ffff:198.18.0.5]:1"), "x")
	if got, _ := recv(t, m, 1, time.Second); len(got) != 1 {
		t.Fatal("mapped destination not delivered")
	}
}

func TestWildcardListenerReceivesForAnyAddress(t *testing.T) {
	n := NewNetwork(1)
	w := listen(t, n, netip.MustParseAddrPort("0.0.0.0:4242"))
	a := listen(t, n, netip.MustParseAddrPort("198.18.0.1:5000"))
	send(t, a, addrB, "to b")
	if got, _ := recv(t, w, 1, time.Second); fmt.Sprint(got) != "[to b]" {
		t.Fatalf("wildcard got %v", got)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name  string
		knobs func(n *Network)
		check func(t *testing.T, got []string, s Stats)
		want  int // how many datagrams to wait for
	}{
		{"loss 1 drops everything", func(n *Network) { n.SetLoss(1) }, func(t *testing.T, got []string, s Stats) {
			if len(got) != 0 || s.Lost != 100 {
				t.Fatalf("got %d, stats %+v", len(got), s)
			}
		}, 1},
		{"loss 0.5 drops about half, reproducibly", func(n *Network) { n.SetLoss(0.5) }, func(t *testing.T, got []string, s Stats) {
			if s.Lost < 30 || s.Lost > 70 || int(s.Lost)+len(got) != 100 {
				t.Fatalf("lost %d, got %d", s.Lost, len(got))
			}
		}, 100},
		{"duplicate 1 delivers everything twice", func(n *Network) { n.SetDuplicate(1) }, func(t *testing.T, got []string, s Stats) {
			if len(got) != 200 || s.Duplicated != 100 || got[0] != "0" || got[1] != "0" || got[199] != "99" {
				t.Fatalf("got %d (%v...), stats %+v", len(got), got[:4], s)
			}
		}, 200},
		{"reorder 1 swaps each pair", func(n *Network) { n.SetReorder(1) }, func(t *testing.T, got []string, s Stats) {
			if len(got) != 100 || fmt.Sprint(got[:6]) != "[1 0 3 2 5 4]" || s.Reordered != 50 {
				t.Fatalf("got %v..., stats %+v", got[:min(6, len(got))], s)
			}
		}, 100},
		{"partition drops both ways", func(n *Network) { n.Partition(addrB.Addr(), addrA.Addr()) }, func(t *testing.T, got []string, s Stats) {
			if len(got) != 0 || s.Partitioned != 100 {
				t.Fatalf("got %d, stats %+v", len(got), s)
			}
		}, 1},
		{"partition of others does not matter", func(n *Network) { n.Partition(addrA.Addr(), addrC.Addr()) }, func(t *testing.T, got []string, s Stats) {
			if len(got) != 100 {
				t.Fatalf("got %d", len(got))
			}
		}, 100},
		{"delay keeps order", func(n *Network) { n.SetDelay(5 * time.Millisecond) }, func(t *testing.T, got []string, s Stats) {
			if fmt.Sprint(got) != fmt.Sprint(seq(100)) {
				t.Fatalf("got %v", got)
			}
		}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NewNetwork(7)
			a, b := listen(t, n, addrA), listen(t, n, addrB)
			tt.knobs(n)
			send(t, a, addrB, seq(100)...)
			wait := time.Second
			if tt.want > 0 && tt.want < 100 {
				wait = 100 * time.Millisecond // expecting less than everything
			}
			got, _ := recv(t, b, tt.want, wait)
			tt.check(t, got, n.Stats())
		})
	}
}

func TestSameSeedSameFaults(t *testing.T) {
	run := func() string {
		n := NewNetwork(42)
		a, b := listen(t, n, addrA), listen(t, n, addrB)
		n.SetLoss(0.3)
		n.SetDuplicate(0.2)
		send(t, a, addrB, seq(200)...)
		// Without delay or reorder, delivery happens inside WriteBatch: Stats is final.
		got, _ := recv(t, b, int(n.Stats().Delivered), 2*time.Second)
		return fmt.Sprint(got)
	}
	if x, y := run(), run(); x != y {
		t.Fatalf("same seed, different outcome:\n%s\n%s", x, y)
	}
}

func TestReorderedDatagramIsReleasedWithoutFollower(t *testing.T) {
	n := NewNetwork(1)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	n.SetReorder(1)
	send(t, a, addrB, "alone")
	start := time.Now()
	if got, _ := recv(t, b, 1, time.Second); fmt.Sprint(got) != "[alone]" {
		t.Fatalf("held datagram never released: %v", got)
	}
	if time.Since(start) < ReorderTimeout/2 {
		t.Fatal("held datagram was not held")
	}
}

func TestDelayHoldsDatagrams(t *testing.T) {
	n := NewNetwork(1)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	n.SetDelay(80 * time.Millisecond)
	send(t, a, addrB, "late")
	if got, _ := recv(t, b, 1, 30*time.Millisecond); len(got) != 0 {
		t.Fatal("delayed datagram arrived early")
	}
	if got, _ := recv(t, b, 1, time.Second); len(got) != 1 {
		t.Fatal("delayed datagram never arrived")
	}
}

func TestHealRestoresTraffic(t *testing.T) {
	n := NewNetwork(1)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	n.Partition(addrA.Addr(), addrB.Addr())
	send(t, b, addrA, "lost")
	n.Heal()
	send(t, b, addrA, "through")
	if got, _ := recv(t, a, 1, time.Second); fmt.Sprint(got) != "[through]" {
		t.Fatalf("got %v", got)
	}
}

func TestTapObservesDropsAndTampers(t *testing.T) {
	n := NewNetwork(1)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	var mu sync.Mutex
	var seen []string
	n.SetTap(addrB, func(dir Direction, from, to netip.AddrPort, p []byte) bool {
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%v %v>%v %s", dir, from, to, p))
		mu.Unlock()
		switch string(p) {
		case "drop":
			return false
		case "flip":
			p[0] = 'F'
		}
		return true
	})
	send(t, a, addrB, "keep", "drop", "flip")
	send(t, b, addrA, "out")
	if got, _ := recv(t, b, 2, time.Second); fmt.Sprint(got) != "[keep Flip]" {
		t.Fatalf("b got %v", got)
	}
	if got, _ := recv(t, a, 1, time.Second); fmt.Sprint(got) != "[out]" {
		t.Fatalf("a got %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "[in 198.18.0.1:4242>198.18.0.2:4242 keep in 198.18.0.1:4242>198.18.0.2:4242 drop in 198.18.0.1:4242>198.18.0.2:4242 flip out 198.18.0.2:4242>198.18.0.1:4242 out]"
	if fmt.Sprint(seen) != want {
		t.Fatalf("tap saw %v", seen)
	}
	if s := n.Stats(); s.TapDropped != 1 {
		t.Fatalf("stats %+v", s)
	}
	n.SetTap(addrB, nil)
	send(t, a, addrB, "drop")
	if got, _ := recv(t, b, 1, time.Second); len(got) != 1 {
		t.Fatal("removed tap still dropping")
	}
}

func TestInjectForgesSourceAndBypassesFaults(t *testing.T) {
	n := NewNetwork(1)
	b := listen(t, n, addrB)
	n.SetLoss(1)
	n.Partition(addrC.Addr(), addrB.Addr())
	if err := n.Inject(addrC, addrB, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	got, from := recv(t, b, 1, time.Second)
	if fmt.Sprint(got) != "[forged]" || from[0] != addrC {
		t.Fatalf("got %v from %v", got, from)
	}
	if err := n.Inject(addrC, addrA, []byte("x")); !errors.Is(err, ErrNoListener) {
		t.Fatalf("inject to nobody: %v", err)
	}
	if s := n.Stats(); s.Injected != 1 || s.NoListener != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestQueueIsBounded(t *testing.T) {
	n := NewNetwork(1)
	n.SetQueueLen(4)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	send(t, a, addrB, seq(10)...)
	if got, _ := recv(t, b, 10, 100*time.Millisecond); fmt.Sprint(got) != "[0 1 2 3]" {
		t.Fatalf("got %v", got)
	}
	if s := n.Stats(); s.QueueFull != 6 || s.Delivered != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTruncatesToTheBuffer(t *testing.T) {
	n := NewNetwork(1)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	send(t, a, addrB, "0123456789")
	msgs := []udp.Message{{Buf: make([]byte, 3)}}
	if k, err := b.ReadBatch(msgs); k != 1 || err != nil || string(msgs[0].Buf[:msgs[0].N]) != "012" {
		t.Fatalf("%d %v %q", k, err, msgs[0].Buf[:msgs[0].N])
	}
}

func TestCloseUnblocksReaderAndFreesAddress(t *testing.T) {
	n := NewNetwork(1)
	c, err := n.Listen(addrA)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error)
	go func() {
		_, err := c.ReadBatch(make([]udp.Message, 1))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, udp.ErrClosed) {
			t.Fatalf("ReadBatch: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	if _, err := c.WriteBatch([]udp.Message{{Addr: addrB}}); !errors.Is(err, udp.ErrClosed) {
		t.Fatalf("WriteBatch after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	listen(t, n, addrA)
}

// TestKnobsChangeWhileTrafficFlows is for the race detector: senders, a reader and a goroutine
// turning every knob at once.
func TestKnobsChangeWhileTrafficFlows(t *testing.T) {
	n := NewNetwork(3)
	a, b, c := listen(t, n, addrA), listen(t, n, addrB), listen(t, n, addrC)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range []*peer{a, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.WriteBatch([]udp.Message{{Buf: []byte("x"), N: 1, Addr: addrB}})
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		msgs := make([]udp.Message, 8)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 16)
		}
		for {
			if _, err := b.ReadBatch(msgs); err != nil {
				return
			}
		}
	}()
	for i := range 200 {
		f := float64(i%4) / 4
		n.SetLoss(f)
		n.SetDuplicate(f)
		n.SetReorder(f)
		n.SetDelay(time.Duration(i%3) * time.Millisecond)
		if i%2 == 0 {
			n.Partition(addrA.Addr(), addrB.Addr())
		} else {
			n.Heal()
		}
		n.SetTap(addrB, func(Direction, netip.AddrPort, netip.AddrPort, []byte) bool { return i%5 != 0 })
		n.Inject(addrC, addrB, []byte("i"))
		_ = n.Stats()
		time.Sleep(100 * time.Microsecond)
	}
	close(stop)
	b.Close()
	wg.Wait()
	if s := n.Stats(); s.Sent == 0 || s.Delivered == 0 {
		t.Fatalf("no traffic: %+v", s)
	}
}

func BenchmarkSendReceive(b *testing.B) {
	n := NewNetwork(1)
	tx, _ := n.Listen(addrA)
	rx, _ := n.Listen(addrB)
	out := []udp.Message{{Buf: make([]byte, 1400), N: 1400, Addr: addrB}}
	in := []udp.Message{{Buf: make([]byte, 1500)}}
	b.ReportAllocs()
	for b.Loop() {
		tx.WriteBatch(out)
		rx.ReadBatch(in)
	}
}

func TestNetworkMeetsConnContract(t *testing.T) {
	Contract(t, func(t *testing.T) (udp.Conn, udp.Conn) {
		n := NewNetwork(1)
		return listen(t, n, addrA).Conn, listen(t, n, addrB).Conn
	})
}

func TestNetworkTapSeesEveryWrittenDatagram(t *testing.T) {
	n := NewNetwork(1)
	a, b, c := listen(t, n, addrA), listen(t, n, addrB), listen(t, n, addrC)
	var mu sync.Mutex
	var seen []string
	n.Tap(func(from, to netip.AddrPort, p []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, fmt.Sprintf("%v>%v %s", from.Addr(), to.Addr(), p))
		return string(p) != "drop"
	})
	send(t, a, addrB, "ab", "drop")
	send(t, c, addrA, "ca")
	n.Inject(addrC, addrB, []byte("injected"))
	if got, _ := recv(t, b, 2, time.Second); fmt.Sprint(got) != "[ab injected]" {
		t.Fatalf("b got %v", got)
	}
	if got, _ := recv(t, a, 1, time.Second); fmt.Sprint(got) != "[ca]" {
		t.Fatalf("a got %v", got)
	}
	mu.Lock()
	if fmt.Sprint(seen) != "[198.18.0.1>198.18.0.2 ab 198.18.0.1>198.18.0.2 drop 198.18.0.3>198.18.0.1 ca]" {
		t.Fatalf("tap saw %v", seen)
	}
	mu.Unlock()
	n.Tap(nil)
	send(t, a, addrB, "drop")
	if got, _ := recv(t, b, 1, time.Second); len(got) != 1 {
		t.Fatal("removed tap still dropping")
	}
}

func TestRebindChangesTheSourceAddress(t *testing.T) {
	n := NewNetwork(1)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	moved := netip.MustParseAddrPort("198.18.1.1:4242")
	if got, err := n.Rebind(addrA, moved); err != nil || got != moved {
		t.Fatalf("Rebind = %v, %v", got, err)
	}
	if a.LocalAddr() != moved {
		t.Fatalf("LocalAddr = %v", a.LocalAddr())
	}
	send(t, a, addrB, "roamed")
	if _, from := recv(t, b, 1, time.Second); len(from) != 1 || from[0] != moved {
		t.Fatalf("came from %v, want %v", from, moved)
	}
	send(t, b, addrA, "to old")
	send(t, b, moved, "to new")
	if got, _ := recv(t, a, 1, time.Second); fmt.Sprint(got) != "[to new]" {
		t.Fatalf("a got %v", got)
	}
	if s := n.Stats(); s.NoListener != 1 {
		t.Fatalf("stats %+v", s)
	}
	// A new port on the same address, as a NAT rebinding does.
	p, err := n.Rebind(moved, netip.AddrPortFrom(moved.Addr(), 0))
	if err != nil || p.Port() == moved.Port() || p.Addr() != moved.Addr() {
		t.Fatalf("Rebind to port 0 = %v, %v", p, err)
	}
	if _, err := n.Rebind(moved, addrC); !errors.Is(err, ErrNoListener) {
		t.Fatalf("Rebind of a free address: %v", err)
	}
	if _, err := n.Rebind(p, addrB); err == nil {
		t.Fatal("Rebind onto a used address succeeded")
	}
	// Close frees the new address, not the old one.
	a.Close()
	listen(t, n, p)
}
