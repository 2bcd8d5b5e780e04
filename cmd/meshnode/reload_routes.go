package main

import (
	"github.com/meshnode/meshnode/overlay"
)

// routeTarget is implemented by targets that apply tun.routes and tun.unsafe_routes live.
type routeTarget interface {
	SetRoutes(*overlay.Config) ([]string, error)
}

// reloadRoutes applies changed routes and says which other tun keys need a restart.
func (r *reloader) reloadRoutes(old, cfg *overlay.Config) ([]string, error) {
	routesChanged := !sectionEqual(old.Tun.Routes, cfg.Tun.Routes) || !sectionEqual(old.Tun.UnsafeRoutes, cfg.Tun.UnsafeRoutes)
	oldRest, newRest := old.Tun, cfg.Tun
	oldRest.Routes, oldRest.UnsafeRoutes, newRest.Routes, newRest.UnsafeRoutes = nil, nil, nil, nil
	var changes []string
	if !sectionEqual(oldRest, newRest) {
		changes = append(changes, "tun: changed; restart meshnode to apply (only routes and unsafe_routes apply live)")
	}
	if !routesChanged {
		return changes, nil
	}
	rt, ok := r.node.(routeTarget)
	if !ok {
		return append(changes, "tun.routes/unsafe_routes: changed; restart meshnode to apply"), nil
	}
	applied, err := rt.SetRoutes(cfg)
	if err != nil {
		return nil, err
	}
	for _, c := range applied {
		changes = append(changes, "tun: "+c)
	}
	return changes, nil
}
