package overlay_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay"
)

// fillerFingerprints are n fingerprints of certificates nobody holds, to make lists large.
func fillerFingerprints(n int) []string {
	var fps []string
	for i := range n {
		s := sha256.Sum256([]byte(fmt.Sprint("filler", i)))
		fps = append(fps, hex.EncodeToString(s[:]))
	}
	return fps
}

func hasTunnel(n *overlay.Node, h *meshHost) bool {
	_, ok := n.Tunnel(h.vpn)
	return ok
}

// TestLighthouseRelaysBlocklistAndRevokedTunnelIsClosed: the CA's signed list reaches only
// the lighthouse, which notifies its peers; host1 (whose ask interval is a minute away)
// fetches it from the lighthouse at once (in several chunks: it is larger than one
// answer), closes its tunnel to the revoked host3 at once, refuses host3's new
// handshakes, keeps its tunnel to host2, and hands the list to the persistence hook.
func TestLighthouseRelaysBlocklistAndRevokedTunnelIsClosed(t *testing.T) {
	m := lighthouseMesh(t, 3, nil)
	lh, h1, h3 := m.hosts[0], m.hosts[1], m.hosts[3]
	var mu sync.Mutex
	var saved []string
	h1.node.OnBlocklist(func(b *cert.SignedBlocklist, source string) {
		mu.Lock()
		defer mu.Unlock()
		saved = append(saved, fmt.Sprintf("v%d from %s", b.Version, source))
	})
	m.sendUntil(1, 3, m.udpPacket(1, 3, "before"), 10*time.Second)
	m.sendUntil(1, 2, m.udpPacket(1, 2, "before"), 10*time.Second)

	revoked := h3.host.Cert.Fingerprint()
	fps := append(fillerFingerprints(300), revoked)
	bl := cert.SignBlocklist(4, time.Now().Unix(), fps, m.ca.Cert, m.ca.Key)
	if enc, _ := bl.MarshalBinary(); len(enc) <= 3*overlay.BlocklistChunk {
		t.Fatalf("test list of %d bytes fits in %d chunks; want more", len(enc), 3)
	}
	if ok, err := lh.node.ApplyBlocklist(&bl, overlay.BlocklistFromCA); !ok || err != nil {
		t.Fatalf("lighthouse: applied %v, %v", ok, err)
	}
	start := time.Now()
	eventually(t, 20*time.Second, "host1 learns the list from the lighthouse", func() bool {
		return h1.node.BlocklistVersion() == 4
	})
	eventually(t, 5*time.Second, "host1 closes its tunnel to host3", func() bool { return !hasTunnel(h1.node, h3) })
	t.Logf("relayed %d entries and closed the tunnel in %s", len(fps), time.Since(start).Round(time.Millisecond))
	if got := h1.node.Blocklist(); len(got.Fingerprints) != len(fps) {
		t.Fatalf("relayed list has %d entries, want %d", len(got.Fingerprints), len(fps))
	}
	if n := h1.node.BlocklistApplied(overlay.BlocklistFromRelay); n != 1 {
		t.Fatalf("relay applications counted %d, want 1", n)
	}
	// The hook runs last in ApplyBlocklist, after the tunnel is closed: wait for it, and
	// never fail while holding mu (the node's hook would block on it and Run never return).
	hookSaw := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), saved...)
	}
	eventually(t, 5*time.Second, "the persistence hook gets the list", func() bool { return len(hookSaw()) > 0 })
	if got := hookSaw(); len(got) != 1 || got[0] != "v4 from relay" {
		t.Fatalf("persistence hook saw %q", got)
	}

	// host1 <-> host2 is untouched; host3 cannot come back.
	m.sendUntil(1, 2, m.udpPacket(1, 2, "after"), 10*time.Second)
	m.hosts[3].dev.Inject(m.udpPacket(3, 1, "let me back"))
	time.Sleep(500 * time.Millisecond)
	if hasTunnel(h1.node, h3) {
		t.Fatal("revoked host3 built a new tunnel to host1")
	}
	// A reload swaps in a fresh pool: the list in force stays applied to it.
	fresh, err := overlay.LoadPKI(h1.cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := h1.node.SetPKI(fresh); err != nil {
		t.Fatal(err)
	}
	if !fresh.Pool.IsBlocked(revoked) {
		t.Fatal("a reloaded pool lost the relayed revocation")
	}
	// Asking again with the list in hand gets "nothing newer", and nothing changes.
	h1.node.KickBlocklistForTest()
	time.Sleep(300 * time.Millisecond)
	if n := h1.node.BlocklistApplied(overlay.BlocklistFromRelay); n != 1 || h1.node.BlocklistVersion() != 4 {
		t.Fatalf("after asking again: %d applications, version %d", n, h1.node.BlocklistVersion())
	}
}

// TestForgedAndOlderBlocklistsAreRefused: a list signed by another CA (served by a
// lighthouse, or offered directly), an older version, and a lighthouse answering with an
// older list than the asker has are all refused and counted; none blocks anyone.
func TestForgedAndOlderBlocklistsAreRefused(t *testing.T) {
	m := lighthouseMesh(t, 2, nil)
	lh, h1, h2 := m.hosts[0], m.hosts[1], m.hosts[2]
	m.sendUntil(1, 2, m.udpPacket(1, 2, "up"), 10*time.Second)
	victim := h2.host.Cert.Fingerprint()

	other := certtest.NewCA(t, "attacker")
	forged := cert.SignBlocklist(100, time.Now().Unix(), []string{victim}, other.Cert, other.Key)
	if ok, err := lh.node.ApplyBlocklist(&forged, overlay.BlocklistFromCA); ok || err == nil {
		t.Fatal("the lighthouse applied a forged list")
	}
	lh.node.ServeBlocklistForTest(&forged) // a lighthouse relaying it anyway
	h1.node.KickBlocklistForTest()
	eventually(t, 10*time.Second, "forged relayed list refused", func() bool {
		return h1.node.BlocklistRefused(overlay.BlocklistRefusedInvalid) >= 1
	})
	// A list whose signature covers other content (version raised after signing).
	good := cert.SignBlocklist(2, time.Now().Unix(), nil, m.ca.Cert, m.ca.Key)
	tampered := good
	tampered.Version, tampered.Fingerprints = 50, []string{victim}
	if ok, err := h1.node.ApplyBlocklist(&tampered, overlay.BlocklistFromRelay); ok || err == nil {
		t.Fatal("tampered list applied")
	}
	if h1.node.BlocklistVersion() != 0 || !hasTunnel(h1.node, h2) {
		t.Fatalf("after forged lists: version %d, tunnel to host2 %v", h1.node.BlocklistVersion(), hasTunnel(h1.node, h2))
	}

	// The real list, version 2, then version 1: the older one is refused and counted.
	if ok, err := h1.node.ApplyBlocklist(&good, overlay.BlocklistFromCA); !ok || err != nil {
		t.Fatalf("good list: %v %v", ok, err)
	}
	older := cert.SignBlocklist(1, time.Now().Unix(), []string{victim}, m.ca.Cert, m.ca.Key)
	if ok, err := h1.node.ApplyBlocklist(&older, overlay.BlocklistFromRelay); ok || err != nil {
		t.Fatalf("older list: applied %v, %v", ok, err)
	}
	if n := h1.node.BlocklistRefused(overlay.BlocklistRefusedOlder); n != 1 {
		t.Fatalf("older lists counted %d, want 1", n)
	}
	// The same version again is no news, not a refusal.
	if ok, _ := h1.node.ApplyBlocklist(&good, overlay.BlocklistFromCA); ok || h1.node.BlocklistRefused(overlay.BlocklistRefusedOlder) != 1 {
		t.Fatal("the same version was applied again or counted as older")
	}
	// A lighthouse that answers with an older list than the one asked beyond.
	lh.node.ServeBlocklistForTest(&older)
	before := h1.node.BlocklistRefused(overlay.BlocklistRefusedMalformed)
	h1.node.KickBlocklistForTest()
	time.Sleep(500 * time.Millisecond)
	if h1.node.BlocklistVersion() != 2 || !hasTunnel(h1.node, h2) {
		t.Fatalf("an older relayed list took effect: version %d", h1.node.BlocklistVersion())
	}
	if got := h1.node.BlocklistRefused(overlay.BlocklistRefusedMalformed); got != before {
		t.Fatalf("an honest 'nothing newer' was counted as malformed (%d -> %d)", before, got)
	}
	m.sendUntil(1, 2, m.udpPacket(1, 2, "still up"), 10*time.Second)
}

// TestNebulaLighthouseNeverRelaysAndSurvives: a lighthouse answering Test messages as
// Nebula 1.6.1 does is never sent a request that would crash it; the host gets no list and
// its tunnels keep working. And a (meshnode) lighthouse's notice of a new list does not
// crash a host that runs Nebula 1.6.1.
func TestNebulaLighthouseNeverRelaysAndSurvives(t *testing.T) {
	m := lighthouseMesh(t, 2, nil)
	lh, h1, h2 := m.hosts[0], m.hosts[1], m.hosts[2]
	m.sendUntil(1, 2, m.udpPacket(1, 2, "up"), 10*time.Second)
	h2.node.AnswerTestsAsNebulaForTest(overlay.Nebula161)
	bl := cert.SignBlocklist(2, time.Now().Unix(), fillerFingerprints(2), m.ca.Cert, m.ca.Key)
	if ok, err := lh.node.ApplyBlocklist(&bl, overlay.BlocklistFromCA); !ok || err != nil {
		t.Fatal(ok, err)
	}
	eventually(t, 10*time.Second, "host1 gets the list", func() bool { return h1.node.BlocklistVersion() == 2 })
	time.Sleep(200 * time.Millisecond)
	if n := h2.node.NebulaPanicsForTest(); n != 0 {
		t.Fatalf("the notice would have crashed a nebula 1.6.1 host %d times", n)
	}
	h2.node.AnswerTestsAsNebulaForTest(overlay.NebulaOff)

	// Now the lighthouse (holding version 2) answers as Nebula 1.6.1. Fresh hosts: what a
	// peer is, is learnt per tunnel, and a real peer does not change its nature mid-tunnel.
	lh.node.AnswerTestsAsNebulaForTest(overlay.Nebula161)
	for i := 1; i <= 2; i++ {
		m.stop(i)
		m.start(i)
	}
	h1 = m.hosts[1]
	m.sendUntil(1, 2, m.udpPacket(1, 2, "up"), 10*time.Second)
	for range 3 {
		h1.node.KickBlocklistForTest()
		time.Sleep(1500 * time.Millisecond) // a hello's three tries
	}
	if n := lh.node.NebulaPanicsForTest(); n != 0 {
		t.Fatalf("%d requests would have crashed nebula 1.6.1", n)
	}
	if v := h1.node.BlocklistVersion(); v != 0 {
		t.Fatalf("got version %d from a Nebula lighthouse", v)
	}
	m.sendUntil(1, 2, m.udpPacket(1, 2, "still up"), 10*time.Second)
	if _, ok := h1.node.Tunnel(lh.vpn); !ok {
		t.Fatal("tunnel to the Nebula lighthouse lost")
	}
}

// TestAskerStartsOverWhenTheLighthouseListChangesMidFetch: the lighthouse moves from a
// multi-chunk version 5 to version 6 after answering the first chunk; the asker is told the
// version it was fetching is gone, starts over, and ends with a complete version 6 (never a
// mix of the two).
func TestAskerStartsOverWhenTheLighthouseListChangesMidFetch(t *testing.T) {
	m := lighthouseMesh(t, 1, nil)
	lh, h1 := m.hosts[0], m.hosts[1]
	v5 := cert.SignBlocklist(5, time.Now().Unix(), fillerFingerprints(200), m.ca.Cert, m.ca.Key)
	v6 := cert.SignBlocklist(6, time.Now().Unix(), fillerFingerprints(250), m.ca.Cert, m.ca.Key)
	// The switch happens when the asker requests a chunk of version 5 beyond the first.
	var swapped atomic.Bool
	lh.node.HandleExtForTest(overlay.BlocklistQueryOp, func(_ netip.Addr, body []byte) []byte {
		if len(body) == 21 && binary.BigEndian.Uint64(body[9:]) == 5 && binary.BigEndian.Uint32(body[17:]) > 0 &&
			!swapped.Swap(true) {
			lh.node.ServeBlocklistForTest(&v6)
		}
		return lh.node.AnswerBlocklistForTest(body)
	})
	lh.node.ServeBlocklistForTest(&v5)
	eventually(t, 10*time.Second, "tunnel to the lighthouse", func() bool { return hasTunnel(h1.node, lh) })
	h1.node.KickBlocklistForTest()
	eventually(t, 20*time.Second, "host1 has version 6", func() bool { return h1.node.BlocklistVersion() == 6 })
	if got := h1.node.Blocklist(); len(got.Fingerprints) != len(v6.Fingerprints) {
		t.Fatalf("version 6 with %d entries, want %d", len(got.Fingerprints), len(v6.Fingerprints))
	}
	if !swapped.Load() {
		t.Fatal("the asker never fetched past the first chunk of version 5")
	}
	if n := h1.node.BlocklistApplied(overlay.BlocklistFromRelay); n != 1 {
		t.Fatalf("%d relayed lists applied, want 1 (version 6 only)", n)
	}
	if n := h1.node.BlocklistRefused(overlay.BlocklistRefusedMalformed); n != 0 {
		t.Fatalf("%d answers counted malformed", n)
	}
}
