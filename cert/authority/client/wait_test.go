package client_test

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/cert/certtest"
)

func TestWaitBlocklistGetsARevocationAsItHappens(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	e, err := client.Enroll(ctx, s.invite(t, "web1"), client.Options{Now: s.Now})
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := cert.NewPoolFromPEM(e.CABundle)
	c := s.client()
	got := make(chan *authority.SignedBlocklist, 1)
	errs := make(chan error, 1)
	go func() {
		b, err := c.WaitBlocklist(ctx, pool, 0, 30*time.Second)
		got <- b
		errs <- err
	}()
	time.Sleep(200 * time.Millisecond) // held by now
	revoked := time.Now()
	if _, err := s.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	b, err := <-got, <-errs
	if err != nil || b == nil || b.Version != 1 || !slices.Contains(b.Fingerprints, e.Cert.Fingerprint()) {
		t.Fatalf("WaitBlocklist = %+v, %v", b, err)
	}
	if d := time.Since(revoked); d > time.Second {
		t.Errorf("got the list %v after the revoke", d)
	}
	// Nothing newer than 1 within the wait: nil, nil.
	if b, err := c.WaitBlocklist(ctx, pool, 1, time.Second); b != nil || err != nil {
		t.Errorf("WaitBlocklist(after 1) = %+v, %v, want nil, nil", b, err)
	}
	// The list is verified like a fetched one.
	other := certtest.NewCA(t, "other")
	otherPool := cert.NewPool()
	otherPool.AddCA(other.Cert)
	if _, err := c.WaitBlocklist(ctx, otherPool, 0, time.Second); !errors.Is(err, authority.ErrBlocklistInvalid) {
		t.Errorf("list from an untrusted CA = %v, want ErrBlocklistInvalid", err)
	}
}

func TestWaitBlocklistRefusesAnotherPin(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	pin := slices.Clone(s.pin)
	pin[0] ^= 1
	if _, err := client.New(s.url, pin, client.Options{}).WaitBlocklist(ctx, cert.NewPool(), 0, time.Second); !errors.Is(err, client.ErrPinMismatch) {
		t.Errorf("WaitBlocklist with a wrong pin = %v, want ErrPinMismatch", err)
	}
	if got := s.recorded(); len(got) != 0 {
		t.Errorf("the service got %q", got)
	}
}

func TestWaitBlocklistSaysBusy(t *testing.T) {
	s := startService(t, authority.ServerOptions{MaxBlocklistWaiters: 1})
	pool := cert.NewPool()
	pool.AddCA(s.ca.Cert)
	c := s.client()
	go c.WaitBlocklist(ctx, pool, 0, 3*time.Second)
	time.Sleep(200 * time.Millisecond)
	_, err := c.WaitBlocklist(ctx, pool, 0, 3*time.Second)
	if !errors.Is(err, authority.ErrBusy) {
		t.Errorf("second waiter over a bound of 1 = %v, want ErrBusy", err)
	}
}

// A service from before the long-poll ignores the query and answers the current list.
func TestWaitBlocklistRecognisesAServiceWithoutTheLongPoll(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	_, key, _ := cert.GenerateX25519()
	a, err := authority.New(authority.Options{Store: authority.NewMemStore(), CAs: []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}}, ServiceKey: key})
	if err != nil {
		t.Fatal(err)
	}
	id, err := authority.LoadOrCreateTLSIdentity(filepath.Join(t.TempDir(), "tls.pem"), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := authority.NewServer(authority.ServerOptions{Authority: a, TLS: id})
	h := srv.Handler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.RawQuery = ""
		h.ServeHTTP(w, r)
	})}
	go hs.Serve(tls.NewListener(ln, srv.TLSConfig()))
	t.Cleanup(func() { hs.Close() })
	pool := cert.NewPool()
	pool.AddCA(ca.Cert)
	c := client.New("https://"+ln.Addr().String(), id.Pin, client.Options{})
	if _, err := c.WaitBlocklist(ctx, pool, 0, 5*time.Second); !errors.Is(err, client.ErrWaitUnsupported) {
		t.Errorf("WaitBlocklist against an old service = %v, want ErrWaitUnsupported", err)
	}
}
