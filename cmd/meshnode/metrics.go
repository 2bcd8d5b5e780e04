package main

import (
	"runtime"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/internal/version"
)

// buildInfo is meshnode_build_info, always 1, labelled with what the binary was built from
// (Nebula exports the same as `info`): dashboards join on it to show which version each
// host runs.
func buildInfo() prom.Collector {
	v := version.Get()
	g := prom.NewGauge(prom.GaugeOpts{
		Name:        "meshnode_build_info",
		Help:        "The version and commit meshnode was built from; always 1.",
		ConstLabels: prom.Labels{"version": v.Version, "commit": v.Commit, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}
