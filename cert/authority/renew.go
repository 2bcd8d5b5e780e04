package authority

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/meshnode/meshnode/cert"
)

// RenewRequest asks for a new certificate for the identity of Cert, with PublicKey. MAC
// proves that the sender holds Cert's private key: it is HMAC-SHA256 keyed by
// renewKey(X25519(cert key, service key)) over the canonical encoding of every other field
// (see macInput), so a request cannot be altered, and Nonce plus a per-host Counter that
// must strictly increase mean it cannot be replayed either.
type RenewRequest struct {
	Cert      []byte `json:"cert"`       // PEM of the current certificate
	PublicKey []byte `json:"public_key"` // the new X25519 public key
	Nonce     []byte `json:"nonce"`      // 16 to 64 random bytes
	Counter   uint64 `json:"counter"`    // greater than the host's last accepted counter
	Time      int64  `json:"time"`       // unix seconds, within MaxClockSkew of the service
	MAC       []byte `json:"mac"`
}

const renewLabel = "meshnode-renew-v1"

// Nonce sizes a renewal request may carry.
const (
	MinNonceSize = 16
	MaxNonceSize = 64
)

func macInput(r *RenewRequest, servicePub []byte) []byte {
	var b []byte
	field := func(v []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	field([]byte(renewLabel))
	field(servicePub)
	field(r.Cert)
	field(r.PublicKey)
	field(r.Nonce)
	b = binary.BigEndian.AppendUint64(b, r.Counter)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
	return b
}

// renewMAC derives a key from the shared secret (never used raw) and MACs the request.
func renewMAC(shared []byte, r *RenewRequest, servicePub []byte) []byte {
	k := hmac.New(sha256.New, shared)
	k.Write([]byte(renewLabel))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write(macInput(r, servicePub))
	return m.Sum(nil)
}

// SignRenewRequest sets r.MAC using the node's current private key and the service's public
// key (both X25519).
func SignRenewRequest(r *RenewRequest, nodeKey, servicePub []byte) error {
	priv, err := ecdh.X25519().NewPrivateKey(nodeKey)
	if err != nil {
		return fmt.Errorf("node key: %w", err)
	}
	pub, err := ecdh.X25519().NewPublicKey(servicePub)
	if err != nil {
		return fmt.Errorf("service key: %w", err)
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return fmt.Errorf("service key: %w", err)
	}
	r.MAC = renewMAC(shared, r, servicePub)
	return nil
}

// Renewal is what a renewing host receives.
type Renewal struct {
	Cert     *cert.Certificate
	CertPEM  []byte
	CABundle []byte
}

// Renew checks r (proof of possession, validity of the current cert, freshness) and
// re-issues the identity on record, never one taken from the request, with r.PublicKey.
// The replay checks, the issuance and the update of the host are one transaction.
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
	if !hmac.Equal(renewMAC(shared, &r, a.ServicePublicKey()), r.MAC) {
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
	err = a.o.Store.Update(func(tx Tx) error {
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
		switch {
		case !ok:
			return fmt.Errorf("%w: host %s", ErrNotFound, rec.Host)
		case h.State == HostRevoked:
			return fmt.Errorf("%w: %s", ErrRevoked, h.Name)
		case fp != h.Fingerprint && fp != h.PrevFingerprint:
			return ErrCertSuperseded
		case r.Counter <= h.RenewCounter:
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
			Detail: fmt.Sprintf("from=%s counter=%d not_after=%s", fp, r.Counter, c.Details.NotAfter.UTC().Format(time.RFC3339))})
	})
	if err != nil {
		a.o.Logger.Warn("renewal refused", "fingerprint", fp, "err", err)
		return Renewal{}, err
	}
	a.o.Logger.Info("renewed", "host", old.Details.Name, "fingerprint", c.Fingerprint())
	return Renewal{Cert: c, CertPEM: p, CABundle: a.Bundle()}, nil
}
