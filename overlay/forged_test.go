package overlay_test

import (
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/handshake"
)

// forgeMsg1 is what an off-path stranger can send: a handshake msg 1 carrying a victim's
// certificate (seen in any of its msg 1s) and static public key, with the stranger's own
// ephemeral key and a Time of its choosing. IX's msg 1 proves nothing about the static
// private key, so the responder reads and answers it like a genuine one.
func forgeMsg1(t *testing.T, victim *cert.Certificate, at time.Time, index uint32) []byte {
	t.Helper()
	hsCert, err := victim.MarshalHandshake()
	if err != nil {
		t.Fatal(err)
	}
	notTheKey := make([]byte, 32)
	if _, err := rand.Read(notTheKey); err != nil {
		t.Fatal(err)
	}
	st, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256),
		Random:        rand.Reader,
		Pattern:       noise.HandshakeIX,
		Initiator:     true,
		StaticKeypair: noise.DHKey{Private: notTheKey, Public: victim.Details.PublicKey},
	})
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte{0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1} // v1, handshake IX, counter 1
	payload := handshake.MarshalPayload(nil, &handshake.Payload{Cert: hsCert, InitiatorIndex: index, Time: uint64(at.UnixNano())})
	msg, _, _, err := st.WriteMessage(hdr, payload)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// forgeLoop sends forged msg 1s claiming victim's identity to target every interval, from
// a new stranger address each time (well under the per-source limit), until stop closes.
func forgeLoop(t *testing.T, m *mesh, victim *cert.Certificate, target netip.AddrPort, interval time.Duration, stop chan struct{}) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		far := time.Now().Add(10 * 365 * 24 * time.Hour)
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 9, byte(k%200 + 1)}), 4242)
			_ = m.net.Inject(from, target, forgeMsg1(t, victim, far, uint32(7000+k)))
		}
	}()
	return done
}

// TestForgedMsg1DoesNotCutAWorkingTunnel is issue 12's first finding: a stranger who has
// seen host1's certificate sends host2 a msg 1 with it, its own ephemeral key and a far
// future Time, a few times a second. host2 must keep sending to host1 on the confirmed
// tunnel (its address unchanged), and host1's genuine re-handshake (a renewal) must still
// move the tunnel although the forged Time is larger.
func TestForgedMsg1DoesNotCutAWorkingTunnel(t *testing.T) {
	m := newMesh(t, 2, "")
	a, b := m.hosts[0], m.hosts[1]
	m.sendUntil(1, 0, m.udpPacket(1, 0, "before"), 5*time.Second)

	stop := make(chan struct{})
	done := forgeLoop(t, m, a.host.Cert, b.under, 200*time.Millisecond, stop)
	defer func() { close(stop); <-done }()

	for k := range 10 {
		time.Sleep(300 * time.Millisecond)
		// Each packet must arrive within a second: a redirected tunnel would lose them all.
		m.sendUntil(1, 0, m.udpPacket(1, 0, "during "+string(rune('a'+k))), time.Second)
		p, ok := b.node.Tunnel(a.vpn)
		if !ok || p.Remote != a.under {
			t.Fatalf("host2's tunnel to host1 moved during the forgery: %+v (ok=%v)", p, ok)
		}
	}

	renewed := m.renew(0)
	eventually(t, 5*time.Second, "host2's tunnel on host1's renewed certificate", func() bool {
		p, ok := b.node.Tunnel(a.vpn)
		return ok && p.Fingerprint == renewed.Cert.Fingerprint()
	})
	m.sendUntil(1, 0, m.udpPacket(1, 0, "after renewal"), time.Second)
	m.sendUntil(0, 1, m.udpPacket(0, 1, "after renewal, back"), time.Second)
}

// TestForgedMsg1DoesNotCancelAPendingHandshake: host1 (the lower VPN IP) is starting a
// handshake to host2 when a forged msg 1 claiming host2 arrives. Under Nebula's race rule
// the lower side answers the other side's msg 1 and drops its own attempt; if that msg 1 is
// forged, host1 would be left with a tunnel nobody can use. Its own handshake must go on.
func TestForgedMsg1DoesNotCancelAPendingHandshake(t *testing.T) {
	m := newMesh(t, 2, "")
	a, b := m.hosts[0], m.hosts[1]
	m.net.Partition(a.under.Addr(), b.under.Addr())
	a.dev.Inject(m.udpPacket(0, 1, "queued"))
	time.Sleep(50 * time.Millisecond)
	stranger := netip.MustParseAddrPort("198.18.9.1:4242")
	if err := m.net.Inject(stranger, a.under, forgeMsg1(t, b.host.Cert, time.Now(), 4242)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	m.net.Heal()
	// Within a second: the liveness check would drop a useless tunnel after about three
	// (1 s + 2 s in this mesh), which must not be what saves the day.
	m.sendUntil(0, 1, m.udpPacket(0, 1, "after"), time.Second)
	m.sendUntil(1, 0, m.udpPacket(1, 0, "back"), time.Second)
	if p, ok := a.node.Tunnel(b.vpn); !ok || p.Remote != b.under {
		t.Fatalf("host1's tunnel to host2 is %+v (ok=%v), want remote %v", p, ok, b.under)
	}
}

// TestMsg1FromTheFarFutureIsRefused: a msg 1 whose Time is far ahead of our clock is
// refused before any Diffie-Hellman work and counted.
func TestMsg1FromTheFarFutureIsRefused(t *testing.T) {
	m := newMesh(t, 2, "")
	creds, err := handshake.NewCredentials(m.hosts[0].host.Cert, m.hosts[0].host.Key)
	if err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(24 * time.Hour)
	cfg := &handshake.Config{Local: creds, Pool: certtest.Pool(t, m.ca), Now: func() time.Time { return future }}
	_, msg1, err := handshake.Initiate(cfg, 99)
	if err != nil {
		t.Fatal(err)
	}
	m.net.Inject(m.hosts[0].under, m.hosts[1].under, msg1)
	eventually(t, 3*time.Second, "the future msg 1 counted", func() bool {
		return m.hosts[1].node.Dropped("handshake_clock_skew") == 1
	})
}

// TestUnconfirmedHandshakesAreBoundedAndExpire: a flood of forged msg 1s from many sources,
// all claiming host1, keeps at most a handful of unconfirmed tunnels for it, none of them
// reachable by host2's send path; they are gone after the timeout (counted), and host1's
// genuine re-handshake from its known address still confirms during the flood.
func TestUnconfirmedHandshakesAreBoundedAndExpire(t *testing.T) {
	m := newMesh(t, 2, "")
	a, b := m.hosts[0], m.hosts[1]
	b.node.SetCandidateTimeoutForTest(time.Second)
	m.sendUntil(1, 0, m.udpPacket(1, 0, "before"), 5*time.Second)
	far := time.Now().Add(time.Minute)
	for k := range 200 {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 10 + byte(k/200), byte(k%200 + 1)}), 4242)
		_ = m.net.Inject(from, b.under, forgeMsg1(t, a.host.Cert, far, uint32(9000+k)))
	}
	eventually(t, 3*time.Second, "the forged msg 1s answered", func() bool {
		return b.node.Dropped("handshake_unconfirmed_evicted") >= 150
	})
	if total, peer := b.node.CandidatesForTest(a.vpn); peer > 8 || total > 8 {
		t.Fatalf("%d unconfirmed tunnels (%d claiming host1), want at most 8", total, peer)
	}
	m.sendUntil(1, 0, m.udpPacket(1, 0, "during"), time.Second)

	renewed := m.renew(0)
	eventually(t, 5*time.Second, "host2's tunnel on host1's renewed certificate", func() bool {
		p, ok := b.node.Tunnel(a.vpn)
		return ok && p.Fingerprint == renewed.Cert.Fingerprint()
	})
	eventually(t, 5*time.Second, "the unconfirmed tunnels expired", func() bool {
		total, _ := b.node.CandidatesForTest(a.vpn)
		return total == 0
	})
	m.sendUntil(1, 0, m.udpPacket(1, 0, "after"), time.Second)
}
