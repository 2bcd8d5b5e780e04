package authority

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The blocklist long-poll: GET /v1/blocklist?after=V&wait=S answers at once with the signed
// list if its version is above V, else holds the request until the version changes (then
// the new list) or S seconds pass (then 204 No Content). Nodes keep one open so a
// revocation reaches them in well under a second instead of at their next interval fetch.
// Waiting costs a goroutine and a connection, so waits are bounded in time and number.

const (
	// DefaultMaxBlocklistWaiters bounds the requests held at once (a goroutine, a TLS
	// connection and a few KiB each); beyond it a request is refused with 503 "busy".
	DefaultMaxBlocklistWaiters = 1024
	// waitSlack is added to a held request's connection deadlines beyond its wait.
	waitSlack = 10 * time.Second
)

// parseWait reads after and wait from a long-poll query. after is required; wait defaults
// to 0 (answer at once: the list if newer, else 204).
func parseWait(q url.Values) (after uint64, wait time.Duration, err error) {
	if !q.Has("after") {
		return 0, 0, fmt.Errorf("%w: after: required with wait (the blocklist version the client has, 0 for none)", ErrMalformed)
	}
	after, err = strconv.ParseUint(q.Get("after"), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: after: %q is not a blocklist version (a decimal integer)", ErrMalformed, q.Get("after"))
	}
	if q.Has("wait") {
		max := uint64(MaxBlocklistWait / time.Second)
		secs, err := strconv.ParseUint(q.Get("wait"), 10, 64)
		if err != nil || secs > max {
			return 0, 0, fmt.Errorf("%w: wait: %q is not a number of seconds from 0 to %d", ErrMalformed, q.Get("wait"), max)
		}
		wait = time.Duration(secs) * time.Second
	}
	return after, wait, nil
}

// waitBlocklist serves the long-poll form of GET /v1/blocklist.
func (s *Server) waitBlocklist(w http.ResponseWriter, r *http.Request) {
	after, wait, err := parseWait(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	held := false
	for {
		// The channel before the version: a change between the two still wakes us.
		changed := s.o.Authority.BlocklistChanged()
		v, err := s.o.Authority.BlocklistVersion()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if v > after {
			b, err := s.o.Authority.Blocklist()
			if err != nil {
				s.fail(w, r, err)
				return
			}
			s.ok(w, r, b)
			return
		}
		if wait == 0 {
			s.unchanged(w, r)
			return
		}
		if !held {
			select {
			case s.waiters <- struct{}{}:
				held = true
				defer func() { <-s.waiters }()
			default:
				w.Header().Set("Retry-After", "10")
				s.fail(w, r, ErrBusy)
				return
			}
			// The server's 10 s read and write timeouts would cut a held request (the
			// read deadline also cancels its context); this one may take wait + slack.
			rc := http.NewResponseController(w)
			d := time.Now().Add(wait + waitSlack)
			_ = rc.SetReadDeadline(d) // not supported by test recorders, which have no deadlines
			_ = rc.SetWriteDeadline(d)
		}
		select {
		case <-changed:
		case <-timeout.C:
			s.unchanged(w, r)
			return
		case <-s.stopping:
			// Shutting down: answer now so the graceful shutdown need not wait for us.
			s.unchanged(w, r)
			return
		case <-r.Context().Done():
			s.requests.WithLabelValues(r.URL.Path, "gone").Inc()
			return
		}
	}
}

// unchanged answers a wait that saw no newer list: 204, no body.
func (s *Server) unchanged(w http.ResponseWriter, r *http.Request) {
	s.requests.WithLabelValues(r.URL.Path, "unchanged").Inc()
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
