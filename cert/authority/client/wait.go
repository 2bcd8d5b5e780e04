package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority/api"
)

// ErrWaitUnsupported means the service answered a blocklist wait with a list no newer than
// the one we have: it predates the long-poll and ignored the query. Fetch on an interval.
var ErrWaitUnsupported = errors.New("CA service does not support waiting for the blocklist")

// WaitBlocklist asks for a blocklist newer than version after and lets the service hold the
// request until one exists, for at most wait (whole seconds, capped at
// api.MaxBlocklistWait). It returns the verified list, or nil and no error when
// nothing newer came within wait.
func (c *Client) WaitBlocklist(ctx context.Context, pool *cert.Pool, after uint64, wait time.Duration) (*cert.SignedBlocklist, error) {
	wait = min(max(wait, 0), api.MaxBlocklistWait).Truncate(time.Second)
	// The client's per-request timeout covers the exchange; the held time comes on top.
	ctx, cancel := context.WithTimeout(ctx, wait+c.http.Timeout)
	defer cancel()
	base := c.base()
	u := base + "/v1/blocklist?after=" + strconv.FormatUint(after, 10) + "&wait=" + strconv.Itoa(int(wait/time.Second))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	// Same pinned transport; no client-wide timeout, the context bounds the request.
	resp, err := (&http.Client{Transport: c.http.Transport}).Do(req)
	if err != nil {
		if ctx.Err() == nil {
			c.failover(base) // the caller's next wait goes to another replica
		}
		if errors.Is(err, ErrPinMismatch) {
			return nil, ErrPinMismatch
		}
		return nil, fmt.Errorf("CA service %s: %w", base, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil, nil
	case http.StatusOK:
	default:
		return nil, responseError(resp)
	}
	var b cert.SignedBlocklist
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(&b); err != nil {
		return nil, fmt.Errorf("CA service: bad response: %w", err)
	}
	if err := cert.VerifyBlocklist(&b, pool); err != nil {
		return nil, err
	}
	if b.Version <= after {
		return nil, ErrWaitUnsupported
	}
	return &b, nil
}
