package authority_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/storetest"
)

func TestBoltStoreContract(t *testing.T) {
	storetest.Run(t, storetest.Factory{
		New: func(t *testing.T) authority.Store {
			s, err := authority.OpenBolt(filepath.Join(t.TempDir(), "ca.db"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Reopen: func(t *testing.T, s authority.Store) authority.Store {
			path := s.(*authority.BoltStore).Path()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := authority.OpenBolt(path, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return s2
		},
	})
}

func TestMemStoreContract(t *testing.T) {
	storetest.Run(t, storetest.Factory{New: func(*testing.T) authority.Store { return authority.NewMemStore() }})
}

func TestBoltStoreSecondOpenerGetsErrStoreLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ca.db")
	s, err := authority.OpenBolt(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := authority.OpenBolt(path, 50*time.Millisecond); !errors.Is(err, authority.ErrStoreLocked) {
		t.Fatalf("second open = %v, want ErrStoreLocked", err)
	}
}
