package authority

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority/api"
)

// Renewal is what a renewing host receives.
type Renewal struct {
	Cert     *cert.Certificate
	CertPEM  []byte
	CABundle []byte
}

// Limits on renewal, so that no host, whatever it does, holds more than a few valid
// certificates: its revocation then lists a few entries and the blocklist stays far below
// what nodes accept (see blocklistLimit).
const (
	// MaxHostCerts is the most unexpired, unrevoked certificates a host may hold; a renewal
	// that would make one more is refused until the oldest expires. Normal renewal (at 2/3
	// of the lifetime) keeps two.
	MaxHostCerts = 4
	// RenewBurst is how many renewals a host may make before half of its certificate's
	// lifetime (retries, an operator's test) within one certificate lifetime. Renewals after
	// a change of the CA list (a rotation step) are not counted: they bring the new bundle.
	RenewBurst = 2
)

// Renew checks r (proof of possession, validity of the current cert, freshness) and
// re-issues the identity on record, never one taken from the request, with r.PublicKey.
// The replay checks, the issuance and the update of the host are one transaction.
//
// Only the host's current certificate renews. The one it replaced may only ask again for
// the same new key (the reply to the renewal was lost) and gets the same certificate back;
// any other request from a superseded certificate is a fork, someone else holding a copy of
// the host's old key, and is refused and audited (ErrFork).
func (a *Authority) Renew(r RenewRequest) (Renewal, error) {
	now := a.o.Now()
	if len(r.Nonce) < MinNonceSize || len(r.Nonce) > MaxNonceSize || len(r.MAC) != sha256.Size {
		return Renewal{}, fmt.Errorf("%w: nonce or MAC size", ErrMalformed)
	}
	if err := a.checkPublicKey(r.PublicKey); err != nil {
		return Renewal{}, err
	}
	old, rest, err := cert.UnmarshalPEM(r.Cert)
	if err != nil || len(bytes.TrimSpace(rest)) != 0 {
		return Renewal{}, fmt.Errorf("%w: certificate: %w", ErrMalformed, err)
	}
	if old.Details.IsCA {
		return Renewal{}, fmt.Errorf("%w: a CA certificate", ErrCertInvalid)
	}
	// Proof of possession first: nothing else is looked at for a sender without the key.
	oldKey, err := ecdh.X25519().NewPublicKey(old.Details.PublicKey)
	if err != nil {
		return Renewal{}, fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	shared, err := a.serviceKey.ECDH(oldKey)
	if err != nil {
		return Renewal{}, fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	if !hmac.Equal(api.RenewMAC(shared, &r, a.ServicePublicKey()), r.MAC) {
		return Renewal{}, ErrBadProof
	}
	if d := now.Sub(time.Unix(r.Time, 0)); d > a.o.MaxClockSkew || d < -a.o.MaxClockSkew {
		return Renewal{}, fmt.Errorf("%w: off by %v", ErrStale, d.Truncate(time.Second))
	}
	if _, err := a.pool.Verify(old, now); err != nil {
		return Renewal{}, fmt.Errorf("%w: %w", ErrCertInvalid, err)
	}
	if bytes.Equal(r.PublicKey, old.Details.PublicKey) {
		return Renewal{}, ErrSameKey
	}
	fp := old.Fingerprint()
	var c *cert.Certificate
	var p []byte
	var fork *Host
	err = a.o.Store.Update(func(tx Tx) error {
		fork = nil // a store may run this more than once (pgstore retries)
		if _, revoked, err := tx.Revocation(fp); err != nil {
			return err
		} else if revoked {
			return fmt.Errorf("%w: certificate %s", ErrRevoked, fp)
		}
		rec, ok, err := tx.Cert(fp)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: certificate %s was not issued by this service", ErrCertInvalid, fp)
		}
		h, ok, err := tx.Host(rec.Host)
		if err != nil {
			return err
		}
		var retry *cert.Certificate
		var retryPEM []byte
		switch {
		case !ok:
			return fmt.Errorf("%w: host %s", ErrNotFound, rec.Host)
		case h.State == HostRevoked:
			return fmt.Errorf("%w: %s", ErrRevoked, h.Name)
		case fp == h.Fingerprint:
		case fp == h.PrevFingerprint && h.Fingerprint != "":
			// The cert the current one replaced: only a retry for the same new key (the
			// reply was lost) is not a fork, and it gets the same certificate again.
			cur, ok, err := tx.Cert(h.Fingerprint)
			if err != nil {
				return err
			}
			if ok {
				if cc, _, err := cert.UnmarshalPEM(cur.PEM); err == nil && bytes.Equal(cc.Details.PublicKey, r.PublicKey) {
					retry, retryPEM = cc, cur.PEM
				}
			}
			if retry == nil {
				fork = &h
				return fmt.Errorf("%w: certificate %s was renewed into %s for another key", ErrFork, fp, h.Fingerprint)
			}
		default:
			fork = &h
			return fmt.Errorf("%w: certificate %s is not the host's current one (%s)", ErrFork, fp, h.Fingerprint)
		}
		if r.Counter <= h.RenewCounter {
			return fmt.Errorf("%w: counter %d not above %d", ErrReplay, r.Counter, h.RenewCounter)
		}
		if seen, err := tx.NonceSeen(h.Name, r.Nonce); err != nil {
			return err
		} else if seen {
			return fmt.Errorf("%w: nonce seen before", ErrReplay)
		}
		// A nonce older than twice the skew cannot come back: its request's time is out of range.
		if err := tx.PruneNonces(now.Add(-2 * a.o.MaxClockSkew)); err != nil {
			return err
		}
		if err := tx.PutNonce(h.Name, r.Nonce, now); err != nil {
			return err
		}
		if retry != nil {
			c, p, h.RenewCounter = retry, retryPEM, r.Counter
			a.o.Logger.Info("renewal retried: the same certificate again", "host", h.Name, "fingerprint", retry.Fingerprint())
			return tx.PutHost(h)
		}
		early, err := a.checkRenewalBounds(tx, &h, rec, now)
		if err != nil {
			return err
		}
		c, p, err = a.issue(tx, h, r.PublicKey, now)
		if err != nil {
			return err
		}
		h.PrevFingerprint, h.Fingerprint = h.Fingerprint, c.Fingerprint()
		h.NotAfter, h.LastRenewal, h.RenewCounter = c.Details.NotAfter, now.UTC(), r.Counter
		if err := tx.PutHost(h); err != nil {
			return err
		}
		return a.audit(tx, AuditEntry{Action: "renew", Host: h.Name, Fingerprint: c.Fingerprint(),
			Detail: fmt.Sprintf("from=%s counter=%d not_after=%s%s", fp, r.Counter, c.Details.NotAfter.UTC().Format(time.RFC3339), early)})
	})
	if err != nil {
		if fork != nil {
			a.reportFork(fork.Name, fp, err)
		} else {
			a.o.Logger.Warn("renewal refused", "fingerprint", fp, "err", err)
		}
		return Renewal{}, err
	}
	a.o.Logger.Info("renewed", "host", old.Details.Name, "fingerprint", c.Fingerprint())
	return Renewal{Cert: c, CertPEM: p, CABundle: a.Bundle()}, nil
}

// checkRenewalBounds refuses a renewal of h from rec that comes too early (before half of
// rec's lifetime, beyond the burst allowance) or would give h more than MaxHostCerts valid
// certificates. It records an early renewal in h and returns a note for the audit.
func (a *Authority) checkRenewalBounds(tx Tx, h *Host, rec CertRecord, now time.Time) (string, error) {
	note := ""
	half := rec.NotBefore.Add(rec.NotAfter.Sub(rec.NotBefore) / 2)
	if now.Before(half) {
		if rec.Bundle != a.bundleID(now) {
			note = " early=ca-change"
		} else {
			h.EarlyRenewals = slices.DeleteFunc(h.EarlyRenewals, func(t time.Time) bool { return !t.After(now.Add(-a.o.CertDuration)) })
			if len(h.EarlyRenewals) >= RenewBurst {
				return "", fmt.Errorf("%w: too early: the certificate is at %d%% of its lifetime; renewal is accepted from half of it (%s), "+
					"and the %d earlier renewals allowed per certificate lifetime are used up", ErrRenewLimited,
					int(100*float64(now.Sub(rec.NotBefore))/float64(rec.NotAfter.Sub(rec.NotBefore))), half.UTC().Format(time.RFC3339), RenewBurst)
			}
			h.EarlyRenewals = append(h.EarlyRenewals, now.UTC())
			note = fmt.Sprintf(" early=%d/%d", len(h.EarlyRenewals), RenewBurst)
		}
	}
	certs, err := tx.HostCerts(h.Name)
	if err != nil {
		return "", err
	}
	live, oldest := 0, time.Time{}
	for _, c := range certs {
		if now.After(c.NotAfter) { // as cert.Expired: valid through NotAfter
			continue
		}
		if _, revoked, err := tx.Revocation(c.Fingerprint); err != nil {
			return "", err
		} else if revoked {
			continue
		}
		live++
		if oldest.IsZero() || c.NotAfter.Before(oldest) {
			oldest = c.NotAfter
		}
	}
	if live >= MaxHostCerts {
		return "", fmt.Errorf("%w: the host holds %d unexpired certificates, at most %d; the next renewal is possible once the oldest expires (%s)",
			ErrRenewLimited, live, MaxHostCerts, oldest.UTC().Format(time.RFC3339))
	}
	return note, nil
}

// reportFork logs a renewal from a superseded certificate and audits it once per such
// certificate (a copy asking again is only logged). It is its own transaction: the
// refused renewal's is rolled back.
func (a *Authority) reportFork(host, fp string, cause error) {
	a.o.Logger.Error("renewal from a superseded certificate: another copy of this host's key may exist; "+
		"revoke the host and bring it back with `mesh-cert invite -name NAME -replace`", "host", host, "fingerprint", fp, "err", cause)
	err := a.o.Store.Update(func(tx Tx) error {
		h, ok, err := tx.Host(host)
		if err != nil || !ok || h.ForkReported == fp {
			return err
		}
		h.ForkReported = fp
		if err := tx.PutHost(h); err != nil {
			return err
		}
		return a.audit(tx, AuditEntry{Action: "renew-fork", Host: host, Fingerprint: fp,
			Detail: "possible key theft: renewal from a superseded certificate (current " + h.Fingerprint + ")"})
	})
	if err != nil {
		a.o.Logger.Error("cannot audit a renewal fork", "host", host, "err", err)
	}
}
