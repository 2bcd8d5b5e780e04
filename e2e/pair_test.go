package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// pairCase is two hosts, each running an implementation, with one cipher.
type pairCase struct {
	a, b     string // implementations of host h1 and h2
	cipher   string
	certTool string
}

func (c pairCase) name() string { return fmt.Sprintf("%s-%s/%s/%s", c.a, c.b, c.cipher, c.certTool) }

// pairCases run everywhere, under CI too. The real nebula against itself proves the harness;
// every other entry is meshnode against itself or against nebula, in both orders.
var pairCases = []pairCase{
	{implNebula, implNebula, "aes", "nebula-cert"},
	{implNebula, implNebula, "chachapoly", "nebula-cert"},
	{implMeshnode, implMeshnode, "aes", "nebula-cert"},
	{implMeshnode, implMeshnode, "chachapoly", "nebula-cert"},
	{implMeshnode, implNebula, "aes", "nebula-cert"},
	{implMeshnode, implNebula, "chachapoly", "nebula-cert"},
	{implNebula, implMeshnode, "aes", "nebula-cert"},
	{implNebula, implMeshnode, "chachapoly", "nebula-cert"},
	// Certificates from our own CLI, accepted by both implementations.
	{implNebula, implNebula, "aes", "mesh-cert"},
	{implMeshnode, implNebula, "aes", "mesh-cert"},
	{implMeshnode, implMeshnode, "chachapoly", "mesh-cert"},
}

// pendingPairCases are cases known not to pass yet. They run only with E2E_PENDING=1, so
// nothing that is known to fail is ever part of `make test`. Move a case up into pairCases
// in the commit that makes it pass:
//
//	E2E_PENDING=1 go test -count=1 -v -run 'TestTwoHosts' ./e2e/
var pendingPairCases = []pairCase{}

func casesToRun() []pairCase {
	if os.Getenv("E2E_PENDING") == "1" {
		return append(append([]pairCase{}, pairCases...), pendingPairCases...)
	}
	return pairCases
}

// TestTwoHostsPingTransferAndRecoverFromRestart proves, for each pair of implementations and
// each cipher, that two hosts in their own namespaces reach each other over the overlay in
// both directions, carry 100 MB of TCP intact (checksums compared at both ends) and ICMP
// packets larger than the overlay MTU (fragmented inside the tunnel), that after one host is
// killed (SIGKILL, as in a crash) and started again traffic flows again within 10 s, that a
// transfer survives an underlay that loses 2% of the datagrams, and that a daemon exits
// cleanly (status 0) on SIGTERM. The host that restarts is h2, so a mixed pair exercises
// each implementation as the restarted side in one order and as the surviving side in the
// other.
func TestTwoHostsPingTransferAndRecoverFromRestart(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for _, c := range casesToRun() {
		t.Run(c.name(), func(t *testing.T) {
			hosts := startMesh(t, tl, meshSpec{impls: []string{c.a, c.b}, certTool: c.certTool, cipher: c.cipher})
			h1, h2 := hosts[0], hosts[1]

			transfer(t, tl, h1, h2, 9001, 100<<20, 1)
			transfer(t, tl, h2, h1, 9002, 10<<20, 2)
			// 3000 bytes of ICMP payload do not fit the 1300-byte overlay MTU: the kernel
			// fragments the inner packet and every fragment crosses the tunnel on its own.
			if out, err := h1.ns.Run("ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000", h2.overlay); err != nil {
				t.Fatalf("large (fragmented) ping: %v\n%s", err, out)
			}

			if err := h2.proc.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := h1.ns.Ping(h2.overlay); err == nil {
				t.Fatal("ping succeeded while the peer was down")
			}
			h2.start(t)
			took, err := h1.ns.WaitPing(recoverTimeout, h2.overlay)
			if err != nil {
				t.Fatalf("after %s restarted: %v", h2.name, err)
			}
			t.Logf("%s reached the restarted %s again after %v", h1.name, h2.name, took.Round(time.Millisecond))
			if _, err := h2.ns.WaitPing(recoverTimeout, h1.overlay); err != nil {
				t.Fatalf("restarted %s cannot reach %s: %v", h2.name, h1.name, err)
			}
			transfer(t, tl, h1, h2, 9003, 10<<20, 3)

			for _, h := range hosts {
				h.ns.DropRandomly(t, 2, fmt.Sprintf("udp dport %d", overlayPort))
			}
			transfer(t, tl, h1, h2, 9004, 10<<20, 4)

			if err := h1.proc.Terminate(); err != nil {
				t.Fatal(err)
			}
			if err := h1.proc.Wait(10 * time.Second); err != nil {
				t.Fatalf("%s on SIGTERM: %v (want a clean exit, status 0)", h1.name, err)
			}
		})
	}
}
