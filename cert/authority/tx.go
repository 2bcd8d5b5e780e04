package authority

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// kv is the little a store engine must provide; typedTx builds every Tx method on it, so
// the bbolt and in-memory stores differ only in transactions and durability.
type kv interface {
	get(bucket, key []byte) []byte
	put(bucket, key, v []byte) error
	del(bucket, key []byte) error
	forEach(bucket []byte, fn func(k, v []byte) error) error
	// forEachPrefix visits the keys starting with prefix (in key order where the engine
	// keeps one).
	forEachPrefix(bucket, prefix []byte, fn func(k, v []byte) error) error
	nextSeq(bucket []byte) (uint64, error)
}

type typedTx struct{ kv kv }

func get[T any](t typedTx, bucket []byte, key string) (T, bool, error) {
	var v T
	b := t.kv.get(bucket, []byte(key))
	if b == nil {
		return v, false, nil
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, false, fmt.Errorf("store: %s/%s: %w", bucket, key, err)
	}
	return v, true, nil
}

func put(t typedTx, bucket []byte, key string, v any) error {
	if key == "" {
		return fmt.Errorf("store: %s: empty key", bucket)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: %s/%s: %w", bucket, key, err)
	}
	return t.kv.put(bucket, []byte(key), b)
}

func all[T any](t typedTx, bucket []byte) ([]T, error) {
	var out []T
	err := t.kv.forEach(bucket, func(k, b []byte) error {
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("store: %s/%s: %w", bucket, k, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

func (t typedTx) CIDR(name string) (CIDR, bool, error) { return get[CIDR](t, bCIDRs, name) }
func (t typedTx) PutCIDR(c CIDR) error                 { return put(t, bCIDRs, c.Name, c) }
func (t typedTx) CIDRs() ([]CIDR, error)               { return all[CIDR](t, bCIDRs) }
func (t typedTx) Host(name string) (Host, bool, error) { return get[Host](t, bHosts, name) }
func (t typedTx) PutHost(h Host) error                 { return put(t, bHosts, h.Name, h) }
func (t typedTx) Hosts() ([]Host, error)               { return all[Host](t, bHosts) }
func (t typedTx) Cert(fp string) (CertRecord, bool, error) {
	return get[CertRecord](t, bCerts, fp)
}
func (t typedTx) PutCert(c CertRecord) error {
	if err := put(t, bCerts, c.Fingerprint, c); err != nil {
		return err
	}
	return t.kv.put(bHostCerts, hostCertKey(c.Host, c.Fingerprint), []byte{})
}
func (t typedTx) Certs() ([]CertRecord, error) { return all[CertRecord](t, bCerts) }

// hostCertKey indexes certs by host: host names never contain NUL (checkName).
func hostCertKey(host, fp string) []byte { return []byte(host + "\x00" + fp) }

func (t typedTx) HostCerts(host string) ([]CertRecord, error) {
	var fps []string
	prefix := host + "\x00"
	err := t.kv.forEachPrefix(bHostCerts, []byte(prefix), func(k, _ []byte) error {
		fps = append(fps, string(k[len(prefix):]))
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]CertRecord, 0, len(fps))
	for _, fp := range fps {
		c, ok, err := t.Cert(fp)
		if err != nil {
			return nil, err
		}
		if ok && c.Host == host {
			out = append(out, c)
		}
	}
	return out, nil
}

func (t typedTx) PutToken(r TokenRecord) error     { return put(t, bTokens, r.Hash, r) }
func (t typedTx) Tokens() ([]TokenRecord, error)   { return all[TokenRecord](t, bTokens) }
func (t typedTx) PutRevocation(r Revocation) error { return put(t, bRevoked, r.Fingerprint, r) }
func (t typedTx) Revocations() ([]Revocation, error) {
	return all[Revocation](t, bRevoked)
}
func (t typedTx) Token(hash string) (TokenRecord, bool, error) {
	return get[TokenRecord](t, bTokens, hash)
}
func (t typedTx) Revocation(fp string) (Revocation, bool, error) {
	return get[Revocation](t, bRevoked, fp)
}

func (t typedTx) BlocklistVersion() (uint64, error) {
	b := t.kv.get(bMeta, kBlocklistVersion)
	if b == nil {
		return 0, nil
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("store: blocklist version is %d bytes", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

func (t typedTx) BumpBlocklistVersion() (uint64, error) {
	v, err := t.BlocklistVersion()
	if err != nil {
		return 0, err
	}
	v++
	return v, t.kv.put(bMeta, kBlocklistVersion, binary.BigEndian.AppendUint64(nil, v))
}

func nonceKey(host string, nonce []byte) []byte {
	return []byte(host + "\x00" + hex.EncodeToString(nonce))
}

func (t typedTx) NonceSeen(host string, nonce []byte) (bool, error) {
	return t.kv.get(bNonces, nonceKey(host, nonce)) != nil, nil
}

func (t typedTx) PutNonce(host string, nonce []byte, at time.Time) error {
	return t.kv.put(bNonces, nonceKey(host, nonce), binary.BigEndian.AppendUint64(nil, uint64(at.Unix())))
}

func (t typedTx) PruneNonces(before time.Time) error {
	var old [][]byte
	err := t.kv.forEach(bNonces, func(k, v []byte) error {
		if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < before.Unix() {
			old = append(old, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range old {
		if err := t.kv.del(bNonces, k); err != nil {
			return err
		}
	}
	return nil
}

func (t typedTx) Nonces() ([]Nonce, error) {
	var out []Nonce
	err := t.kv.forEach(bNonces, func(k, v []byte) error {
		host, hx, ok := bytes.Cut(k, []byte{0})
		n, err := hex.DecodeString(string(hx))
		if !ok || err != nil || len(v) != 8 {
			return fmt.Errorf("store: %s/%q: malformed nonce", bNonces, k)
		}
		out = append(out, Nonce{Host: string(host), Nonce: n, At: time.Unix(int64(binary.BigEndian.Uint64(v)), 0).UTC()})
		return nil
	})
	return out, err
}

func (t typedTx) AppendAudit(e AuditEntry) (uint64, error) {
	seq, err := t.kv.nextSeq(bAudit)
	if err != nil {
		return 0, err
	}
	e.Seq = seq
	v, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	return seq, t.kv.put(bAudit, binary.BigEndian.AppendUint64(nil, seq), v)
}

func (t typedTx) Audit() ([]AuditEntry, error) { return all[AuditEntry](t, bAudit) }
