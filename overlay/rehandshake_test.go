package overlay_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/overlay"
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
