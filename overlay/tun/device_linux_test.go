package tun_test

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/testenv"
	"github.com/meshnode/meshnode/overlay/tun"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
)

// netns creates a network namespace for the test and deletes it (and every device in it)
// afterwards. Nothing in these tests touches the machine's own namespace.
func netns(t testing.TB) string {
	t.Helper()
	return testenv.NetNS(t, "mntun", "")
}

// netnsTagged is netns for a test that needs more than one namespace: tag tells them apart.
func netnsTagged(t testing.TB, tag string) string {
	t.Helper()
	return testenv.NetNS(t, "mntun", tag)
}

func ip(t testing.TB, args ...string) string {
	t.Helper()
	return testenv.Run(t, append([]string{"ip"}, args...)...)
}

// inNetns runs fn on an OS thread switched into the namespace.
func inNetns(t testing.TB, ns string, fn func()) {
	t.Helper()
	testenv.InNetNS(t, ns, fn)
}

func open(t testing.TB, ns string, opts tun.Options) *tun.Linux {
	t.Helper()
	var d *tun.Linux
	var err error
	inNetns(t, ns, func() { d, err = tun.OpenLinux(opts) })
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// packets reads from each device into one channel until the device is closed.
func packets(devs ...tun.Device) <-chan []byte {
	ch := make(chan []byte, 256)
	for _, d := range devs {
		go func() {
			bufs, sizes := [][]byte{make([]byte, 65535)}, []int{0}
			for {
				n, err := d.Read(bufs, sizes)
				if err != nil {
					return
				}
				if n == 1 {
					ch <- append([]byte(nil), bufs[0][:sizes[0]]...)
				}
			}
		}()
	}
	return ch
}

// await returns the first packet that match accepts, skipping others (the kernel may send
// IPv6 router solicitations and the like into a fresh device).
func await(t *testing.T, ch <-chan []byte, what string, match func(tuntest.Packet) bool) tuntest.Packet {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case b := <-ch:
			if p, err := tuntest.Parse(b); err == nil && match(p) {
				return p
			}
		case <-deadline:
			t.Fatalf("no %s from the device", what)
		}
	}
}

var (
	vpnAddr = netip.MustParsePrefix("10.42.0.1/16")
	peerIP  = netip.MustParseAddr("10.42.0.2")
)

func TestOpenConfiguresTheDevice(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{
		Name: "mesh0", MTU: 1400, Addr: vpnAddr, TxQueueLen: 777,
		Routes: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16"), netip.MustParsePrefix("192.168.77.1/24")},
	})
	if d.Name() != "mesh0" || d.MTU() != 1400 {
		t.Fatalf("Name/MTU = %s/%d", d.Name(), d.MTU())
	}
	link := ip(t, "-n", ns, "link", "show", "mesh0")
	for _, want := range []string{"mtu 1400", "UP", "qlen 777"} {
		if !strings.Contains(link, want) {
			t.Errorf("link lacks %q:\n%s", want, link)
		}
	}
	if addr := ip(t, "-n", ns, "-4", "addr", "show", "dev", "mesh0"); !strings.Contains(addr, "inet 10.42.0.1/16") {
		t.Errorf("address missing:\n%s", addr)
	}
	routes := ip(t, "-n", ns, "-4", "route", "show")
	for _, want := range []string{"10.42.0.0/16 dev mesh0", "10.99.0.0/16 dev mesh0", "192.168.77.0/24 dev mesh0"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}
	if _, err := net.InterfaceByName("mesh0"); err == nil {
		t.Error("mesh0 exists in the machine's namespace")
	}
}

func TestKernelAnswersEchoToItsOwnAddress(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr})
	if d.MTU() != tun.DefaultMTU {
		t.Fatalf("default MTU = %d", d.MTU())
	}
	ch := packets(d)
	req := tuntest.IPv4ICMPEcho(peerIP, vpnAddr.Addr(), 0x4d4e, 1, []byte("meshnode"))
	if n, err := d.Write([][]byte{req}); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	p := await(t, ch, "echo reply", func(p tuntest.Packet) bool {
		return p.Proto == tuntest.ProtoICMP && p.ICMPType == tuntest.ICMPEchoReply && p.ICMPID == 0x4d4e
	})
	if p.Src != vpnAddr.Addr() || p.Dst != peerIP || p.ICMPSeq != 1 || string(p.Data) != "meshnode" {
		t.Fatalf("reply %+v", p)
	}
}

// TestRoutedTrafficIsRead sends from a socket inside the namespace to an address covered
// only by an extra route; the device must yield that datagram.
func TestRoutedTrafficIsRead(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr, Routes: []netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}})
	ch := packets(d)
	var conn *net.UDPConn
	var err error
	inNetns(t, ns, func() { conn, err = net.ListenUDP("udp4", nil) })
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := netip.MustParseAddrPort("10.99.1.1:9")
	if _, err := conn.WriteToUDPAddrPort([]byte("routed"), dst); err != nil {
		t.Fatal(err)
	}
	p := await(t, ch, "routed datagram", func(p tuntest.Packet) bool { return p.Proto == tuntest.ProtoUDP && p.Dst == dst.Addr() })
	if p.DstPort != 9 || string(p.Data) != "routed" || p.Src != vpnAddr.Addr() {
		t.Fatalf("datagram %+v", p)
	}
}

func TestCloseRemovesDeviceAndUnblocksRead(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr})
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
		for {
			if _, err := d.Read(bufs, sizes); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, tun.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := d.Write([][]byte{{0x45}}); !errors.Is(err, tun.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if out, err := exec.Command("ip", "-n", ns, "link", "show", "mesh0").CombinedOutput(); err == nil {
		t.Fatalf("device still exists after Close:\n%s", out)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMultiQueueSpreadsFlowsOverQueues(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr, Queues: 2})
	qs := d.Queues()
	if len(qs) != 2 {
		t.Fatalf("%d queues, want 2", len(qs))
	}
	if qs[1].Name() != "mesh0" || qs[1].MTU() != d.MTU() {
		t.Fatalf("queue 1 is %s/%d", qs[1].Name(), qs[1].MTU())
	}
	if link := ip(t, "-n", ns, "-d", "link", "show", "mesh0"); !strings.Contains(link, "multi_queue") {
		t.Errorf("device is not multi-queue:\n%s", link)
	}
	type arrival struct {
		queue int
		pkt   []byte
	}
	ch := make(chan arrival, 256)
	for i, q := range qs {
		go func() {
			bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
			for {
				if _, err := q.Read(bufs, sizes); err != nil {
					return
				}
				ch <- arrival{i, append([]byte(nil), bufs[0][:sizes[0]]...)}
			}
		}()
	}
	const flows = 32
	var conns []*net.UDPConn
	inNetns(t, ns, func() {
		for range flows {
			c, err := net.ListenUDP("udp4", nil)
			if err != nil {
				t.Error(err)
				return
			}
			conns = append(conns, c)
		}
	})
	for _, c := range conns {
		defer c.Close()
		if _, err := c.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("10.42.5.5:7")); err != nil {
			t.Fatal(err)
		}
	}
	perQueue := map[int]int{}
	flowsSeen := map[uint16]bool{}
	deadline := time.After(5 * time.Second)
	for len(flowsSeen) < flows {
		select {
		case a := <-ch:
			if p, err := tuntest.Parse(a.pkt); err == nil && p.Proto == tuntest.ProtoUDP && p.DstPort == 7 {
				perQueue[a.queue]++
				flowsSeen[p.SrcPort] = true
			}
		case <-deadline:
			t.Fatalf("saw %d of %d flows", len(flowsSeen), flows)
		}
	}
	// The kernel picks the queue by flow hash: 32 flows all on one queue means one queue.
	if perQueue[0] == 0 || perQueue[1] == 0 {
		t.Errorf("flows not spread over queues: %v", perQueue)
	}

	// A packet written to the second queue reaches the kernel too.
	if _, err := qs[1].Write([][]byte{tuntest.IPv4ICMPEcho(peerIP, vpnAddr.Addr(), 9, 9, nil)}); err != nil {
		t.Fatal(err)
	}
	deadline = time.After(5 * time.Second)
	for {
		select {
		case a := <-ch:
			if p, err := tuntest.Parse(a.pkt); err == nil && p.ICMPType == tuntest.ICMPEchoReply && p.ICMPID == 9 {
				return
			}
		case <-deadline:
			t.Fatal("no echo reply to a packet written on queue 1")
		}
	}
}

func TestOpenRequiresAnAddress(t *testing.T) {
	if _, err := tun.Open(tun.Options{Name: "x"}); err == nil {
		t.Fatal("Open without Addr succeeded")
	}
}

func TestOpenFailureLeavesNoDevice(t *testing.T) {
	ns := netns(t)
	var err error
	// The second, identical route fails (EEXIST) after the device exists: Open must undo it.
	bad := netip.PrefixFrom(netip.MustParseAddr("10.99.0.0"), 16)
	inNetns(t, ns, func() {
		_, err = tun.Open(tun.Options{Name: "mesh0", Addr: vpnAddr, Routes: []netip.Prefix{bad, bad}})
	})
	if err == nil {
		t.Fatal("Open with a duplicate route succeeded")
	}
	if out, lerr := exec.Command("ip", "-n", ns, "link", "show", "mesh0").CombinedOutput(); lerr == nil {
		t.Fatalf("failed Open left the device behind:\n%s", out)
	}
}

// BenchmarkEchoThroughKernel writes an echo request into the device and reads the kernel's
// reply: one packet each way through the real device per op.
func BenchmarkEchoThroughKernel(b *testing.B) {
	ns := netns(b)
	d := open(b, ns, tun.Options{Name: "mesh0", Addr: vpnAddr})
	req := [][]byte{tuntest.IPv4ICMPEcho(peerIP, vpnAddr.Addr(), 1, 1, make([]byte, 1200))}
	bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Write(req); err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := d.Read(bufs, sizes); err != nil {
				b.Fatal(err)
			}
			if sizes[0] == len(req[0]) && bufs[0][20] == tuntest.ICMPEchoReply {
				break
			}
		}
	}
}

func TestOpenConfiguresIPv6AddressesAndRoutes(t *testing.T) {
	ns := netns(t)
	open(t, ns, tun.Options{
		Name: "mesh6", Addr: netip.MustParsePrefix("fd42::1/64"),
		Routes: []netip.Prefix{netip.MustParsePrefix("fd99::/48"), netip.MustParsePrefix("10.99.0.0/16")},
	})
	if addr := ip(t, "-n", ns, "-6", "addr", "show", "dev", "mesh6"); !strings.Contains(addr, "inet6 fd42::1/64") {
		t.Errorf("address missing:\n%s", addr)
	}
	routes := ip(t, "-n", ns, "-6", "route", "show")
	for _, want := range []string{"fd42::/64 dev mesh6", "fd99::/48 dev mesh6"} {
		if !strings.Contains(routes, want) {
			t.Errorf("routes lack %q:\n%s", want, routes)
		}
	}
	if r4 := ip(t, "-n", ns, "-4", "route", "show"); !strings.Contains(r4, "10.99.0.0/16 dev mesh6") {
		t.Errorf("IPv4 route on an IPv6-addressed device missing:\n%s", r4)
	}
}

// TestAddAndDeleteRouteWithMTUAndMetric changes routes on a running device, as a reload of
// tun.unsafe_routes does: the kernel must show the route's MTU and metric, and forget it.
func TestAddAndDeleteRouteWithMTUAndMetric(t *testing.T) {
	ns := netns(t)
	d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr})
	r := tun.Route{Dst: netip.MustParsePrefix("198.19.7.0/24"), MTU: 1200, Metric: 77}
	var err error
	inNetns(t, ns, func() { err = d.AddRoute(r) })
	if err != nil {
		t.Fatal(err)
	}
	got := ip(t, "-n", ns, "route", "show", "198.19.7.0/24")
	if !strings.Contains(got, "dev mesh0") || !strings.Contains(got, "metric 77") || !strings.Contains(got, "mtu 1200") {
		t.Fatalf("route after AddRoute: %q", got)
	}
	inNetns(t, ns, func() { err = d.AddRoute(r) })
	if err == nil {
		t.Fatal("adding the same route twice succeeded")
	}
	inNetns(t, ns, func() { err = d.DeleteRoute(r) })
	if err != nil {
		t.Fatal(err)
	}
	if got := ip(t, "-n", ns, "route", "show", "198.19.7.0/24"); strings.TrimSpace(got) != "" {
		t.Fatalf("route after DeleteRoute: %q", got)
	}
}
