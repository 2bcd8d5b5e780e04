package overlay_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay"
)

func TestExtensionQueryIsAnsweredByTheHandlerOrReportedUnsupported(t *testing.T) {
	m := newMesh(t, 2, "")
	a, b := m.hosts[0], m.hosts[1]
	var asker netip.Addr
	b.node.HandleExtForTest(0x7e, func(peer netip.Addr, body []byte) []byte {
		asker = peer
		r := slices.Clone(body)
		slices.Reverse(r)
		return r
	})
	b.node.HandleExtForTest(0x7d, func(netip.Addr, []byte) []byte { return make([]byte, 5000) })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.node.ExtCallForTest(ctx, b.vpn, 0x7e, []byte("abc"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, []byte("cba")) || asker != a.vpn {
		t.Fatalf("answer %q from a query by %s", got, asker)
	}

	// An op the peer has no handler for is echoed, as Nebula echoes every Test request.
	if _, err := a.node.ExtCallForTest(ctx, b.vpn, 0x7c, []byte("x")); !errors.Is(err, overlay.ErrExtUnsupported) {
		t.Fatalf("unknown op: %v", err)
	}

	// An answer over the size limit is not sent: the caller times out instead of getting
	// a fragmented datagram.
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := a.node.ExtCallForTest(short, b.vpn, 0x7d, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("oversized answer: %v", err)
	}
	// A query over the limit is refused before sending.
	if _, err := a.node.ExtCallForTest(ctx, b.vpn, 0x7e, make([]byte, 4000)); err == nil {
		t.Fatal("oversized query sent")
	}
	// Plain pings still work beside the extension.
	if _, err := a.node.Ping(ctx, b.vpn); err != nil {
		t.Fatal(err)
	}
}

// TestExtensionQueriesNeverCrashANebulaPeer plays each kind of Nebula peer: 1.6.1 (answers
// a Test request of up to 16 bytes with bytes of its own header, and panics on a longer
// one), one that answers empty, and a later release that echoes. Short and long queries
// must all end in ErrExtUnsupported, without a request that would crash 1.6.1, and the
// peer's liveness (ping) keeps working.
func TestExtensionQueriesNeverCrashANebulaPeer(t *testing.T) {
	m := newMesh(t, 2, "")
	a, b := m.hosts[0], m.hosts[1]
	b.node.HandleExtForTest(0x7e, func(_ netip.Addr, body []byte) []byte { return body })
	for _, mode := range []struct {
		name string
		m    int32
	}{{"nebula-1.6.1", overlay.Nebula161}, {"empty", overlay.NebulaEmpty}, {"echo", overlay.NebulaEcho}} {
		t.Run(mode.name, func(t *testing.T) {
			b.node.AnswerTestsAsNebulaForTest(mode.m)
			defer b.node.AnswerTestsAsNebulaForTest(overlay.NebulaOff)
			// A fresh tunnel: what a peer is known to be is remembered per tunnel.
			m.stop(1)
			m.start(1)
			b = m.hosts[1]
			b.node.AnswerTestsAsNebulaForTest(mode.m)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for _, body := range [][]byte{[]byte("abc"), make([]byte, 200), []byte("abc")} {
				start := time.Now()
				_, err := a.node.ExtCallForTest(ctx, b.vpn, 0x7e, body)
				if !errors.Is(err, overlay.ErrExtUnsupported) {
					t.Fatalf("%d-byte query: %v", len(body), err)
				}
				t.Logf("%d-byte query: unsupported after %s", len(body), time.Since(start).Round(time.Millisecond))
			}
			if n := b.node.NebulaPanicsForTest(); n != 0 {
				t.Fatalf("%d requests would have crashed a nebula 1.6.1 peer", n)
			}
			if _, err := a.node.Ping(ctx, b.vpn); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLongExtensionQueriesGoToAMeshnodePeerAfterAHello(t *testing.T) {
	m := newMesh(t, 2, "")
	a, b := m.hosts[0], m.hosts[1]
	b.node.HandleExtForTest(0x7e, func(_ netip.Addr, body []byte) []byte { return body[:3] })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		got, err := a.node.ExtCallForTest(ctx, b.vpn, 0x7e, bytes.Repeat([]byte("x"), 500))
		if err != nil || string(got) != "xxx" {
			t.Fatalf("long query: %q, %v", got, err)
		}
	}
}
