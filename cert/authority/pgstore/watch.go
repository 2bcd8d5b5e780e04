package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
)

// channel is the NOTIFY channel of blocklist version bumps. A NOTIFY sent inside a
// transaction is delivered at its commit and not at all if it rolls back, so a woken
// replica always finds the new version.
const channel = "meshnode_blocklist"

var _ authority.BlocklistWatcher = (*Store)(nil)

// WatchBlocklist implements authority.BlocklistWatcher with LISTEN on one connection of
// its own, kept until Close; after losing it (PostgreSQL restarting) it reconnects and calls
// fn once, since a bump may have gone by meanwhile.
func (s *Store) WatchBlocklist(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.wmu.Lock()
	s.watchers = append(s.watchers, fn)
	s.wmu.Unlock()
	if s.stopWatch != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.stopWatch = func() { cancel(); <-done }
	go func() {
		defer close(done)
		s.listen(ctx)
	}()
}

func (s *Store) notifyWatchers() {
	s.wmu.Lock()
	fns := append([]func(){}, s.watchers...)
	s.wmu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (s *Store) listen(ctx context.Context) {
	first := true
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, &first)
		if ctx.Err() != nil {
			return
		}
		_ = err // the next attempt tells; a store has no logger, and fn covers the gap
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, first *bool) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection stays in LISTEN mode: it never goes back to the pool.
	c := conn.Hijack()
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "LISTEN "+channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if !*first {
		s.notifyWatchers() // bumps while we were not listening
	}
	*first = false
	for {
		if _, err := c.WaitForNotification(ctx); err != nil {
			return err
		}
		s.notifyWatchers()
	}
}

// BindIdentity implements authority.IdentityBinder: the first replica records its TLS pin
// and renewal public key; a replica (or admin machine) with other key files is refused.
func (s *Store) BindIdentity(tlsPin, servicePublicKey string) error {
	want := map[string]string{"tls_pin": tlsPin, "service_public_key": servicePublicKey}
	return s.Update(func(tx authority.Tx) error {
		t := tx.(*pgTx)
		for k, v := range want {
			if err := t.exec("INSERT INTO meshnode.identity (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING", k, v); err != nil {
				return err
			}
			var got string
			if err := t.tx.QueryRow(t.ctx, "SELECT v FROM meshnode.identity WHERE k = $1", k).Scan(&got); err != nil {
				return t.fail(fmt.Errorf("store: identity: %w", err))
			}
			if got != v {
				return fmt.Errorf("%w: this replica's %s is %.16s…, the database's %.16s…", ErrIdentityMismatch, k, v, got)
			}
		}
		return nil
	})
}
