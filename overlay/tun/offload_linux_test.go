package tun_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay/tun"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
)

// bridge copies packets from one device to the other until either is closed: the wire
// between two namespaces, as the overlay would be, minus the encryption.
func bridge(t *testing.T, from, to tun.Device, batch int) {
	t.Helper()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, from.MTU()+64)
	}
	sizes := make([]int, batch)
	out := make([][]byte, batch)
	for {
		n, err := from.Read(bufs, sizes)
		if err != nil {
			return
		}
		for i := range n {
			out[i] = bufs[i][:sizes[i]]
		}
		if _, err := to.Write(out[:n]); err != nil {
			if errors.Is(err, tun.ErrClosed) {
				return
			}
			t.Errorf("write to %s: %v", to.Name(), err)
			return
		}
	}
}

// transfer sends size random bytes over TCP from a socket in ns a to a listener in ns b at
// dst, and checks that the SHA-256 of what arrived matches.
func transfer(t *testing.T, a, b string, dst netip.AddrPort, size int) {
	t.Helper()
	var ln net.Listener
	var err error
	inNetns(t, b, func() { ln, err = net.Listen("tcp", dst.String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	var c net.Conn
	inNetns(t, a, func() { c, err = net.DialTimeout("tcp", dst.String(), 5*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	// Writes of odd sizes, so that the kernel makes super-packets of every shape (and sends
	// PSH in the middle of the stream).
	for off, step := 0, uint32(1); off < len(data); step = step*7 + 3 {
		n := min(int(step%200000)+1, len(data)-off)
		if _, err := c.Write(data[off : off+n]); err != nil {
			t.Fatalf("send: %v", err)
		}
		off += n
	}
	c.Close()
	select {
	case r := <-got:
		if r.err != nil || r.n != int64(size) || r.sum != want {
			t.Fatalf("received %d of %d bytes, err %v, sha256 match %v", r.n, size, r.err, r.sum == want)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("transfer did not finish")
	}
}

func noDAD(t *testing.T, ns string) {
	t.Helper()
	for _, k := range []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"} {
		if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", k).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s: %v: %s", k, err, out)
		}
	}
}

// TestOffloadTCPTransfer joins two namespaces by their TUN devices, copying packets between
// them in this process, and sends TCP across: the kernel hands us super-packets, which are
// split, and takes the segments back joined; the data must arrive intact.
func TestOffloadTCPTransfer(t *testing.T) {
	for _, tc := range []struct {
		name         string
		offA, offB   bool
		addrA, addrB netip.Prefix
	}{
		{"v4", true, true, netip.MustParsePrefix("10.42.0.1/24"), netip.MustParsePrefix("10.42.0.2/24")},
		{"v6", true, true, netip.MustParsePrefix("fd42::1/64"), netip.MustParsePrefix("fd42::2/64")},
		{"v4-offload-to-plain", true, false, netip.MustParsePrefix("10.42.0.1/24"), netip.MustParsePrefix("10.42.0.2/24")},
		{"v4-plain-to-offload", false, true, netip.MustParsePrefix("10.42.0.1/24"), netip.MustParsePrefix("10.42.0.2/24")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := netnsTagged(t, "a"), netnsTagged(t, "b")
			noDAD(t, a)
			noDAD(t, b)
			da := open(t, a, tun.Options{Name: "mesh0", MTU: 1300, Addr: tc.addrA, Offload: tc.offA})
			db := open(t, b, tun.Options{Name: "mesh0", MTU: 1300, Addr: tc.addrB, Offload: tc.offB})
			if da.Offload() != tc.offA || db.Offload() != tc.offB {
				t.Fatalf("Offload() = %v/%v", da.Offload(), db.Offload())
			}
			if tc.offA {
				if feat := ethtool(t, a); !strings.Contains(feat, "tcp-segmentation-offload: on") {
					t.Errorf("device does not do TSO:\n%s", feat)
				}
			}
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); bridge(t, da, db, 64) }()
			go func() { defer wg.Done(); bridge(t, db, da, 64) }()
			defer func() { da.Close(); db.Close(); wg.Wait() }()

			transfer(t, a, b, netip.AddrPortFrom(tc.addrB.Addr(), 5201), 32<<20)
			transfer(t, b, a, netip.AddrPortFrom(tc.addrA.Addr(), 5202), 8<<20)

			sa, sb := da.OffloadStats(), db.OffloadStats()
			t.Logf("A: %+v", sa)
			t.Logf("B: %+v", sb)
			// Each side splits what its kernel sends; it joins what the other side read in
			// batches, which a plain device (one packet per read) does not give it.
			for _, s := range []struct {
				name      string
				off, peer bool
				st        tun.OffloadStats
			}{{"A", tc.offA, tc.offB, sa}, {"B", tc.offB, tc.offA, sb}} {
				if s.off && (s.st.Split == 0 || s.st.Segments <= s.st.Split) {
					t.Errorf("%s split nothing: %+v", s.name, s.st)
				}
				if s.off && s.peer && (s.st.Coalesced == 0 || s.st.Joined <= s.st.Coalesced) {
					t.Errorf("%s joined nothing: %+v", s.name, s.st)
				}
			}
			if sa.Dropped+sb.Dropped+sa.Fallbacks+sb.Fallbacks != 0 {
				t.Errorf("drops or fallbacks: %+v %+v", sa, sb)
			}
		})
	}
}

// ethtool returns the offload features of mesh0 in ns, or "" without ethtool.
func ethtool(t *testing.T, ns string) string {
	t.Helper()
	if _, err := exec.LookPath("ethtool"); err != nil {
		return "tcp-segmentation-offload: on (ethtool not installed)"
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "ethtool", "-k", "mesh0").CombinedOutput()
	if err != nil {
		t.Fatalf("ethtool: %v: %s", err, out)
	}
	return string(out)
}

// TestOffloadDeviceAnswersEcho: packets that are not TCP pass both ways unchanged.
func TestOffloadDeviceAnswersEcho(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr, Offload: true})
	ch := packets(d)
	req := tuntest.IPv4ICMPEcho(peerIP, vpnAddr.Addr(), 0x4d4e, 7, []byte("offload"))
	if n, err := d.Write([][]byte{req}); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	p := await(t, ch, "echo reply", func(p tuntest.Packet) bool {
		return p.Proto == tuntest.ProtoICMP && p.ICMPType == tuntest.ICMPEchoReply && p.ICMPID == 0x4d4e
	})
	if p.Src != vpnAddr.Addr() || p.ICMPSeq != 7 || string(p.Data) != "offload" {
		t.Fatalf("reply %+v", p)
	}
}

// TestOffloadMultiQueueCloses: every queue of a multi-queue device gets offloads, and Close
// unblocks a Read, fails later Writes with ErrClosed and removes the device.
func TestOffloadMultiQueueCloses(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr, Queues: 2, Offload: true})
	if link := ip(t, "-n", ns, "-d", "link", "show", "mesh0"); !strings.Contains(link, "multi_queue") {
		t.Errorf("device is not multi-queue:\n%s", link)
	}
	qs := d.Queues()
	errc := make(chan error, len(qs))
	for _, q := range qs {
		go func() {
			bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
			for {
				if _, err := q.Read(bufs, sizes); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for range qs {
		select {
		case err := <-errc:
			if !errors.Is(err, tun.ErrClosed) {
				t.Fatalf("Read after Close: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Close did not unblock Read")
		}
	}
	pkt := tuntest.IPv4ICMPEcho(peerIP, vpnAddr.Addr(), 1, 1, nil)
	for _, q := range qs {
		if _, err := q.Write([][]byte{pkt}); !errors.Is(err, tun.ErrClosed) {
			t.Fatalf("Write after Close: %v", err)
		}
	}
	if out, err := exec.Command("ip", "-n", ns, "link", "show", "mesh0").CombinedOutput(); err == nil {
		t.Fatalf("device still exists after Close:\n%s", out)
	}
}

// TestOffloadPathsDoNotAllocate: a write that joins segments, a plain write and the reads
// that follow allocate nothing.
func TestOffloadPathsDoNotAllocate(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr, Offload: true})
	// Two segments of one flow from the peer to a closed port: joined on write; the kernel
	// answers with a RST, which the reads below take along.
	segs := [][]byte{
		tcp4(peerIP, vpnAddr.Addr(), 1, 1000, make([]byte, 1000)),
		tcp4(peerIP, vpnAddr.Addr(), 2, 2000, make([]byte, 1000)),
	}
	echo := [][]byte{tuntest.IPv4ICMPEcho(peerIP, vpnAddr.Addr(), 0x77, 1, make([]byte, 100))}
	bufs, sizes := [][]byte{make([]byte, 1500), make([]byte, 1500)}, []int{0, 0}
	round := func() {
		if _, err := d.Write(segs); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Write(echo); err != nil {
			t.Fatal(err)
		}
		for {
			n, err := d.Read(bufs, sizes)
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 && sizes[0] == len(echo[0]) && bufs[0][9] == 1 && bufs[0][20] == tuntest.ICMPEchoReply {
				return
			}
		}
	}
	round()
	if allocs := testing.AllocsPerRun(50, round); allocs != 0 {
		t.Fatalf("%v allocations per round", allocs)
	}
	if s := d.OffloadStats(); s.Coalesced == 0 {
		t.Fatalf("the segments were not joined: %+v", s)
	}
}

// tcp4 builds an IPv4 TCP ACK segment with DF, from port 40000 to 9, checksums included.
func tcp4(src, dst netip.Addr, id uint16, seq uint32, payload []byte) []byte {
	p := make([]byte, 40+len(payload))
	p[0], p[6], p[8], p[9] = 0x45, 0x40, 64, 6
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], id)
	copy(p[12:16], src.AsSlice())
	copy(p[16:20], dst.AsSlice())
	binary.BigEndian.PutUint16(p[10:], ^sum16(0, p[:20]))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 9)
	binary.BigEndian.PutUint32(p[24:], seq)
	p[32], p[33] = 5<<4, 0x10
	binary.BigEndian.PutUint16(p[34:], 1000)
	copy(p[40:], payload)
	pseudo := sum16(uint32(6+len(p)-20), p[12:20])
	binary.BigEndian.PutUint16(p[36:], ^sum16(uint32(pseudo), p[20:]))
	return p
}

func sum16(s uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
