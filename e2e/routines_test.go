package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestRoutinesSpreadTheDataPathOverQueues runs meshnode with routines: 2 (a two-queue TUN
// device and two SO_REUSEPORT sockets, each pair with its own goroutines) against itself and
// against nebula 1.6.1 (which runs routines: 2 as well). Several TCP flows at once, which the
// kernel spreads over the queues, must all arrive intact in both directions.
func TestRoutinesSpreadTheDataPathOverQueues(t *testing.T) {
	requireNamespaceSuite(t)
	tl := newTools(t)
	for _, impls := range [][]string{{implMeshnode, implMeshnode}, {implMeshnode, implNebula}} {
		t.Run(strings.Join(impls, "-"), func(t *testing.T) {
			hosts := startMesh(t, tl, meshSpec{impls: impls, certTool: "nebula-cert", cipher: "aes", extra: "routines: 2\n"})
			h1, h2 := hosts[0], hosts[1]
			if err := h1.proc.WaitLog(tunnelUpTimeout, "routines=2"); err != nil {
				t.Fatalf("meshnode did not start two routines: %v\n%s", err, h1.proc.Tail(20))
			}
			if link := h1.ns.MustRun(t, "ip", "-d", "link", "show"); !strings.Contains(link, "multi_queue") {
				t.Fatalf("the TUN device is not multi-queue:\n%s", link)
			}
			// Parallel subtests: the group returns once every flow is done.
			t.Run("flows", func(t *testing.T) {
				for i := range 4 {
					from, to := h1, h2
					if i%2 == 1 {
						from, to = h2, h1
					}
					t.Run(fmt.Sprintf("%s-to-%s-%d", from.name, to.name, i), func(t *testing.T) {
						t.Parallel()
						transfer(t, tl, from, to, 9600+i, 20<<20, uint64(60+i))
					})
				}
			})
		})
	}
}
