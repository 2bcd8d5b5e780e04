package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshnode/meshnode/overlay/tun"
)

type fakeOffloader struct{ s tun.OffloadStats }

func (f *fakeOffloader) Offload() bool                  { return true }
func (f *fakeOffloader) OffloadStats() tun.OffloadStats { return f.s }

func TestOffloadCountersAreExportedAtScrapeTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := &fakeOffloader{}
	registerOffloadMetrics(reg, d)
	d.s = tun.OffloadStats{Split: 1, Segments: 2, Coalesced: 3, Joined: 4, Dropped: 5, Fallbacks: 6}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
	}
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
