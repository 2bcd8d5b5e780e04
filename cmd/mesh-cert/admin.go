package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
)

// openAdmin reaches the inventory of the service configured at configPath: through the
// admin socket of a running `mesh-cert serve`, or, when none answers, by opening the store
// directly (bbolt lets only one process hold its file; a PostgreSQL store is shared, so an
// admin command works the same with every replica running or none).
func openAdmin(e *env, configPath string) (authority.Admin, func(), error) {
	if configPath == "" {
		return nil, nil, usagef("-config is required")
	}
	cfg, err := authority.LoadConfig(configPath)
	if err != nil {
		return nil, nil, err
	}
	if ac, err := authority.DialAdmin(cfg.AdminSocket); err == nil {
		return ac, func() {}, nil
	}
	svc, err := openService(e, cfg, slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), 500*time.Millisecond, false)
	if errors.Is(err, authority.ErrStoreLocked) {
		return nil, nil, fmt.Errorf("%w: a running mesh-cert serve holds %s but its admin socket %s does not answer; check admin_socket in %s",
			err, cfg.Store, cfg.AdminSocket, configPath)
	}
	if err != nil {
		return nil, nil, err
	}
	for _, w := range svc.Authority.Warnings() {
		fmt.Fprintf(e.stderr, "Warning: %s\n", w)
	}
	return svc.Authority, func() { svc.Close() }, nil
}
