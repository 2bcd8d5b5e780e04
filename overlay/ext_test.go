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
