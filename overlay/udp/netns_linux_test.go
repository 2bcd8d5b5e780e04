package udp

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/meshnode/meshnode/internal/testenv"
)

// vethPair creates two network namespaces joined by a veth pair with MTU 1500, addressed
// 198.18.0.1/24 and 198.18.0.2/24, and deletes them afterwards.
func vethPair(t *testing.T) (nsA, nsB string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "ip")
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	base := fmt.Sprintf("mnudp-%d-%08x", os.Getpid(), h.Sum32())
	nsA, nsB = base+"-a", base+"-b"
	for _, ns := range []string{nsA, nsB} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	run(t, "ip", "-n", nsA, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", "198.18.0.1/24", "dev", "va")
	run(t, "ip", "-n", nsB, "addr", "add", "198.18.0.2/24", "dev", "vb")
	run(t, "ip", "-n", nsA, "link", "set", "va", "up", "mtu", "1500")
	run(t, "ip", "-n", nsB, "link", "set", "vb", "up", "mtu", "1500")
	return nsA, nsB
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// listenIn opens a socket from a thread switched into ns; the socket stays in ns.
func listenIn(t *testing.T, ns string, addr netip.AddrPort, opts Options) *Socket {
	t.Helper()
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer unix.Close(orig)
	target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	s, lerr := ListenSocket(addr, opts)
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		t.Fatalf("setns back: %v", err) // the thread stays locked and is discarded
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		t.Fatal(lerr)
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
