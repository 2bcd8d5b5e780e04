package authority

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// bbolt rather than SQLite: one file, pure Go, already a dependency, and its single-writer
// transactions with fsync on commit give exactly the atomic, durable read-check-write the
// token and renewal rules need, with no schema or driver to maintain.

var (
	bCIDRs   = []byte("cidrs")
	bHosts   = []byte("hosts")
	bCerts   = []byte("certs")
	bTokens  = []byte("tokens")
	bRevoked = []byte("revocations")
	bNonces  = []byte("nonces")
	bAudit   = []byte("audit")
	bMeta    = []byte("meta")
	// bHostCerts indexes certs by host ("host\x00fingerprint" -> empty).
	bHostCerts = []byte("host_certs")

	kBlocklistVersion = []byte("blocklist_version")
)

// BoltStore is a Store in one bbolt file. Only one process may open the file at a time.
type BoltStore struct {
	db *bolt.DB
}

// OpenBolt opens (or creates, mode 0600) the store at path, waiting at most timeout for
// another process to release it before failing with ErrStoreLocked.
func OpenBolt(path string, timeout time.Duration) (*BoltStore, error) {
	if timeout <= 0 {
		timeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%s: %w", path, ErrStoreLocked)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bCIDRs, bHosts, bCerts, bTokens, bRevoked, bNonces, bAudit, bMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if tx.Bucket(bHostCerts) != nil {
			return nil
		}
		// A store from before the index: build it from the certs on record.
		idx, err := tx.CreateBucket(bHostCerts)
		if err != nil {
			return err
		}
		return tx.Bucket(bCerts).ForEach(func(k, v []byte) error {
			var c CertRecord
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("certs/%s: %w", k, err)
			}
			return idx.Put(hostCertKey(c.Host, c.Fingerprint), []byte{})
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init store %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// View implements Store.
func (s *BoltStore) View(fn func(Tx) error) error {
	return s.wrap(s.db.View(func(tx *bolt.Tx) error { return fn(typedTx{boltKV{tx}}) }))
}

// Update implements Store.
func (s *BoltStore) Update(fn func(Tx) error) error {
	return s.wrap(s.db.Update(func(tx *bolt.Tx) error { return fn(typedTx{boltKV{tx}}) }))
}

func (s *BoltStore) wrap(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrStoreClosed
	}
	return err
}

// Close implements Store.
func (s *BoltStore) Close() error { return s.db.Close() }

// boltKV maps the kv operations onto bbolt buckets.
type boltKV struct{ tx *bolt.Tx }

func (k boltKV) get(bucket []byte, key []byte) []byte { return k.tx.Bucket(bucket).Get(key) }
func (k boltKV) put(bucket []byte, key, v []byte) error {
	return k.tx.Bucket(bucket).Put(key, v)
}
func (k boltKV) del(bucket []byte, key []byte) error { return k.tx.Bucket(bucket).Delete(key) }
func (k boltKV) forEach(bucket []byte, fn func(k, v []byte) error) error {
	return k.tx.Bucket(bucket).ForEach(fn)
}
func (k boltKV) forEachPrefix(bucket, prefix []byte, fn func(k, v []byte) error) error {
	c := k.tx.Bucket(bucket).Cursor()
	for key, v := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, v = c.Next() {
		if err := fn(key, v); err != nil {
			return err
		}
	}
	return nil
}
func (k boltKV) nextSeq(bucket []byte) (uint64, error) { return k.tx.Bucket(bucket).NextSequence() }

// Path is the store's file.
func (s *BoltStore) Path() string { return s.db.Path() }
