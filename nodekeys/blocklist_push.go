package nodekeys

import (
	"context"
	"errors"
	"time"

	"github.com/meshnode/meshnode/cert/authority/api"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/overlay"
)

// Blocklist push (renewal.blocklist_push): the node keeps a long-poll open to the CA
// service, which answers it the moment a revocation bumps the blocklist version. The list
// goes through the same apply path as a fetched one, so a lighthouse passes it on to its
// peers at once (extension op 3). runBlocklist's interval fetch stays as the fallback for
// a service that is unreachable, too old, or refusing waiters.

const (
	// pushWait is how long each request asks the service to hold it; under the service's
	// cap (api.MaxBlocklistWait) and the 60 s idle timeouts of common middleboxes.
	pushWait = 50 * time.Second
	// maxPushRetry caps the backoff while the service is down or busy; the interval fetch
	// covers the gap.
	maxPushRetry = time.Minute
	// busyRetry is the least wait after the service refused a waiter for being full, as
	// its Retry-After says.
	busyRetry = 10 * time.Second
	// quickNoChange is an "unchanged" answer that came too fast to have waited: a service
	// shutting down. The next request backs off rather than spin.
	quickNoChange = time.Second
)

// runBlocklistPush holds the blocklist long-poll until ctx ends or the service turns out
// not to support it.
func (r *renewer) runBlocklistPush(ctx context.Context) {
	wait := r.minRetry
	var after uint64 // highest version the service gave us, in case the node refused it
	failing := false
	for ctx.Err() == nil {
		if v, ok := r.m.blocklistVersion(); ok {
			after = max(after, v)
		}
		start := time.Now()
		b, err := r.client.WaitBlocklist(ctx, r.m.current().Pool, after, pushWait)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, client.ErrWaitUnsupported) {
			r.log.Info("the CA service cannot push blocklists (an older version); fetching every renewal.blocklist_interval only")
			return
		}
		if err == nil && b == nil && time.Since(start) < quickNoChange {
			err = errors.New("the CA service answered at once without waiting (shutting down?)")
		}
		if err != nil {
			// The interval fetch warns about an unreachable service; say it here once.
			if !failing {
				r.log.Info("blocklist push interrupted; retrying with backoff, the interval fetch continues", "err", err, "retry_in", wait)
			} else {
				r.log.Debug("blocklist push still failing", "err", err, "retry_in", wait)
			}
			failing = true
			if errors.Is(err, api.ErrBusy) {
				wait = max(wait, busyRetry)
			}
			select {
			case <-ctx.Done():
				return
			case <-r.clock.After(wait + time.Duration(r.rand()*float64(wait)/2)):
			}
			wait = min(2*wait, maxPushRetry)
			continue
		}
		if failing {
			r.log.Info("blocklist push restored")
			failing = false
		}
		wait = r.minRetry
		if b == nil {
			continue // nothing newer within pushWait: ask again
		}
		after = max(after, b.Version)
		if applied, err := r.m.applyBlocklist(b, overlay.BlocklistFromCA); err != nil {
			r.log.Error("applying the pushed blocklist failed", "err", err, "version", b.Version)
		} else if applied {
			r.log.Info("blocklist pushed by the CA service applied", "version", b.Version, "entries", len(b.Fingerprints))
		}
	}
}
