package authority

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// StoreDump is everything a store holds, in a fixed order: what CopyStore moves and
// CompareStores compares.
type StoreDump struct {
	CIDRs            []CIDR
	Hosts            []Host
	Certs            []CertRecord
	Tokens           []TokenRecord
	Revocations      []Revocation
	Nonces           []Nonce
	Audit            []AuditEntry
	BlocklistVersion uint64
}

// Dump reads the whole store in one consistent view.
func Dump(s Store) (StoreDump, error) {
	var d StoreDump
	err := s.View(func(tx Tx) error {
		var err error
		if d.CIDRs, err = tx.CIDRs(); err != nil {
			return err
		}
		if d.Hosts, err = tx.Hosts(); err != nil {
			return err
		}
		if d.Certs, err = tx.Certs(); err != nil {
			return err
		}
		if d.Tokens, err = tx.Tokens(); err != nil {
			return err
		}
		if d.Revocations, err = tx.Revocations(); err != nil {
			return err
		}
		if d.Nonces, err = tx.Nonces(); err != nil {
			return err
		}
		if d.Audit, err = tx.Audit(); err != nil {
			return err
		}
		d.BlocklistVersion, err = tx.BlocklistVersion()
		return err
	})
	if err != nil {
		return d, err
	}
	// Engines order keys differently (bytes, collations): sort here so dumps compare.
	slices.SortFunc(d.CIDRs, func(a, b CIDR) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(d.Hosts, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(d.Certs, func(a, b CertRecord) int { return strings.Compare(a.Fingerprint, b.Fingerprint) })
	slices.SortFunc(d.Tokens, func(a, b TokenRecord) int { return strings.Compare(a.Hash, b.Hash) })
	slices.SortFunc(d.Revocations, func(a, b Revocation) int { return strings.Compare(a.Fingerprint, b.Fingerprint) })
	slices.SortFunc(d.Nonces, func(a, b Nonce) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return bytes.Compare(a.Nonce, b.Nonce)
	})
	return d, nil
}

// ErrStoreNotEmpty refuses to copy into a store that holds anything already.
var ErrStoreNotEmpty = errors.New("destination store is not empty")

// CopyStore copies everything in src into dst, which must be empty, in one transaction of
// dst: a failure leaves dst empty. Audit entries keep their numbers and times.
func CopyStore(dst, src Store) (StoreDump, error) {
	d, err := Dump(src)
	if err != nil {
		return d, fmt.Errorf("reading the source store: %w", err)
	}
	err = dst.Update(func(tx Tx) error {
		e, err := Dump(txStore{tx})
		if err != nil {
			return err
		}
		if n := len(e.CIDRs) + len(e.Hosts) + len(e.Certs) + len(e.Tokens) + len(e.Revocations) + len(e.Nonces) + len(e.Audit); n > 0 || e.BlocklistVersion > 0 {
			return fmt.Errorf("%w: it holds %d records", ErrStoreNotEmpty, n)
		}
		for _, c := range d.CIDRs {
			if err := tx.PutCIDR(c); err != nil {
				return err
			}
		}
		for _, h := range d.Hosts {
			if err := tx.PutHost(h); err != nil {
				return err
			}
		}
		for _, c := range d.Certs {
			if err := tx.PutCert(c); err != nil {
				return err
			}
		}
		for _, t := range d.Tokens {
			if err := tx.PutToken(t); err != nil {
				return err
			}
		}
		for _, r := range d.Revocations {
			if err := tx.PutRevocation(r); err != nil {
				return err
			}
		}
		for _, n := range d.Nonces {
			if err := tx.PutNonce(n.Host, n.Nonce, n.At); err != nil {
				return err
			}
		}
		for _, a := range d.Audit {
			seq, err := tx.AppendAudit(a)
			if err != nil {
				return err
			}
			if seq != a.Seq {
				return fmt.Errorf("audit entry %d would become %d: the source's log has a gap", a.Seq, seq)
			}
		}
		for v := uint64(0); v < d.BlocklistVersion; v++ {
			if _, err := tx.BumpBlocklistVersion(); err != nil {
				return err
			}
		}
		return nil
	})
	return d, err
}

// CompareStores reports the first difference between what a and b hold, or nil.
func CompareStores(a, b Store) error {
	da, err := Dump(a)
	if err != nil {
		return err
	}
	db, err := Dump(b)
	if err != nil {
		return err
	}
	for _, part := range []struct {
		name string
		x, y any
	}{
		{"CIDRs", da.CIDRs, db.CIDRs}, {"hosts", da.Hosts, db.Hosts}, {"certificates", da.Certs, db.Certs},
		{"tokens", da.Tokens, db.Tokens}, {"revocations", da.Revocations, db.Revocations},
		{"nonces", da.Nonces, db.Nonces}, {"audit log", da.Audit, db.Audit},
		{"blocklist version", da.BlocklistVersion, db.BlocklistVersion},
	} {
		// The JSON form is what both stores keep, so equal records encode equally.
		jx, err1 := json.Marshal(part.x)
		jy, err2 := json.Marshal(part.y)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if !bytes.Equal(jx, jy) {
			return fmt.Errorf("the stores differ in their %s", part.name)
		}
	}
	return nil
}

// txStore lets Dump read inside a transaction that is already open.
type txStore struct{ tx Tx }

func (s txStore) View(fn func(Tx) error) error   { return fn(s.tx) }
func (s txStore) Update(fn func(Tx) error) error { return fn(s.tx) }
func (s txStore) Close() error                   { return nil }
