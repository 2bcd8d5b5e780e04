package main

import (
	"testing"

	"github.com/meshnode/meshnode/internal/prom"
	"github.com/meshnode/meshnode/overlay/tun"
)

type fakeOffloader struct{ s tun.OffloadStats }

func (f *fakeOffloader) Offload() bool                  { return true }
func (f *fakeOffloader) OffloadStats() tun.OffloadStats { return f.s }

func TestOffloadCountersAreExportedAtScrapeTime(t *testing.T) {
	reg := prom.NewRegistry()
	d := &fakeOffloader{}
	registerOffloadMetrics(reg, d)
	d.s = tun.OffloadStats{Split: 1, Segments: 2, Coalesced: 3, Joined: 4, Dropped: 5, Fallbacks: 6}
	got := prom.Samples(reg)
	for name, want := range map[string]float64{
		"meshnode_tun_offload_split_total": 1, "meshnode_tun_offload_segments_total": 2,
		"meshnode_tun_offload_coalesced_total": 3, "meshnode_tun_offload_joined_total": 4,
		"meshnode_tun_offload_dropped_total": 5, "meshnode_tun_offload_fallbacks_total": 6,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}
