package overlay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay"
)

// TestPingByNameAsksTheLighthouse: host1 holds no tunnel to host2 and no certificate naming
// it, yet `ping host2` works, because the lighthouse (which host2 reports to) maps the name
// to its VPN IP; names are matched without case. An unknown name is refused naming the
// lighthouses, and (for host3) a lighthouse that does not answer the query (Nebula 1.6.1) gives an error
// that says to use the VPN IP instead of hanging or crashing it.
func TestPingByNameAsksTheLighthouse(t *testing.T) {
	m := lighthouseMesh(t, 3, nil)
	lh, h1, h2 := m.hosts[0], m.hosts[1], m.hosts[2]
	eventually(t, 10*time.Second, "every host reports to the lighthouse", func() bool {
		for _, h := range m.hosts[1:] {
			if _, ok := lh.node.Tunnel(h.vpn); !ok {
				return false
			}
		}
		return true
	})
	if _, ok := h1.node.Tunnel(h2.vpn); ok {
		t.Fatal("host1 already has a tunnel to host2; the test needs none")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ip, from, err := h1.node.LookupName(ctx, "HOST2")
	if err != nil || ip != h2.vpn || from != lh.vpn {
		t.Fatalf("LookupName(HOST2) = %v from %v, %v; want %v from the lighthouse %v", ip, from, err, h2.vpn, lh.vpn)
	}
	if _, _, err := h1.node.LookupName(ctx, "nosuchhost"); !errors.Is(err, overlay.ErrNameUnknown) {
		t.Fatalf("LookupName(nosuchhost): %v, want ErrNameUnknown", err)
	}

	_, c := controlOf(t, m, 1, nil)
	got, err := do(t, c, overlay.ControlRequest{Cmd: "ping", Target: "host2", Count: 2, IntervalMS: 10})
	if err != nil {
		t.Fatalf("ping host2: %v", err)
	}
	var notes []string
	var sum *overlay.PingSummary
	for _, r := range got {
		if r.Note != "" {
			notes = append(notes, r.Note)
		}
		if r.Ping != nil {
			sum = r.Ping
		}
	}
	if sum == nil || sum.Received != 2 || sum.Target != h2.vpn || sum.Name != "host2" {
		t.Fatalf("ping host2: summary %+v", sum)
	}
	if len(notes) == 0 || notes[0] != "host2 is "+h2.vpn.String()+" (says lighthouse "+lh.vpn.String()+")" {
		t.Fatalf("ping host2: notes %q", notes)
	}
	if _, err := do(t, c, overlay.ControlRequest{Cmd: "ping", Target: "nosuchhost", Count: 1}); err == nil ||
		err.Error() != "unknown host nosuchhost: neither a peer's certificate nor the lighthouses ("+lh.vpn.String()+") know that name" {
		t.Fatalf("ping nosuchhost: %v", err)
	}

	// A lighthouse that answers Test messages as Nebula 1.6.1 does: the query is not sent to
	// it (it would crash) and the error says what to do instead.
	lh.node.AnswerTestsAsNebulaForTest(overlay.Nebula161)
	_, c3 := controlOf(t, m, 3, nil)
	_, err = do(t, c3, overlay.ControlRequest{Cmd: "ping", Target: "host1", Count: 1})
	if err == nil || !strings.Contains(err.Error(), "unknown host host1: no tunnel to a host of that name, and the lighthouses could not be asked") ||
		!strings.Contains(err.Error(), "use the VPN IP") {
		t.Fatalf("ping host1 through a Nebula lighthouse: %v", err)
	}
	if n := lh.node.NebulaPanicsForTest(); n != 0 {
		t.Fatalf("%d requests would have crashed a Nebula 1.6.1 lighthouse", n)
	}
}
