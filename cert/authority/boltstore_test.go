package authority

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestBoltStoreBuildsTheHostIndexOfAnOlderFile: a store written before certs were indexed
// by host gets the index at open, so revocation and the per-host cap see every cert.
func TestBoltStoreBuildsTheHostIndexOfAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.db")
	s, err := OpenBolt(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx Tx) error {
		return tx.PutCert(CertRecord{Fingerprint: "f1", Host: "web1", NotAfter: time.Now().Add(time.Hour)})
	})
	if err == nil {
		err = s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bHostCerts) }) // as an older version wrote it
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = OpenBolt(path, time.Second); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.View(func(tx Tx) error {
		cs, err := tx.HostCerts("web1")
		if err == nil && (len(cs) != 1 || cs[0].Fingerprint != "f1") {
			t.Errorf("HostCerts after reopening an older file = %+v", cs)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
