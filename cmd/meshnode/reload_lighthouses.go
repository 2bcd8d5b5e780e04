package main

import (
	"errors"

	"github.com/meshnode/meshnode/overlay"
)

// SetLighthouses passes a reloaded static_host_map, lighthouse and relay config through to
// the node, so a reload applies them whether or not automatic renewal wraps the node.
func (m *pkiManager) SetLighthouses(c *overlay.Config) error {
	if lt, ok := m.node.(lighthouseTarget); ok {
		return lt.SetLighthouses(c)
	}
	return errors.New("static_host_map, lighthouse and relay changes need a restart")
}
