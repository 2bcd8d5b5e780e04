package overlay_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/header"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// lighthouseMesh is one lighthouse (index 0, no TUN) and hosts whose configs list only it.
// Hosts listed in natted sit behind their own NAT of the given kind.
func lighthouseMesh(t *testing.T, hosts int, nat map[int]udptest.NATKind) *mesh {
	return lighthouseMeshRelay(t, hosts, nat, false, "")
}

// lighthouseMeshRelay is lighthouseMesh where, with relay set, the lighthouse is also a
// relay that every host lists.
func lighthouseMeshRelay(t *testing.T, hosts int, nat map[int]udptest.NATKind, relay bool, lhExtra string) *mesh {
	t.Helper()
	m := &mesh{t: t, ca: certtest.NewCA(t, "lh-test"), net: udptest.NewNetwork(7)}
	for i := range hosts + 1 {
		h := &meshHost{name: fmt.Sprintf("host%d", i), vpn: vpnOf(i), under: underOf(i)}
		if i == 0 {
			h.name, h.noTun = "lighthouse", true
		}
		if kind, ok := nat[i]; ok {
			// Inside 192.168.i.0/24, public address 198.18.i.1.
			inside := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 0}), 24)
			if err := m.net.AddNAT(inside, netip.AddrFrom4([4]byte{198, 18, byte(i), 1}), kind); err != nil {
				t.Fatal(err)
			}
			h.under = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 2}), 4242)
		}
		h.host = m.ca.NewHost(t, h.name, h.vpn.String()+"/16", "mesh")
		m.hosts = append(m.hosts, h)
	}
	lh := m.hosts[0]
	m.configFn = func(i int) string {
		y := "listen:\n  port: 4242\n"
		y += "handshakes:\n  try_interval: 50ms\n  retries: 20\n"
		y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"
		if i == 0 {
			if relay {
				y += "relay:\n  am_relay: true\n"
			}
			return y + "tun:\n  disabled: true\nlighthouse:\n  am_lighthouse: true\n" + lhExtra
		}
		if relay {
			y += fmt.Sprintf("relay:\n  relays: [%q]\n", lh.vpn.String())
		}
		y += fmt.Sprintf("static_host_map:\n  %q: [%q]\n", lh.vpn.String(), lh.under.String())
		y += fmt.Sprintf("lighthouse:\n  interval: 1\n  hosts: [%q]\n", lh.vpn.String())
		y += "punchy:\n  punch: true\n  respond: true\n  delay: 50ms\n"
		return y
	}
	for i := range m.hosts {
		m.start(i)
	}
	t.Cleanup(func() {
		for i := range m.hosts {
			m.stop(i)
		}
	})
	return m
}

func TestHostsListingOnlyALighthouseReachEachOtherDirectly(t *testing.T) {
	m := lighthouseMesh(t, 3, nil)
	for i := 1; i < len(m.hosts); i++ {
		for j := 1; j < len(m.hosts); j++ {
			if i != j {
				m.sendUntil(i, j, m.udpPacket(i, j, fmt.Sprintf("via lighthouse %d->%d", i, j)), 10*time.Second)
			}
		}
	}
	for i := 1; i < len(m.hosts); i++ {
		for j := 1; j < len(m.hosts); j++ {
			if i == j {
				continue
			}
			p, ok := m.hosts[i].node.Tunnel(m.hosts[j].vpn)
			if !ok || p.Remote != m.hosts[j].under {
				t.Errorf("%s -> %s: tunnel %v remote %v, want direct to %v", m.hosts[i].name, m.hosts[j].name, ok, p.Remote, m.hosts[j].under)
			}
		}
	}
}

func TestHostsBehindNATsPunchThrough(t *testing.T) {
	m := lighthouseMesh(t, 2, map[int]udptest.NATKind{1: udptest.EasyNAT, 2: udptest.EasyNAT})
	m.sendUntil(1, 2, m.udpPacket(1, 2, "through two NATs"), 15*time.Second)
	m.sendUntil(2, 1, m.udpPacket(2, 1, "and back"), 5*time.Second)
	p, _ := m.hosts[1].node.Tunnel(m.hosts[2].vpn)
	if want := netip.AddrFrom4([4]byte{198, 18, 2, 1}); p.Remote.Addr() != want {
		t.Errorf("tunnel goes to %v, want host2's NAT %v", p.Remote, want)
	}
}

func TestLighthouseRefusesUpdateForAnotherHostsIP(t *testing.T) {
	m := lighthouseMesh(t, 2, nil)
	m.sendUntil(1, 2, m.udpPacket(1, 2, "warm up"), 10*time.Second)
	// host1 claims to be host2: the lighthouse must keep host2's true address.
	before := m.hosts[0].node.Dropped("lighthouse_invalid")
	m.hosts[1].node.SendLighthouseForTest(m.hosts[0].vpn, overlay.ForgedUpdate(m.hosts[2].vpn, netip.MustParseAddrPort("198.18.0.66:4242")))
	eventually(t, 2*time.Second, "forged update refused", func() bool {
		return m.hosts[0].node.Dropped("lighthouse_invalid") > before
	})
}

func TestHostsBehindSymmetricNATsConnectThroughARelay(t *testing.T) {
	m := lighthouseMeshRelay(t, 2, map[int]udptest.NATKind{1: udptest.HardNAT, 2: udptest.HardNAT}, true, "")
	m.sendUntil(1, 2, m.udpPacket(1, 2, "through the relay"), 15*time.Second)
	m.sendUntil(2, 1, m.udpPacket(2, 1, "and back"), 5*time.Second)
	p, _ := m.hosts[1].node.Tunnel(m.hosts[2].vpn)
	if p.RelayedVia != m.hosts[0].vpn {
		t.Errorf("tunnel host1->host2 is %+v, want relayed via the lighthouse", p)
	}
}

func TestRelayedTunnelMovesToDirectPathWhenOneAppears(t *testing.T) {
	// Both hosts are reachable, so a relay may be tried but the direct path must win.
	m := lighthouseMeshRelay(t, 2, nil, true, "")
	m.sendUntil(1, 2, m.udpPacket(1, 2, "direct please"), 10*time.Second)
	eventually(t, 5*time.Second, "direct tunnel", func() bool {
		p, ok := m.hosts[1].node.Tunnel(m.hosts[2].vpn)
		return ok && !p.RelayedVia.IsValid() && p.Remote == m.hosts[2].under
	})
}

func TestReplayedRelayFramesAreNotForwarded(t *testing.T) {
	m := lighthouseMeshRelay(t, 2, map[int]udptest.NATKind{1: udptest.HardNAT, 2: udptest.HardNAT}, true, "")
	var mu sync.Mutex
	var frame []byte
	var frameFrom netip.AddrPort
	m.net.Tap(func(from, to netip.AddrPort, b []byte) bool {
		if to == m.hosts[0].under && len(b) > 2*header.Len && b[0]&0x0f == byte(header.Message) && b[1] == header.SubtypeRelay {
			mu.Lock()
			frame, frameFrom = append([]byte(nil), b...), from
			mu.Unlock()
		}
		return true
	})
	m.sendUntil(1, 2, m.udpPacket(1, 2, "relayed"), 15*time.Second)
	// Let copies sendUntil retransmitted land before judging what the replays deliver.
	time.Sleep(300 * time.Millisecond)
	drain(m.hosts[2].dev)
	mu.Lock()
	replay, src := frame, frameFrom
	mu.Unlock()
	if replay == nil {
		t.Fatal("no relay frame seen")
	}
	before := m.hosts[0].node.Dropped("replay")
	for range 100 {
		m.net.Inject(src, m.hosts[0].under, replay)
	}
	eventually(t, 2*time.Second, "100 replayed frames counted at the relay", func() bool {
		return m.hosts[0].node.Dropped("replay")-before >= 100
	})
	select {
	case p := <-m.hosts[2].dev.Delivered():
		t.Fatalf("a replayed relay frame reached host2: %x", p)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestLighthouseServesDNSForHostNamesFromCerts(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close()
	host, port, _ := net.SplitHostPort(addr)
	m := lighthouseMeshRelay(t, 2, nil, false, fmt.Sprintf("  serve_dns: true\n  dns:\n    host: %s\n    port: %s\n", host, port))
	m.sendUntil(1, 2, m.udpPacket(1, 2, "warm up"), 10*time.Second)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	eventually(t, 3*time.Second, "DNS answer for host1", func() bool {
		got, err = r.LookupHost(ctx, "host1")
		return err == nil
	})
	if len(got) != 1 || got[0] != m.hosts[1].vpn.String() {
		t.Fatalf("host1 resolved to %v, want %v", got, m.hosts[1].vpn)
	}
	if _, err := r.LookupHost(ctx, "nosuchhost"); err == nil {
		t.Fatal("unknown name resolved")
	}
}

// TestTwoLighthousesAreNoSinglePointOfFailure: four hosts list two lighthouses; all pairs
// connect; with one lighthouse stopped new tunnels still form through the other; with both
// stopped, existing tunnels keep working.
func TestTwoLighthousesAreNoSinglePointOfFailure(t *testing.T) {
	m := &mesh{t: t, ca: certtest.NewCA(t, "lh2-test"), net: udptest.NewNetwork(9)}
	const lhs, hosts = 2, 4
	for i := range lhs + hosts {
		h := &meshHost{name: fmt.Sprintf("host%d", i), vpn: vpnOf(i), under: underOf(i), noTun: i < lhs}
		if i < lhs {
			h.name = fmt.Sprintf("lighthouse%d", i)
		}
		h.host = m.ca.NewHost(t, h.name, h.vpn.String()+"/16", "mesh")
		m.hosts = append(m.hosts, h)
	}
	m.configFn = func(i int) string {
		y := "listen:\n  port: 4242\nhandshakes:\n  try_interval: 50ms\n  retries: 20\n"
		y += "timers:\n  connection_alive_interval: 1s\n  pending_deletion_interval: 2s\n"
		y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"
		if i < lhs {
			return y + "tun:\n  disabled: true\nlighthouse:\n  am_lighthouse: true\n"
		}
		y += "static_host_map:\n"
		for j := range lhs {
			y += fmt.Sprintf("  %q: [%q]\n", m.hosts[j].vpn.String(), m.hosts[j].under.String())
		}
		y += fmt.Sprintf("lighthouse:\n  interval: 1\n  hosts: [%q, %q]\n", m.hosts[0].vpn.String(), m.hosts[1].vpn.String())
		return y
	}
	for i := range m.hosts {
		m.start(i)
	}
	t.Cleanup(func() {
		for i := range m.hosts {
			m.stop(i)
		}
	})
	first, last := lhs, lhs+hosts-1
	for i := first; i <= last; i++ {
		for j := first; j <= last; j++ {
			if i != j {
				m.sendUntil(i, j, m.udpPacket(i, j, fmt.Sprintf("%d->%d", i, j)), 10*time.Second)
			}
		}
	}
	// One lighthouse down: a host that restarts (forgetting everything) finds its peers
	// through the other one.
	m.stop(0)
	m.stop(first)
	m.start(first)
	m.sendUntil(first, last, m.udpPacket(first, last, "via the second lighthouse"), 10*time.Second)
	// Both down: tunnels that exist keep carrying traffic, past the liveness timers.
	m.stop(1)
	time.Sleep(3 * time.Second)
	m.sendUntil(first, last, m.udpPacket(first, last, "no lighthouse left"), 2*time.Second)
	m.sendUntil(last, first+1, m.udpPacket(last, first+1, "old tunnel"), 2*time.Second)
}

// TestRelayedTunnelProbesAndMovesToTheDirectPathOnceItOpens: issue 15. The direct path is
// cut when the tunnel forms, so it runs through the relay; once the path heals, the relayed
// tunnel's periodic direct probe moves both ends to it, without a new handshake.
func TestRelayedTunnelProbesAndMovesToTheDirectPathOnceItOpens(t *testing.T) {
	m := lighthouseMeshRelay(t, 2, nil, true, "")
	const every = 3 * time.Second
	for _, h := range m.hosts {
		h.node.SetRelayProbeIntervalForTest(every)
	}
	m.net.Partition(m.hosts[1].under.Addr(), m.hosts[2].under.Addr())
	m.sendUntil(1, 2, m.udpPacket(1, 2, "through the relay"), 15*time.Second)
	before, ok := m.hosts[1].node.Tunnel(m.hosts[2].vpn)
	if !ok || before.RelayedVia != m.hosts[0].vpn {
		t.Fatalf("tunnel host1->host2 is %+v, want relayed via the lighthouse", before)
	}
	// The first probes go out while the path is still cut: what moves the tunnel later is
	// a later round.
	time.Sleep(every / 2)
	if p, _ := m.hosts[1].node.Tunnel(m.hosts[2].vpn); !p.RelayedVia.IsValid() {
		t.Fatalf("tunnel left the relay while the direct path was cut: %+v", p)
	}
	m.net.Heal()
	eventually(t, every+5*time.Second, "both ends direct", func() bool {
		p1, ok1 := m.hosts[1].node.Tunnel(m.hosts[2].vpn)
		p2, ok2 := m.hosts[2].node.Tunnel(m.hosts[1].vpn)
		return ok1 && ok2 && !p1.RelayedVia.IsValid() && !p2.RelayedVia.IsValid() && p1.Remote == m.hosts[2].under
	})
	if after, _ := m.hosts[1].node.Tunnel(m.hosts[2].vpn); after.LocalIndex != before.LocalIndex {
		t.Errorf("the tunnel was replaced (index %d -> %d); it should have moved", before.LocalIndex, after.LocalIndex)
	}
	m.sendUntil(2, 1, m.udpPacket(2, 1, "direct now"), 5*time.Second)
}

// TestLighthouseAcknowledgesV2FormUpdates: as Nebula 1.10+ does, a lighthouse answers an
// accepted update in the v2 form (no host named) with a HostUpdateNotificationAck; an update
// in the v1 form, which Nebula 1.6 hosts send and which knows no ack, gets none.
func TestLighthouseAcknowledgesV2FormUpdates(t *testing.T) {
	m := lighthouseMesh(t, 1, nil)
	lh, h := m.hosts[0], m.hosts[1]
	eventually(t, 10*time.Second, "a tunnel to the lighthouse", func() bool {
		_, ok := h.node.Tunnel(lh.vpn)
		return ok
	})
	time.Sleep(200 * time.Millisecond)
	before := h.node.LighthouseAcksForTest()
	if !h.node.SendLighthouseForTest(lh.vpn, overlay.ForgedUpdate(h.vpn, h.under)) {
		t.Fatal("no tunnel to the lighthouse")
	}
	time.Sleep(300 * time.Millisecond)
	if got := h.node.LighthouseAcksForTest(); got != before {
		t.Fatalf("a v1-form update got %d acks", got-before)
	}
	if !h.node.SendLighthouseForTest(lh.vpn, overlay.BlankUpdateForTest(h.under)) {
		t.Fatal("no tunnel to the lighthouse")
	}
	eventually(t, 3*time.Second, "the ack of a v2-form update", func() bool {
		return h.node.LighthouseAcksForTest() == before+1
	})
}
