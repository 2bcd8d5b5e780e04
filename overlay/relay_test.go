package overlay_test

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay/header"
)

// relayRequests counts the control messages (type 6) host i sends to host j.
func relayRequests(m *mesh, i, j int) *atomic.Int64 {
	var c atomic.Int64
	m.net.Tap(func(from, to netip.AddrPort, b []byte) bool {
		if from == m.hosts[i].under && to == m.hosts[j].under && len(b) > header.Len && b[0]&0x0f == byte(header.Control) {
			c.Add(1)
		}
		return true
	})
	return &c
}

// An authenticated peer of a relay cannot grow its table: a request retried with a new
// index replaces the pair it made before, and beyond the bounds per requesting peer and in
// total a request is refused and counted.
func TestRelayTableIsBoundedPerPeerAndInTotal(t *testing.T) {
	m := lighthouseMeshRelay(t, 4, nil, true, "")
	relay := m.hosts[0]
	eventually(t, 10*time.Second, "the relay has tunnels to every host", func() bool {
		for _, h := range m.hosts[1:] {
			if _, ok := relay.node.Tunnel(h.vpn); !ok {
				return false
			}
		}
		return true
	})
	sent := relayRequests(m, 1, 0)
	base := relay.node.RelayEntriesForTest()
	h1, h2 := m.hosts[1], m.hosts[2]
	// The same (initiator, target) pair with 500 fresh indexes: one pair at the relay.
	const flood = 500
	for k := range flood {
		if !h1.node.SendRelayRequestForTest(relay.vpn, uint32(1000+k), h2.vpn, h1.vpn) {
			t.Fatal("no tunnel host1 -> relay")
		}
		if k%50 == 49 {
			time.Sleep(10 * time.Millisecond) // the in-memory network drops on a full queue
		}
	}
	eventually(t, 5*time.Second, "requests on the wire", func() bool { return sent.Load() >= flood })
	time.Sleep(300 * time.Millisecond)
	if got := relay.node.RelayEntriesForTest() - base; got > 2 {
		t.Errorf("%d retried requests for one pair left %d relay entries, want 2", flood, got)
	}

	// Bounds: each peer may hold 2 pairs, the relay 3 pairs (6 entries) in all.
	relay.node.SetRelayLimitsForTest(2, 6)
	before := relay.node.Dropped("relay_limit")
	for _, target := range m.hosts[2:] { // host2 again (no new pair), host3, host4 (refused)
		h1.node.SendRelayRequestForTest(relay.vpn, 7, target.vpn, h1.vpn)
	}
	eventually(t, 2*time.Second, "host1's third pair refused and counted", func() bool {
		return relay.node.Dropped("relay_limit") == before+1
	})
	for _, target := range m.hosts[3:] { // host2 -> host3 fits in total, host2 -> host4 does not
		h2.node.SendRelayRequestForTest(relay.vpn, 9, target.vpn, h2.vpn)
	}
	eventually(t, 2*time.Second, "the pair beyond the total refused and counted", func() bool {
		return relay.node.Dropped("relay_limit") == before+2
	})
	if got := relay.node.RelayEntriesForTest(); got > 6 {
		t.Fatalf("relay holds %d entries, bound is 6", got)
	}
}

// recvErrorsTo counts the recv_error datagrams host i sends to each address.
func recvErrorsTo(m *mesh, i int) func(netip.AddrPort) int {
	var mu sync.Mutex
	counts := map[netip.AddrPort]int{}
	m.net.Tap(func(from, to netip.AddrPort, b []byte) bool {
		if from == m.hosts[i].under && len(b) == header.Len && b[0]&0x0f == byte(header.RecvError) {
			mu.Lock()
			counts[to]++
			mu.Unlock()
		}
		return true
	})
	return func(a netip.AddrPort) int {
		mu.Lock()
		defer mu.Unlock()
		if !a.IsValid() {
			total := 0
			for _, c := range counts {
				total += c
			}
			return total
		}
		return counts[a]
	}
}

// unknownIndex is a data packet naming an index nobody has.
func unknownIndex(k int) []byte {
	b := make([]byte, header.Len+32)
	header.Encode(b, header.Message, 0, 0xdead0000+uint32(k), uint64(k+1))
	return b
}

// injectPaced delivers datagrams to host i in chunks the in-memory queue holds, waiting
// until the node has counted each chunk as an unknown index.
func injectPaced(t *testing.T, m *mesh, i int, count int, src func(k int) netip.AddrPort) {
	t.Helper()
	node := m.hosts[i].node
	start := node.Dropped("unknown_index")
	for k := 0; k < count; {
		end := min(k+200, count)
		for ; k < end; k++ {
			_ = m.net.Inject(src(k), m.hosts[i].under, unknownIndex(k))
		}
		want := start + uint64(end)
		eventually(t, 5*time.Second, "datagrams counted", func() bool { return node.Dropped("unknown_index") >= want })
	}
}

// A node is no reflector: datagrams with unknown indexes from one (spoofed) source get a
// few recv_errors, and from many sources at most the global burst.
func TestRecvErrorsAreRateLimitedPerSourceAndInTotal(t *testing.T) {
	m := newMesh(t, 1, "")
	sent := recvErrorsTo(m, 0)
	victim := netip.MustParseAddrPort("203.0.113.7:4242")
	start := time.Now()
	injectPaced(t, m, 0, 2000, func(int) netip.AddrPort { return victim })
	// Burst 10 per source, then 5 a second.
	if got, limit := sent(victim), 10+int(5*time.Since(start).Seconds())+1; got > limit {
		t.Errorf("2000 datagrams from one source got %d recv_errors, want at most %d", got, limit)
	}
	if sent(victim) == 0 {
		t.Fatal("no recv_error at all for a source seen for the first time")
	}
	// 3000 sources, one datagram each: at most the global burst of 1000 plus 500 a second.
	start = time.Now()
	before := sent(netip.AddrPort{})
	injectPaced(t, m, 0, 3000, func(k int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, byte(114 + k/250), byte(k % 250)}), 4242)
	})
	if got, limit := sent(netip.AddrPort{})-before, 1000+int(500*time.Since(start).Seconds())+1; got > limit {
		t.Fatalf("3000 sources got %d recv_errors, want at most %d", got, limit)
	}
}
