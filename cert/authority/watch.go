package authority

import "sync"

// Waking long-polls of the blocklist (GET /v1/blocklist?after=V&wait=S) when its version
// changes. The bbolt store is held by one process, so every change goes through this
// Authority (mesh-cert revoke reaches a running service over its admin socket); the store
// wrapper below catches every committed bump, whichever method made it.

// changeSignal is a broadcast: wait returns a channel that the next signal closes.
type changeSignal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *changeSignal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *changeSignal) signal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// BlocklistChanged returns a channel that is closed when the blocklist version changes
// after the call. Take the channel first and read the version after, so no change is missed.
func (a *Authority) BlocklistChanged() <-chan struct{} { return a.blChanged.wait() }

// signallingStore signals after an Update that bumped the blocklist version has committed
// (before the commit a woken reader would still see the old version).
type signallingStore struct {
	Store
	sig *changeSignal
}

func (s signallingStore) Update(fn func(Tx) error) error {
	var bumped bool
	err := s.Store.Update(func(tx Tx) error {
		bumped = false // a store may retry fn
		return fn(bumpTx{Tx: tx, bumped: &bumped})
	})
	if err == nil && bumped {
		s.sig.signal()
	}
	return err
}

type bumpTx struct {
	Tx
	bumped *bool
}

func (t bumpTx) BumpBlocklistVersion() (uint64, error) {
	v, err := t.Tx.BumpBlocklistVersion()
	if err == nil {
		*t.bumped = true
	}
	return v, err
}

// BlocklistWatcher is a store that other processes write too (pgstore): it calls fn after
// any of them commits a blocklist version bump, and after it may have missed one (its
// connection to the database was lost), so waiting long-polls re-read the version.
type BlocklistWatcher interface {
	WatchBlocklist(fn func())
}
