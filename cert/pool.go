package cert

import (
	"bytes"
	"fmt"
	"sync"
	"time"
)

// Pool holds the trusted CAs, keyed by fingerprint, and the blocklist of fingerprints.
// It is safe for concurrent use: the node reads it per handshake while config reloads and
// revocations update it.
type Pool struct {
	now func() time.Time

	mu       sync.RWMutex
	cas      map[string]*Certificate
	order    []string // fingerprints in insertion order, so CAs() is deterministic
	blocked  map[string]struct{}
	warnings []string
}

// NewPool returns an empty pool that judges CA expiry (for Warnings) by the wall clock.
func NewPool() *Pool { return NewPoolWithClock(time.Now) }

// NewPoolWithClock returns an empty pool that judges CA expiry by now.
func NewPoolWithClock(now func() time.Time) *Pool {
	return &Pool{now: now, cas: map[string]*Certificate{}, blocked: map[string]struct{}{}}
}

// NewPoolFromPEM loads a bundle of CA certificates with Nebula's rules: every block must be
// a self-signed CA; expired CAs are kept (see Warnings) but at least one must be unexpired.
func NewPoolFromPEM(b []byte) (*Pool, error) { return NewPoolFromPEMWithClock(b, time.Now) }

// NewPoolFromPEMWithClock is NewPoolFromPEM judging expiry by now.
func NewPoolFromPEMWithClock(b []byte, now func() time.Time) (*Pool, error) {
	p := NewPoolWithClock(now)
	rest := b
	for len(bytes.TrimSpace(rest)) > 0 {
		c, r, err := UnmarshalPEM(rest)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		rest = r
		if err := p.AddCA(c); err != nil {
			return nil, err
		}
	}
	t := now()
	for _, c := range p.CAs() {
		if !c.Expired(t) {
			return p, nil
		}
	}
	if len(p.cas) == 0 {
		return nil, fmt.Errorf("CA bundle: %w: no certificates found", ErrMalformed)
	}
	return nil, fmt.Errorf("no valid CA certificates present: %w", ErrRootExpired)
}

// AddCA trusts a CA. It must be a CA and self-signed; an expired CA is added with a warning.
func (p *Pool) AddCA(c *Certificate) error {
	if !c.Details.IsCA {
		return fmt.Errorf("%s: %w", c.Details.Name, ErrNotCA)
	}
	if !c.CheckSignature(c.Details.PublicKey) {
		return fmt.Errorf("%s: %w", c.Details.Name, ErrNotSelfSigned)
	}
	fp := c.Fingerprint()
	expired := c.Expired(p.now())
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.cas[fp]; !ok {
		p.order = append(p.order, fp)
	}
	p.cas[fp] = c
	if expired {
		p.warnings = append(p.warnings, fmt.Sprintf("expired certificate present in CA pool: %s (%s)", c.Details.Name, fp))
	}
	return nil
}

// CAs returns the trusted CAs in the order they were added.
func (p *Pool) CAs() []*Certificate {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]*Certificate, 0, len(p.order))
	for _, fp := range p.order {
		out = append(out, p.cas[fp])
	}
	return out
}

// Warnings lists problems that did not stop loading, such as expired CAs.
func (p *Pool) Warnings() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return append([]string(nil), p.warnings...)
}

// Block adds a fingerprint (hex, as printed by mesh-cert print) to the blocklist. Blocking a
// CA's fingerprint refuses every certificate it issued.
func (p *Pool) Block(fingerprint string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked[fingerprint] = struct{}{}
}

// IsBlocked reports whether fingerprint is on the blocklist.
func (p *Pool) IsBlocked(fingerprint string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	_, ok := p.blocked[fingerprint]
	return ok
}

// CA returns the trusted CA with this fingerprint, if any.
func (p *Pool) CA(fingerprint string) (*Certificate, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.cas[fingerprint]
	return c, ok
}

// Revalidate re-checks, at time now, a certificate that Verify accepted before (a
// tunnel's peer): blocklist, issuing CA present and not blocklisted, CA expiry, expiry.
// The signature and the CA constraints are not checked again: they depend only on c and
// its CA, which Issuer names by fingerprint, so a CA still trusted under that name gives
// the same answer, and a signature check is most of a handshake's certificate cost. (It is
// also the cheap first look at a certificate not yet verified: a refusal here is final.)
// fingerprint is c's (callers that re-check often keep it, so it is not hashed again). It
// returns the issuing CA, or the error Verify would.
func (p *Pool) Revalidate(c *Certificate, fingerprint string, now time.Time) (*Certificate, error) {
	return p.standing(c, fingerprint, now)
}

// standing is the part of Verify that can change after a certificate verified: the
// blocklist, the issuing CA's presence, and both expiries, in Nebula 1.6.1's order.
func (p *Pool) standing(c *Certificate, fingerprint string, now time.Time) (*Certificate, error) {
	if p.IsBlocked(fingerprint) {
		return nil, ErrBlocked
	}
	if c.Details.Issuer == "" {
		return nil, ErrNoIssuer
	}
	ca, ok := p.CA(c.Details.Issuer)
	if !ok {
		return nil, ErrUnknownCA
	}
	if p.IsBlocked(c.Details.Issuer) {
		return nil, withMsg(ErrBlocked, "signing certificate has been blocked")
	}
	if ca.Expired(now) {
		return nil, ErrRootExpired
	}
	if c.Expired(now) {
		return nil, ErrExpired
	}
	return ca, nil
}

// Verify checks c against the pool at time now, in Nebula 1.6.1's order: blocklist, issuer,
// issuing CA blocklisted (our addition), CA expiry, expiry, signature, CA constraints. It
// returns the issuing CA, or an error wrapping one of the sentinel errors.
func (p *Pool) Verify(c *Certificate, now time.Time) (*Certificate, error) {
	ca, err := p.standing(c, c.Fingerprint(), now)
	if err != nil {
		return nil, err
	}
	if !c.CheckSignature(ca.Details.PublicKey) {
		return nil, ErrSignatureMismatch
	}
	if err := c.CheckConstraints(ca); err != nil {
		return nil, err
	}
	return ca, nil
}
