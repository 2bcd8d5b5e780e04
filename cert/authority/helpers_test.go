package authority_test

import (
	"bytes"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/certtest"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

type fixture struct {
	a       *authority.Authority
	ca      *certtest.CA
	store   authority.Store
	path    string
	clock   *clock
	logs    *syncBuffer
	opts    authority.Options
	svcPriv []byte
}

func newFixture(t *testing.T, mod ...func(*authority.Options)) *fixture {
	t.Helper()
	ca := certtest.NewCA(t, "test-ca", certtest.WithIPs("10.42.0.0/16"))
	f := &fixture{ca: ca, clock: &clock{t: certtest.Now()}, logs: &syncBuffer{}}
	f.path = filepath.Join(t.TempDir(), "ca.db")
	_, f.svcPriv, _ = cert.GenerateX25519()
	f.opts = authority.Options{
		CAs:          []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}},
		ServiceKey:   f.svcPriv,
		Lighthouses:  []authority.Lighthouse{{VpnIP: netip.MustParseAddr("10.42.0.1"), Addrs: []string{"192.0.2.1:4242"}}},
		URL:          "https://127.0.0.1:8443",
		Pin:          bytes.Repeat([]byte{7}, 32),
		CertDuration: time.Hour,
		Logger:       slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:          f.clock.Now,
	}
	for _, m := range mod {
		m(&f.opts)
	}
	f.open(t)
	if err := f.a.SyncCIDRs([]authority.CIDR{
		{Name: "mesh", Prefix: netip.MustParsePrefix("10.42.0.0/16")},
		{Name: "servers", Prefix: netip.MustParsePrefix("10.42.0.0/24")},
		{Name: "humans", Prefix: netip.MustParsePrefix("10.42.100.0/24")},
	}); err != nil {
		t.Fatal(err)
	}
	return f
}

// open (re)opens the store file and builds the authority on it.
func (f *fixture) open(t *testing.T) {
	t.Helper()
	s, err := authority.OpenBolt(f.path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.store = s
	f.opts.Store = s
	f.a, err = authority.New(f.opts)
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) restart(t *testing.T) {
	t.Helper()
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t)
}

func (f *fixture) invite(t *testing.T, name, cidr string, groups ...string) (authority.Token, authority.Identity) {
	t.Helper()
	s, id, err := f.a.Invite(authority.InviteRequest{Name: name, CIDR: cidr, Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := authority.ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok, id
}

type node struct {
	pub, priv []byte
	cert      *cert.Certificate
	pem       []byte
	counter   uint64
}

func newKey(t *testing.T) (pub, priv []byte) {
	t.Helper()
	pub, priv, err := cert.GenerateX25519()
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func (f *fixture) enroll(t *testing.T, name, cidr string, groups ...string) *node {
	t.Helper()
	tok, _ := f.invite(t, name, cidr, groups...)
	pub, priv := newKey(t)
	e, err := f.a.Enroll(tok.Secret, pub)
	if err != nil {
		t.Fatal(err)
	}
	return &node{pub: pub, priv: priv, cert: e.Cert, pem: e.CertPEM}
}

// renewRequest builds a signed request from n for a fresh key.
func (f *fixture) renewRequest(t *testing.T, n *node) (authority.RenewRequest, []byte) {
	t.Helper()
	pub, priv := newKey(t)
	n.counter++
	r := authority.RenewRequest{Cert: n.pem, PublicKey: pub, Nonce: bytes.Repeat([]byte{byte(n.counter)}, 16), Counter: n.counter, Time: f.clock.Now().Unix()}
	if err := authority.SignRenewRequest(&r, n.priv, f.a.ServicePublicKey()); err != nil {
		t.Fatal(err)
	}
	return r, priv
}

func (f *fixture) renew(t *testing.T, n *node) {
	t.Helper()
	r, priv := f.renewRequest(t, n)
	res, err := f.a.Renew(r)
	if err != nil {
		t.Fatal(err)
	}
	n.pub, n.priv, n.cert, n.pem = r.PublicKey, priv, res.Cert, res.CertPEM
}
