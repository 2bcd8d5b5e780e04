package udp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

func listen(t testing.TB, addr string, opts Options) *Socket {
	t.Helper()
	ap := netip.AddrPort{}
	if addr != "" {
		ap = netip.MustParseAddrPort(addr)
	}
	s, err := ListenSocket(ap, opts)
	if err != nil {
		t.Fatalf("Listen(%s): %v", addr, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// readN reads until n datagrams arrived, with a deadline so a lost packet fails the test
// instead of hanging it.
func readN(t testing.TB, c Conn, n int) []Message {
	t.Helper()
	var got []Message
	done := make(chan error, 1)
	go func() {
		for len(got) < n {
			msgs := make([]Message, 8)
			for i := range msgs {
				msgs[i].Buf = make([]byte, 9001)
			}
			k, err := c.ReadBatch(msgs)
			if err != nil {
				done <- err
				return
			}
			for _, m := range msgs[:k] {
				m.Buf = append([]byte(nil), m.Data...) // Data is only valid until the next read
				got = append(got, m)
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ReadBatch: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out with %d of %d datagrams", len(got), n)
	}
	return got
}

func msg(payload string, to netip.AddrPort) Message {
	return Message{Buf: []byte(payload), N: len(payload), Addr: to}
}

func TestDatagramsCarryPayloadAndUnmappedSource(t *testing.T) {
	tests := []struct {
		name     string
		listenA  string // receiver
		listenB  string // sender
		dialA    netip.Addr
		wantFrom netip.Addr
	}{
		{"ipv4 to ipv4", "127.0.0.1:0", "127.0.0.1:0", lo4, lo4},
		{"ipv4 to dual-stack zero address", "", "127.0.0.1:0", lo4, lo4},
		{"ipv4 to dual-stack [::]", "[::]:0", "127.0.0.1:0", lo4, lo4},
		{"dual-stack to ipv4 (written v4-mapped)", "127.0.0.1:0", "[::]:0", lo4, lo4},
		{"ipv6 to ipv6", "[::1]:0", "[::1]:0", lo6, lo6},
		{"ipv6 to dual-stack", "[::]:0", "[::1]:0", lo6, lo6},
		{"ipv4 listener on 0.0.0.0", "0.0.0.0:0", "127.0.0.1:0", lo4, lo4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := listen(t, tt.listenA, Options{})
			b := listen(t, tt.listenB, Options{})
			to := netip.AddrPortFrom(tt.dialA, a.LocalAddr().Port())
			if n, err := b.WriteBatch([]Message{msg("one", to), msg("two", to)}); n != 2 || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			got := readN(t, a, 2)
			for i, want := range []string{"one", "two"} {
				if string(got[i].Buf) != want {
					t.Errorf("datagram %d = %q, want %q", i, got[i].Buf, want)
				}
				if got[i].Addr.Addr() != tt.wantFrom || got[i].Addr.Port() != b.LocalAddr().Port() {
					t.Errorf("datagram %d from %v, want %v port %d", i, got[i].Addr, tt.wantFrom, b.LocalAddr().Port())
				}
			}
			// Reply to the reported source reaches the sender.
			if _, err := a.WriteBatch([]Message{msg("back", got[0].Addr)}); err != nil {
				t.Fatalf("reply: %v", err)
			}
			if back := readN(t, b, 1); string(back[0].Buf) != "back" {
				t.Fatalf("reply payload %q", back[0].Buf)
			}
		})
	}
}

func TestLocalAddrReportsChosenPort(t *testing.T) {
	s := listen(t, "127.0.0.1:0", Options{})
	if la := s.LocalAddr(); la.Addr() != lo4 || la.Port() == 0 {
		t.Fatalf("LocalAddr = %v", la)
	}
}

func TestBatchesLargerThanTheSyscallBatch(t *testing.T) {
	a := listen(t, "127.0.0.1:0", Options{Batch: 4, ReadBuffer: 1 << 20})
	b := listen(t, "127.0.0.1:0", Options{Batch: 4})
	const n = 50
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = msg(fmt.Sprintf("p%02d", i), a.LocalAddr())
	}
	if sent, err := b.WriteBatch(msgs); sent != n || err != nil {
		t.Fatalf("WriteBatch = %d, %v", sent, err)
	}
	// A read never returns more than Batch, even when given more room.
	big := make([]Message, 16)
	for i := range big {
		big[i].Buf = make([]byte, 64)
	}
	k, err := a.ReadBatch(big)
	if err != nil || k < 1 || k > 4 {
		t.Fatalf("ReadBatch = %d, %v; want 1..4", k, err)
	}
	var got []Message
	for _, m := range big[:k] {
		m.Buf = append([]byte(nil), m.Data...) // Data is only valid until the next read
		got = append(got, m)
	}
	got = append(got, readN(t, a, n-k)...)
	for i, m := range got {
		if want := fmt.Sprintf("p%02d", i); string(m.Buf) != want {
			t.Fatalf("datagram %d = %q, want %q (loopback keeps order)", i, m.Buf, want)
		}
	}
}

func TestIPv6DestinationOnIPv4SocketFailsAtItsIndex(t *testing.T) {
	a := listen(t, "127.0.0.1:0", Options{})
	b := listen(t, "127.0.0.1:0", Options{})
	msgs := []Message{
		msg("ok", a.LocalAddr()),
		msg("bad", netip.AddrPortFrom(lo6, a.LocalAddr().Port())),
		msg("never", a.LocalAddr()),
	}
	n, err := b.WriteBatch(msgs)
	if n != 1 || !errors.Is(err, ErrAddressFamily) {
		t.Fatalf("WriteBatch = %d, %v; want 1, ErrAddressFamily", n, err)
	}
	if got := readN(t, a, 1); string(got[0].Buf) != "ok" {
		t.Fatalf("got %q", got[0].Buf)
	}
	if n, err := b.WriteBatch(msgs[2:]); n != 1 || err != nil {
		t.Fatalf("resuming after the failed datagram: %d, %v", n, err)
	}
	if got := readN(t, a, 1); string(got[0].Buf) != "never" {
		t.Fatalf("got %q", got[0].Buf)
	}
}

func TestTruncatesDatagramsLongerThanTheBuffer(t *testing.T) {
	a := listen(t, "127.0.0.1:0", Options{})
	b := listen(t, "127.0.0.1:0", Options{})
	if _, err := b.WriteBatch([]Message{msg("0123456789", a.LocalAddr())}); err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Buf: make([]byte, 4)}}
	if n, err := a.ReadBatch(msgs); n != 1 || err != nil || string(msgs[0].Data) != "0123" {
		t.Fatalf("ReadBatch = %d, %v, %q", n, err, msgs[0].Data)
	}
}

func TestCloseUnblocksReaderWithErrClosed(t *testing.T) {
	s := listen(t, "127.0.0.1:0", Options{})
	errc := make(chan error, 1)
	go func() {
		_, err := s.ReadBatch([]Message{{Buf: make([]byte, 100)}})
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the reader block in the poller
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("ReadBatch after Close: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	if _, err := s.WriteBatch([]Message{msg("x", s.LocalAddr())}); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteBatch after Close: %v", err)
	}
	if _, err := s.ReadBatch([]Message{{Buf: make([]byte, 1)}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestReusePortLetsTwoSocketsShareAPort(t *testing.T) {
	a := listen(t, "127.0.0.1:0", Options{ReusePort: true})
	if _, err := Listen(a.LocalAddr(), Options{}); err == nil {
		t.Fatal("second socket without ReusePort bound the same port")
	}
	b, err := Listen(a.LocalAddr(), Options{ReusePort: true})
	if err != nil {
		t.Fatalf("ReusePort: %v", err)
	}
	b.Close()
}

func TestListenErrorsAreWrapped(t *testing.T) {
	a := listen(t, "127.0.0.1:0", Options{})
	_, err := Listen(a.LocalAddr(), Options{})
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("error %v does not wrap the net.OpError", err)
	}
}

func TestBufferSizesAreApplied(t *testing.T) {
	const want = 8 << 20 // above the default net.core.rmem_max of most machines
	s := listen(t, "127.0.0.1:0", Options{ReadBuffer: want, WriteBuffer: want})
	r, w, err := s.BufferSizes()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// SO_*BUFFORCE ignores the sysctl caps; the kernel reports double.
		if r < want || w < want {
			t.Fatalf("as root, buffers = %d/%d, want >= %d", r, w, want)
		}
		return
	}
	d := listen(t, "127.0.0.1:0", Options{})
	dr, dw, _ := d.BufferSizes()
	if r <= dr || w <= dw {
		t.Fatalf("buffers %d/%d not above the defaults %d/%d", r, w, dr, dw)
	}
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	a := listen(t, "127.0.0.1:0", Options{Batch: 8, ReadBuffer: 1 << 20})
	b := listen(t, "127.0.0.1:0", Options{Batch: 8})
	out := make([]Message, 8)
	in := make([]Message, 8)
	for i := range out {
		out[i] = Message{Buf: bytes.Repeat([]byte{byte(i)}, 1200), N: 1200, Addr: a.LocalAddr()}
		in[i].Buf = make([]byte, 1500)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := b.WriteBatch(out); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(out); {
			n, err := a.ReadBatch(in[got:])
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per batch of 8", allocs)
	}
	// Data is only valid until the next read: check one batch right after its reads.
	if _, err := b.WriteBatch(out[3:4]); err != nil {
		t.Fatal(err)
	}
	if n, err := a.ReadBatch(in[:1]); n != 1 || err != nil {
		t.Fatalf("ReadBatch = %d, %v", n, err)
	}
	if in[0].Addr != b.LocalAddr() || in[0].N != 1200 || len(in[0].Data) != 1200 || in[0].Data[0] != 3 {
		t.Fatalf("last read: %v %d %d", in[0].Addr, in[0].N, in[0].Data[0])
	}
}

func BenchmarkLoopback(b *testing.B) {
	for _, c := range []struct {
		size    int
		offload bool
	}{{1, false}, {64, false}, {64, true}} {
		size := c.size
		b.Run(fmt.Sprintf("batch=%d/offload=%v", size, c.offload), func(b *testing.B) {
			rx := listen(b, "127.0.0.1:0", Options{Batch: size, ReadBuffer: 4 << 20, DisableGRO: !c.offload})
			tx := listen(b, "127.0.0.1:0", Options{Batch: size, WriteBuffer: 4 << 20, DisableGSO: !c.offload})
			out := make([]Message, size)
			in := make([]Message, size)
			for i := range out {
				out[i] = Message{Buf: make([]byte, 1400), N: 1400, Addr: rx.LocalAddr()}
				in[i].Buf = make([]byte, 1500)
			}
			b.SetBytes(int64(1400 * size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tx.WriteBatch(out); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < size; {
					n, err := rx.ReadBatch(in[got:])
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
		})
	}
}

func TestDropsCountsAFullReceiveBuffer(t *testing.T) {
	a := listen(t, "127.0.0.1:0", Options{ReadBuffer: 4096})
	// Without GSO: one 64 KB GSO send would be queued whole as a single skb.
	b := listen(t, "127.0.0.1:0", Options{DisableGSO: true})
	if d, err := a.Drops(); err != nil || d != 0 {
		t.Fatalf("fresh socket: Drops = %d, %v", d, err)
	}
	msgs := make([]Message, 64)
	for i := range msgs {
		msgs[i] = Message{Buf: make([]byte, 1000), N: 1000, Addr: a.LocalAddr()}
	}
	if _, err := b.WriteBatch(msgs); err != nil {
		t.Fatal(err)
	}
	d, err := a.Drops()
	if err != nil || d == 0 {
		t.Fatalf("64 KB into a 4 KB buffer: Drops = %d, %v", d, err)
	}
}

// gsoBatch is 64 datagrams: two runs to one address (equal sizes, then a short tail), a
// run to another address, and single odd ones, so that every coalescing rule is exercised.
func gsoBatch(a, b netip.AddrPort) []Message {
	var msgs []Message
	add := func(to netip.AddrPort, size int) {
		p := make([]byte, size)
		for i := range p {
			p[i] = byte(len(msgs))
		}
		msgs = append(msgs, Message{Buf: p, N: size, Addr: to})
	}
	for range 20 {
		add(a, 1200)
	}
	add(a, 700) // short tail ends the run
	add(a, 1200)
	for range 10 {
		add(b, 500)
	}
	add(a, 0) // empty datagram
	for len(msgs) < 64 {
		add(a, 1000+len(msgs)) // growing sizes: never coalesced
	}
	return msgs
}

func TestGSOSendsTheSameDatagrams(t *testing.T) {
	for _, tt := range []struct {
		name       string
		opts       Options
		noCheck    bool // SO_NO_CHECK makes the kernel refuse segmented sends (EINVAL)
		wantGSO    bool
		wantRetrys bool
	}{
		{"gso", Options{}, false, true, false},
		{"gso refused by the kernel falls back", Options{}, true, true, true},
		{"gso disabled", Options{DisableGSO: true}, false, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ra := listen(t, "127.0.0.1:0", Options{ReadBuffer: 4 << 20})                   // GRO
			rb := listen(t, "127.0.0.1:0", Options{ReadBuffer: 4 << 20, DisableGRO: true}) // plain
			if ra.gro == nil || rb.gro != nil {
				t.Fatalf("GRO on receivers: %v, %v", ra.gro != nil, rb.gro != nil)
			}
			tx := listen(t, "127.0.0.1:0", tt.opts)
			if tx.gso != tt.wantGSO {
				t.Fatalf("gso = %v, want %v", tx.gso, tt.wantGSO)
			}
			if tt.noCheck {
				tx.rc.Control(func(fd uintptr) {
					if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1); err != nil {
						t.Fatal(err)
					}
				})
			}
			msgs := gsoBatch(ra.LocalAddr(), rb.LocalAddr())
			if n, err := tx.WriteBatch(msgs); n != len(msgs) || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			if got := tx.wr.gsoFallbacks > 0; got != tt.wantRetrys {
				t.Fatalf("fallbacks = %d", tx.wr.gsoFallbacks)
			}
			var wantA, wantB []Message
			for _, m := range msgs {
				if m.Addr == ra.LocalAddr() {
					wantA = append(wantA, m)
				} else {
					wantB = append(wantB, m)
				}
			}
			for _, side := range []struct {
				rx   *Socket
				want []Message
			}{{ra, wantA}, {rb, wantB}} {
				got := readN(t, side.rx, len(side.want))
				for i, m := range got {
					if !bytes.Equal(m.Buf, side.want[i].Buf[:side.want[i].N]) || m.Addr != tx.LocalAddr() {
						t.Fatalf("datagram %d: %d bytes of %d from %v, want %d bytes of %d",
							i, len(m.Buf), firstByte(m.Buf), m.Addr, side.want[i].N, firstByte(side.want[i].Buf))
					}
				}
			}
			// On loopback a GSO send reaches a GRO socket unsplit.
			if coalesced := ra.gro.coalesced > 0; coalesced != (tt.wantGSO && !tt.noCheck) {
				t.Errorf("GRO receiver coalesced %d entries", ra.gro.coalesced)
			}
		})
	}
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// listen.so_mark: the mark is on the socket, and without CAP_NET_ADMIN Listen fails rather
// than send unmarked datagrams.
func TestListenSetsSOMark(t *testing.T) {
	s, err := ListenSocket(netip.MustParseAddrPort("127.0.0.1:0"), Options{Mark: 0x2a})
	if os.Geteuid() != 0 {
		if err == nil || !strings.Contains(err.Error(), "SO_MARK") {
			t.Fatalf("as non-root: err %v, want an SO_MARK error", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mark int
	var gerr error
	if err := s.rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if mark != 0x2a {
		t.Errorf("SO_MARK %#x, want 0x2a", mark)
	}
}
