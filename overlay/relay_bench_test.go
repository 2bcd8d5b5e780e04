package overlay

import (
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay/header"
)

// relayLoop makes p.b a relay whose two sides both run over its tunnel to p.a, and returns
// the index a's frames must carry: p.b forwards each of them back to a. That is the whole
// forwarding path of a relay (lookup, replay window, tag check, re-framing, send) with two
// nodes.
func relayLoop(tb testing.TB, p *pathPair) uint32 {
	tb.Helper()
	in, err := p.b.relay.newEntry(p.a.vpnIP, p.a.vpnIP)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := p.b.relay.newEntry(p.a.vpnIP, p.a.vpnIP)
	if err != nil {
		tb.Fatal(err)
	}
	in.forward, out.forward = out, in
	in.remoteIndex.Store(1)
	out.remoteIndex.Store(1) // unknown to a, which drops what comes back
	return in.localIndex
}

// BenchmarkRelayForward is the relay's per-frame cost of forwarding a 1400-byte packet.
func BenchmarkRelayForward(b *testing.B) {
	p := newPathPair(b, "aes")
	idx := relayLoop(b, p)
	hop := p.a.hosts.byVPNIP(p.b.vpnIP)
	const slots = 1024
	sealed := make([][]byte, slots)
	work := make([]byte, 2*header.Len+pathPacket+2*tagLen)
	b.SetBytes(pathPacket)
	b.ReportAllocs()
	i := slots
	var now time.Time
	for b.Loop() {
		if i%pathBatch == 0 {
			now = time.Now()
		}
		if i == slots {
			b.StopTimer()
			for j := range sealed {
				m := p.a.frame(hop, idx, p.inner)
				sealed[j] = m.Buf[:m.N]
			}
			i = 0
			b.StartTimer()
		}
		w := work[:len(sealed[i])]
		copy(w, sealed[i])
		i++
		p.b.handleOutside(w, p.aFromB, now)
	}
	if d := p.b.Dropped(dropRelay) + p.b.Dropped(dropReplay) + p.b.Dropped(dropDecrypt); d != 0 {
		b.Fatalf("%d frames dropped at the relay", d)
	}
}
