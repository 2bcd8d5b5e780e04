package udp

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/meshnode/meshnode/internal/testenv"
)

// vethPair creates two network namespaces joined by a veth pair with MTU 1500, addressed
// 198.18.0.1/24 and 198.18.0.2/24, and deletes them afterwards.
func vethPair(t *testing.T) (nsA, nsB string) {
	t.Helper()
	nsA, nsB = testenv.NetNS(t, "mnudp", "a"), testenv.NetNS(t, "mnudp", "b")
	run(t, "ip", "-n", nsA, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", "198.18.0.1/24", "dev", "va")
	run(t, "ip", "-n", nsB, "addr", "add", "198.18.0.2/24", "dev", "vb")
	run(t, "ip", "-n", nsA, "link", "set", "va", "up", "mtu", "1500")
	run(t, "ip", "-n", nsB, "link", "set", "vb", "up", "mtu", "1500")
	return nsA, nsB
}

func run(t *testing.T, args ...string) { t.Helper(); testenv.Run(t, args...) }

// listenIn opens a socket from a thread switched into ns; the socket stays in ns.
func listenIn(t *testing.T, ns string, addr netip.AddrPort, opts Options) *Socket {
	t.Helper()
	var s *Socket
	var err error
	testenv.InNetNS(t, ns, func() { s, err = ListenSocket(addr, opts) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestOffloadsOverVeth sends bursts between namespaces over a 1500-byte link: datagrams
// that fit go out with GSO; ones above the MTU make the kernel refuse GSO (EINVAL), and
// must still arrive, fragmented, through the fallback.
func TestOffloadsOverVeth(t *testing.T) {
	nsA, nsB := vethPair(t)
	tx := listenIn(t, nsA, netip.MustParseAddrPort("198.18.0.1:0"), Options{})
	rx := listenIn(t, nsB, netip.MustParseAddrPort("198.18.0.2:0"), Options{ReadBuffer: 4 << 20})
	for _, size := range []int{1400, 3000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			before := tx.wr.gsoFallbacks
			msgs := make([]Message, 40)
			for i := range msgs {
				p := make([]byte, size)
				p[0], p[size-1] = byte(i), byte(i)
				msgs[i] = Message{Buf: p, N: size, Addr: rx.LocalAddr()}
			}
			if n, err := tx.WriteBatch(msgs); n != len(msgs) || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			got := readN(t, rx, len(msgs))
			for i, m := range got {
				if len(m.Buf) != size || m.Buf[0] != byte(i) || m.Buf[size-1] != byte(i) {
					t.Fatalf("datagram %d: %d bytes, first %d", i, len(m.Buf), firstByte(m.Buf))
				}
				if m.Addr != tx.LocalAddr() {
					t.Fatalf("from %v, want %v", m.Addr, tx.LocalAddr())
				}
			}
			fellBack := tx.wr.gsoFallbacks > before
			if fellBack != (size > 1500) {
				t.Errorf("size %d: GSO fallback %v", size, fellBack)
			}
			if !tx.gso {
				t.Error("an MTU refusal turned GSO off for good")
			}
		})
	}
}
