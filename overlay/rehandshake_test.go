package overlay_test

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay"
	"github.com/meshnode/meshnode/overlay/header"
)

// TestRenewalLosesNoPacketFromTheResponder: while host 0 renews again and again, host 1
// (the responder of each re-handshake) streams to it. The responder's first packets on the
// new tunnel must not reach host 0 before the msg2 that tells it the tunnel's index, or they
// are dropped as unknown and set off a RecvError re-handshake.
func TestRenewalLosesNoPacketFromTheResponder(t *testing.T) {
	m := newMesh(t, 2, "")
	m.sendUntil(1, 0, m.udpPacket(1, 0, "before"), 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	drain(m.hosts[0].dev)
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		k := 0
		defer func() { sent <- k }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			m.hosts[1].dev.Inject(m.udpPacket(1, 0, fmt.Sprintf("stream %d", k)))
			k++
			time.Sleep(200 * time.Microsecond)
		}
	}()
	seen := map[string]bool{}
	collect := func(d time.Duration) {
		end := time.After(d)
		for {
			select {
			case p := <-m.hosts[0].dev.Delivered():
				seen[string(p)] = true
			case <-end:
				return
			}
		}
	}
	for range 20 {
		m.renew(0)
		collect(50 * time.Millisecond)
	}
	close(stop)
	total := <-sent
	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < total && time.Now().Before(deadline) {
		collect(50 * time.Millisecond)
	}
	if len(seen) != total {
		var lost []int
		for k := range total {
			if !seen[string(m.udpPacket(1, 0, fmt.Sprintf("stream %d", k)))] {
				lost = append(lost, k)
			}
		}
		t.Fatalf("%d of %d packets lost across 20 renewals: %v", total-len(seen), total, lost[:min(len(lost), 20)])
	}
}

// TestRenewedLighthouseReHandshakesWithItsHosts: a lighthouse knows its hosts' addresses
// only from the tunnels they made to it (no static_host_map, no lighthouse to ask). When it
// renews, it must still re-handshake each tunnel onto the new certificate, through the
// address the tunnel runs on; otherwise the hosts keep its old certificate until that
// expires and the tunnels are cut.
func TestRenewedLighthouseReHandshakesWithItsHosts(t *testing.T) {
	m := lighthouseMesh(t, 2, nil)
	lh := m.hosts[0]
	for i := 1; i < len(m.hosts); i++ {
		eventually(t, 10*time.Second, "a tunnel to the lighthouse", func() bool {
			_, ok := m.hosts[i].node.Tunnel(lh.vpn)
			return ok
		})
	}
	renewed := m.ca.NewHost(t, lh.name, lh.vpn.String()+"/16", "mesh")
	creds, err := handshake.NewCredentials(renewed.Cert, renewed.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := lh.node.SetPKI(&overlay.PKI{Creds: creds, Pool: certtest.Pool(t, m.ca)}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(m.hosts); i++ {
		eventually(t, 10*time.Second, m.hosts[i].name+"'s tunnel to the lighthouse on its renewed certificate", func() bool {
			p, ok := m.hosts[i].node.Tunnel(lh.vpn)
			return ok && p.Fingerprint == renewed.Cert.Fingerprint()
		})
	}
}

// holdFrom drops every datagram from host i to host j while the returned flag is set,
// except, with letHandshakes, handshake messages (so a msg 1 still gets through).
func holdFrom(m *mesh, i, j int, letHandshakes bool) *atomic.Bool {
	var hold atomic.Bool
	hold.Store(true)
	from, to := m.hosts[i].under, m.hosts[j].under
	m.net.Tap(func(f, t netip.AddrPort, b []byte) bool {
		if f != from || t != to || !hold.Load() {
			return true
		}
		return letHandshakes && len(b) >= header.Len && header.Type(b[0]&0x0f) == header.Handshake
	})
	return &hold
}

// TestRenewalWhileAnsweredHandshakeIsUnconfirmedReHandshakesIt forces the interleaving
// behind TestRenewedLighthouseReHandshakesWithItsHosts's flakes: host 1 answered host 0's
// msg 1 with its old certificate, and the answer is still a candidate (nothing from host 0
// authenticated yet) when host 1 renews. SetPKI sees no tunnel to re-handshake; the
// candidate confirms afterwards on the old certificate, and must then be re-handshaked.
func TestRenewalWhileAnsweredHandshakeIsUnconfirmedReHandshakesIt(t *testing.T) {
	m := newMesh(t, 2, "")
	hold := holdFrom(m, 0, 1, true)
	m.hosts[0].dev.Inject(m.udpPacket(0, 1, "starts the handshake"))
	eventually(t, 5*time.Second, "host2's answer to host1's msg 1 waiting for confirmation", func() bool {
		_, c := m.hosts[1].node.CandidatesForTest(m.hosts[0].vpn)
		return c > 0
	})
	renewed := m.renew(1)
	hold.Store(false)
	m.sendUntil(0, 1, m.udpPacket(0, 1, "confirms the answer"), 5*time.Second)
	eventually(t, 5*time.Second, "host1's tunnel to host2 on host2's renewed certificate", func() bool {
		p, ok := m.hosts[0].node.Tunnel(m.hosts[1].vpn)
		return ok && p.Fingerprint == renewed.Cert.Fingerprint()
	})
	m.sendUntil(0, 1, m.udpPacket(0, 1, "after the re-handshake"), 5*time.Second)
}

// TestRenewalWhileOwnHandshakeIsPendingReHandshakesIt: host 1 renews while its own msg 1,
// carrying the old certificate, waits for an answer. SetPKI has no tunnel to re-handshake
// (and would find the handshake pending and start none); the tunnel that handshake
// completes is on the old certificate and must be re-handshaked too.
func TestRenewalWhileOwnHandshakeIsPendingReHandshakesIt(t *testing.T) {
	m := newMesh(t, 2, "")
	hold := holdFrom(m, 0, 1, false)
	m.hosts[1].dev.Inject(m.udpPacket(1, 0, "starts the handshake"))
	eventually(t, 5*time.Second, "host1 answering host2's msg 1", func() bool {
		_, c := m.hosts[0].node.CandidatesForTest(m.hosts[1].vpn)
		return c > 0
	})
	renewed := m.renew(1)
	hold.Store(false)
	m.sendUntil(1, 0, m.udpPacket(1, 0, "completes the handshake"), 5*time.Second)
	eventually(t, 5*time.Second, "host1's tunnel to host2 on host2's renewed certificate", func() bool {
		p, ok := m.hosts[0].node.Tunnel(m.hosts[1].vpn)
		return ok && p.Fingerprint == renewed.Cert.Fingerprint()
	})
	m.sendUntil(1, 0, m.udpPacket(1, 0, "after the re-handshake"), 5*time.Second)
}
