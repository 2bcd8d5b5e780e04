package nodekeys

import (
	"errors"

	"github.com/meshnode/meshnode/overlay"
)

// The reloader drives the node through the pkiManager when renewal is on; these pass the
// rest of a reload through to the node.

// lighthouseTarget is implemented by targets that can also apply static_host_map, the
// lighthouse list and relay settings live.
type lighthouseTarget interface {
	SetLighthouses(*overlay.Config) error
}

// routeTarget is implemented by targets that apply tun.routes and tun.unsafe_routes live.
type routeTarget interface {
	SetRoutes(*overlay.Config) ([]string, error)
}

// SetLighthouses passes a reloaded static_host_map, lighthouse and relay config through to
// the node, so a reload applies them whether or not automatic renewal wraps the node.
func (m *pkiManager) SetLighthouses(c *overlay.Config) error {
	if lt, ok := m.node.(lighthouseTarget); ok {
		return lt.SetLighthouses(c)
	}
	return errors.New("static_host_map, lighthouse and relay changes need a restart")
}

// SetRoutes passes reloaded routes through to the node (renewal wraps it).
func (m *pkiManager) SetRoutes(c *overlay.Config) ([]string, error) {
	if rt, ok := m.node.(routeTarget); ok {
		return rt.SetRoutes(c)
	}
	return nil, errors.New("tun.routes and tun.unsafe_routes changes need a restart")
}
