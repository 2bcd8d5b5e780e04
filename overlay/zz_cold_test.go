package overlay

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/header"
)

func TestZZColdQueryAlloc(t *testing.T) {
	s := newScaleHub(t, true, false)
	const n = 1000
	res := make([]*handshake.Result, n)
	for i := range n {
		res[i] = s.joinKeys(t, i)
	}
	s.settle()
	built := 0
	for i := range n {
		if tn := s.hub.hosts.byVPNIP(scaleVPN(i)); tn != nil && (tn.send.Built() || tn.recv.Built()) {
			built++
		}
	}
	t.Logf("built after settle: %d of %d", built, n)
	s.out.discard.Store(true)
	ctr := uint64(1000)
	run := func(label string, garbage bool) {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		d0 := s.out.dropped.Load()
		const q = 500
		for range q {
			i, j := rand.IntN(n), rand.IntN(n)
			pl := (&lighthouse.Meta{Type: lighthouse.HostQuery, VpnIP: scaleVPN(j)}).Marshal(nil)
			ctr++
			buf := header.Encode(make([]byte, header.Len, header.Len+len(pl)+tagLen), header.LightHouse, 0, res[i].RemoteIndex, ctr)
			pkt := res[i].Send.Seal(buf, buf, pl, ctr)
			if garbage {
				pkt[len(pkt)-1] ^= 1
			}
			_ = s.net.Inject(scaleUnder(i), s.addr, pkt)
			time.Sleep(300 * time.Microsecond)
		}
		time.Sleep(50 * time.Millisecond)
		runtime.ReadMemStats(&m1)
		t.Logf("%s: %.0f B/query, %.1f allocs/query, %d sent", label, float64(m1.TotalAlloc-m0.TotalAlloc)/q, float64(m1.Mallocs-m0.Mallocs)/q, s.out.dropped.Load()-d0)
	}
	run("garbage", true)
	run("cold", false)
	run("cold2", false)
}
