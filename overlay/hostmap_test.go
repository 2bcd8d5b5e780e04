package overlay

import (
	"net/netip"
	"testing"
)

// The host map counts its current tunnels by their peer's underlay IP, which makes a
// msg 1 from such a peer expected (hsqueue.go): the count follows installs, replacements,
// roaming and removals, and a tunnel that is no longer current counts nothing.
func TestRemoteIPsFollowTheCurrentTunnels(t *testing.T) {
	var h hostMap
	mk := func(vpn string, idx uint32, remote string) *tunnel {
		tn := &tunnel{vpnIP: netip.MustParseAddr(vpn), localIndex: idx, remoteIndex: idx}
		if remote != "" {
			tn.setRemote(netip.MustParseAddrPort(remote))
		}
		return tn
	}
	ip := netip.MustParseAddr
	want := func(what string, addr string, expect bool) {
		t.Helper()
		if got := h.hasRemoteIP(ip(addr)); got != expect {
			t.Fatalf("%s: %s expected %v, want %v", what, addr, got, expect)
		}
	}
	a := mk("10.0.0.2", 1, "198.18.0.2:4242")
	b := mk("10.0.0.3", 2, "198.18.0.2:5000") // behind the same NAT as a
	h.install(a)
	h.install(b)
	want("two tunnels behind one NAT", "198.18.0.2", true)
	h.remove(a)
	want("one of them gone", "198.18.0.2", true)
	h.remove(b)
	want("both gone", "198.18.0.2", false)

	c := mk("10.0.0.4", 3, "198.18.0.4:4242")
	h.install(c)
	h.move(c, netip.MustParseAddrPort("198.18.0.5:4242"))
	want("roamed away from", "198.18.0.4", false)
	want("roamed to", "198.18.0.5", true)

	// A re-handshake from a new address replaces c: the old tunnel counts nothing now,
	// even when a packet still reaches it (it stays findable by index for a grace period).
	c2 := mk("10.0.0.4", 4, "198.18.0.6:4242")
	h.install(c2)
	want("replaced tunnel's address", "198.18.0.5", false)
	want("replacement's address", "198.18.0.6", true)
	h.move(c, netip.MustParseAddrPort("198.18.0.7:4242"))
	want("a retired tunnel roaming", "198.18.0.7", false)
	h.remove(c)
	want("retired tunnel removed", "198.18.0.6", true)
	h.install(c2) // installed again: counted once, not twice
	h.remove(c2)
	want("re-installed tunnel removed", "198.18.0.6", false)

	r := mk("10.0.0.8", 5, "") // relayed: no direct address
	h.install(r)
	h.move(r, netip.MustParseAddrPort("198.18.0.8:4242")) // leaves the relay
	want("left the relay", "198.18.0.8", true)
	h.remove(r)
	if len(h.remoteIPs) != 0 {
		t.Fatalf("counts left after every tunnel went: %v", h.remoteIPs)
	}
}
