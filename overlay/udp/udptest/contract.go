package udptest

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay/udp"
)

// Contract runs the behaviour every udp.Conn must have against pairs made by open: two
// Conns on specific (not wildcard) addresses that can reach each other, with no faults.
// The Linux socket and this package's Network both run it, so the runtime can trust that
// what passes in memory holds on the real socket.
func Contract(t *testing.T, open func(t *testing.T) (a, b udp.Conn)) {
	t.Run("datagram carries payload and sender address", func(t *testing.T) {
		a, b := open(t)
		write(t, a, []udp.Message{{Buf: []byte("ping"), N: 4, Addr: b.LocalAddr()}})
		m := readOne(t, b, 100)
		if string(m.Data) != "ping" || m.Addr != a.LocalAddr() {
			t.Fatalf("got %q from %v, want ping from %v", m.Data, m.Addr, a.LocalAddr())
		}
		write(t, b, []udp.Message{{Buf: []byte("pong"), N: 4, Addr: m.Addr}})
		if r := readOne(t, a, 100); string(r.Data) != "pong" || r.Addr != b.LocalAddr() {
			t.Fatalf("reply %q from %v", r.Data, r.Addr)
		}
	})
	t.Run("a batch arrives complete and in order", func(t *testing.T) {
		a, b := open(t)
		const n = 100
		msgs := make([]udp.Message, n)
		for i := range msgs {
			p := []byte(fmt.Sprintf("%03d", i))
			msgs[i] = udp.Message{Buf: p, N: len(p), Addr: b.LocalAddr()}
		}
		write(t, a, msgs)
		for i := range n {
			if m := readOne(t, b, 100); string(m.Data) != fmt.Sprintf("%03d", i) {
				t.Fatalf("datagram %d is %q", i, m.Data)
			}
		}
	})
	t.Run("a long datagram is truncated to the buffer", func(t *testing.T) {
		a, b := open(t)
		write(t, a, []udp.Message{{Buf: []byte("0123456789"), N: 10, Addr: b.LocalAddr()}})
		if m := readOne(t, b, 4); string(m.Data) != "0123" {
			t.Fatalf("got %q", m.Data)
		}
	})
	t.Run("empty batches do nothing", func(t *testing.T) {
		a, _ := open(t)
		if n, err := a.WriteBatch(nil); n != 0 || err != nil {
			t.Fatalf("WriteBatch(nil) = %d, %v", n, err)
		}
		if n, err := a.ReadBatch(nil); n != 0 || err != nil {
			t.Fatalf("ReadBatch(nil) = %d, %v", n, err)
		}
	})
	t.Run("one reader and one writer at once", func(t *testing.T) {
		a, b := open(t)
		const n = 500
		done := make(chan int)
		var progress atomic.Int64
		go func() { // b reads what a sends, while b's writer echoes a marker back
			msgs := make([]udp.Message, 8)
			for i := range msgs {
				msgs[i].Buf = make([]byte, 16)
			}
			got := 0
			for got < n {
				k, err := b.ReadBatch(msgs)
				if err != nil {
					break
				}
				got += k
				progress.Store(int64(got))
			}
			done <- got
		}()
		go func() {
			for range n {
				b.WriteBatch([]udp.Message{{Buf: []byte("e"), N: 1, Addr: a.LocalAddr()}})
			}
		}()
		for i := range n {
			write(t, a, []udp.Message{{Buf: []byte{byte(i)}, N: 1, Addr: b.LocalAddr()}})
			if i%64 == 63 {
				// Stay within the receive buffer even when the reader is starved of CPU (a
				// loaded CI machine): at most 128 datagrams in flight.
				deadline := time.Now().Add(2 * time.Second)
				for progress.Load() < int64(i-127) && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
		}
		select {
		case got := <-done:
			if got != n {
				t.Fatalf("received %d of %d", got, n)
			}
		case <-time.After(5 * time.Second):
			b.Close()
			t.Fatalf("reader stalled: %d of %d", <-done, n)
		}
	})
	t.Run("close unblocks the reader and ends writes", func(t *testing.T) {
		a, b := open(t)
		errc := make(chan error, 1)
		go func() {
			_, err := a.ReadBatch([]udp.Message{{Buf: make([]byte, 10)}})
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond) // let the reader block
		if err := a.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, udp.ErrClosed) {
				t.Fatalf("ReadBatch after Close = %v, want udp.ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Close did not unblock ReadBatch")
		}
		if _, err := a.WriteBatch([]udp.Message{{Buf: []byte("x"), N: 1, Addr: b.LocalAddr()}}); !errors.Is(err, udp.ErrClosed) {
			t.Fatalf("WriteBatch after Close = %v, want udp.ErrClosed", err)
		}
		if err := a.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
	})
}

func write(t *testing.T, c udp.Conn, msgs []udp.Message) {
	t.Helper()
	if n, err := c.WriteBatch(msgs); n != len(msgs) || err != nil {
		t.Fatalf("WriteBatch = %d, %v; want %d", n, err, len(msgs))
	}
}

// readOne reads a single datagram with a deadline; a hung read fails the test by closing
// the Conn, which must unblock it.
func readOne(t *testing.T, c udp.Conn, size int) udp.Message {
	t.Helper()
	msgs := []udp.Message{{Buf: make([]byte, size)}}
	timer := time.AfterFunc(5*time.Second, func() { c.Close() })
	defer timer.Stop()
	n, err := c.ReadBatch(msgs)
	if err != nil || n != 1 {
		t.Fatalf("ReadBatch = %d, %v", n, err)
	}
	return msgs[0]
}
