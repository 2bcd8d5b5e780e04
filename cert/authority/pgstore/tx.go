package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshnode/meshnode/cert/authority"
)

// pgTx is one transaction. The first database error is kept in err: PostgreSQL aborts the
// transaction at it, so every later statement would fail anyway, and Store.run decides on
// it (retry or not) whatever the caller's function returned.
type pgTx struct {
	ctx context.Context
	tx  pgx.Tx
	err error
}

func (t *pgTx) fail(err error) error {
	if t.err == nil {
		t.err = err
	}
	return err
}

func (t *pgTx) exec(sql string, args ...any) error {
	if t.err != nil {
		return t.err
	}
	if _, err := t.tx.Exec(t.ctx, sql, args...); err != nil {
		return t.fail(fmt.Errorf("store: %w", err))
	}
	return nil
}

// getDoc reads one record's JSON by key from table.
func getDoc[T any](t *pgTx, table, col, key string) (T, bool, error) {
	var v T
	if t.err != nil {
		return v, false, t.err
	}
	var b []byte
	err := t.tx.QueryRow(t.ctx, "SELECT doc FROM meshnode."+table+" WHERE "+col+" = $1", key).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, false, nil
	}
	if err != nil {
		return v, false, t.fail(fmt.Errorf("store: %s/%s: %w", table, key, err))
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, false, fmt.Errorf("store: %s/%s: %w", table, key, err)
	}
	return v, true, nil
}

// allDocs reads every record of table (in key order, as bbolt gives them), where filter
// (with args) may narrow it.
func allDocs[T any](t *pgTx, table, order, filter string, args ...any) ([]T, error) {
	if t.err != nil {
		return nil, t.err
	}
	rows, err := t.tx.Query(t.ctx, "SELECT doc FROM meshnode."+table+" "+filter+" ORDER BY "+order, args...)
	if err != nil {
		return nil, t.fail(fmt.Errorf("store: %s: %w", table, err))
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, t.fail(fmt.Errorf("store: %s: %w", table, err))
		}
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("store: %s: %w", table, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail(fmt.Errorf("store: %s: %w", table, err))
	}
	return out, nil
}

// putDoc upserts v as the record key of table; extra are further columns kept beside the
// JSON for indexes and constraints.
func putDoc(t *pgTx, table, col, key string, v any, extra ...colVal) error {
	if key == "" {
		return fmt.Errorf("store: %s: empty key", table)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: %s/%s: %w", table, key, err)
	}
	cols, vals, set := col+", doc", "$1, $2", "doc = EXCLUDED.doc"
	args := []any{key, b}
	for i, e := range extra {
		cols += ", " + e.col
		vals += fmt.Sprintf(", $%d", i+3)
		set += ", " + e.col + " = EXCLUDED." + e.col
		args = append(args, e.val)
	}
	return t.exec("INSERT INTO meshnode."+table+" ("+cols+") VALUES ("+vals+") ON CONFLICT ("+col+") DO UPDATE SET "+set, args...)
}

type colVal struct {
	col string
	val any
}

func (t *pgTx) CIDR(name string) (authority.CIDR, bool, error) {
	return getDoc[authority.CIDR](t, "cidrs", "name", name)
}
func (t *pgTx) PutCIDR(c authority.CIDR) error { return putDoc(t, "cidrs", "name", c.Name, c) }
func (t *pgTx) CIDRs() ([]authority.CIDR, error) {
	return allDocs[authority.CIDR](t, "cidrs", "name", "")
}

func (t *pgTx) Host(name string) (authority.Host, bool, error) {
	return getDoc[authority.Host](t, "hosts", "name", name)
}

// PutHost keeps every address of the host in a UNIQUE column (host_addrs.addr; the first
// one also in hosts.ip, as schema 1 did): two hosts with one address cannot be committed,
// whatever the code above did. The host's rows are replaced, so an address it gave up is free.
func (t *pgTx) PutHost(h authority.Host) error {
	var ip *string
	if h.IP.IsValid() {
		s := h.IP.Addr().String()
		ip = &s
	}
	if err := putDoc(t, "hosts", "name", h.Name, h, colVal{"ip", ip}); err != nil {
		return err
	}
	if err := t.exec("DELETE FROM meshnode.host_addrs WHERE host = $1", h.Name); err != nil {
		return err
	}
	for _, p := range h.Addrs() {
		if p.IsValid() {
			if err := t.exec("INSERT INTO meshnode.host_addrs (addr, host) VALUES ($1, $2)", p.Addr().String(), h.Name); err != nil {
				return err
			}
		}
	}
	return nil
}
func (t *pgTx) Hosts() ([]authority.Host, error) {
	return allDocs[authority.Host](t, "hosts", "name", "")
}

func (t *pgTx) Cert(fp string) (authority.CertRecord, bool, error) {
	return getDoc[authority.CertRecord](t, "certs", "fingerprint", fp)
}
func (t *pgTx) PutCert(c authority.CertRecord) error {
	return putDoc(t, "certs", "fingerprint", c.Fingerprint, c, colVal{"host", c.Host})
}
func (t *pgTx) Certs() ([]authority.CertRecord, error) {
	return allDocs[authority.CertRecord](t, "certs", "fingerprint", "")
}
func (t *pgTx) HostCerts(host string) ([]authority.CertRecord, error) {
	return allDocs[authority.CertRecord](t, "certs", "fingerprint", "WHERE host = $1", host)
}

func (t *pgTx) Token(hash string) (authority.TokenRecord, bool, error) {
	return getDoc[authority.TokenRecord](t, "tokens", "hash", hash)
}
func (t *pgTx) PutToken(r authority.TokenRecord) error { return putDoc(t, "tokens", "hash", r.Hash, r) }
func (t *pgTx) Tokens() ([]authority.TokenRecord, error) {
	return allDocs[authority.TokenRecord](t, "tokens", "hash", "")
}

func (t *pgTx) Revocation(fp string) (authority.Revocation, bool, error) {
	return getDoc[authority.Revocation](t, "revocations", "fingerprint", fp)
}
func (t *pgTx) PutRevocation(r authority.Revocation) error {
	return putDoc(t, "revocations", "fingerprint", r.Fingerprint, r)
}
func (t *pgTx) Revocations() ([]authority.Revocation, error) {
	return allDocs[authority.Revocation](t, "revocations", "fingerprint", "")
}

// counter reads (or, with bump, increments) a row of meta. The increment is an UPDATE of
// one row: of two transactions bumping it, the later one waits for the first and then
// fails serialization and is retried, so values are never handed out twice or skipped.
func (t *pgTx) counter(k string, bump bool) (uint64, error) {
	if t.err != nil {
		return 0, t.err
	}
	q := "SELECT v FROM meshnode.meta WHERE k = $1"
	if bump {
		q = "UPDATE meshnode.meta SET v = v + 1 WHERE k = $1 RETURNING v"
	}
	var v int64
	if err := t.tx.QueryRow(t.ctx, q, k).Scan(&v); err != nil {
		return 0, t.fail(fmt.Errorf("store: %s: %w", k, err))
	}
	return uint64(v), nil
}

func (t *pgTx) BlocklistVersion() (uint64, error) { return t.counter("blocklist_version", false) }
func (t *pgTx) BumpBlocklistVersion() (uint64, error) {
	v, err := t.counter("blocklist_version", true)
	if err != nil {
		return 0, err
	}
	// Delivered to every replica's LISTEN at commit, not at all on rollback.
	return v, t.exec("SELECT pg_notify($1, $2)", channel, fmt.Sprint(v))
}

func (t *pgTx) NonceSeen(host string, nonce []byte) (bool, error) {
	if t.err != nil {
		return false, t.err
	}
	var seen bool
	err := t.tx.QueryRow(t.ctx, "SELECT EXISTS (SELECT 1 FROM meshnode.nonces WHERE host = $1 AND nonce = $2)", host, nonce).Scan(&seen)
	if err != nil {
		return false, t.fail(fmt.Errorf("store: nonces: %w", err))
	}
	return seen, nil
}

func (t *pgTx) PutNonce(host string, nonce []byte, at time.Time) error {
	return t.exec("INSERT INTO meshnode.nonces (host, nonce, at) VALUES ($1, $2, $3) ON CONFLICT (host, nonce) DO UPDATE SET at = EXCLUDED.at",
		host, nonce, at.Truncate(time.Second))
}

func (t *pgTx) PruneNonces(before time.Time) error {
	return t.exec("DELETE FROM meshnode.nonces WHERE at < $1", before.Truncate(time.Second))
}

func (t *pgTx) Nonces() ([]authority.Nonce, error) {
	if t.err != nil {
		return nil, t.err
	}
	rows, err := t.tx.Query(t.ctx, "SELECT host, nonce, at FROM meshnode.nonces ORDER BY host, nonce")
	if err != nil {
		return nil, t.fail(fmt.Errorf("store: nonces: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (authority.Nonce, error) {
		var n authority.Nonce
		err := r.Scan(&n.Host, &n.Nonce, &n.At)
		n.At = n.At.UTC()
		return n, err
	})
	if err != nil {
		return nil, t.fail(fmt.Errorf("store: nonces: %w", err))
	}
	return out, nil
}

func (t *pgTx) AppendAudit(e authority.AuditEntry) (uint64, error) {
	seq, err := t.counter("audit_seq", true)
	if err != nil {
		return 0, err
	}
	e.Seq = seq
	b, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	return seq, t.exec("INSERT INTO meshnode.audit (seq, doc) VALUES ($1, $2)", int64(seq), b)
}

func (t *pgTx) Audit() ([]authority.AuditEntry, error) {
	return allDocs[authority.AuditEntry](t, "audit", "seq", "")
}
