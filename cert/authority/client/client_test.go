package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
	"github.com/meshnode/meshnode/cert/certtest"
)

// service is a CA service on loopback HTTPS with every request body recorded.
type service struct {
	a      *authority.Authority
	ca     *certtest.CA
	url    string
	pin    []byte
	mu     sync.Mutex
	bodies [][]byte
	now    time.Time
	clk    sync.Mutex
}

func (s *service) Now() time.Time { s.clk.Lock(); defer s.clk.Unlock(); return s.now }
func (s *service) advance(d time.Duration) {
	s.clk.Lock()
	defer s.clk.Unlock()
	s.now = s.now.Add(d)
}

func (s *service) recorded() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Join(s.bodies, []byte("\n"))
}

func startService(t *testing.T, so authority.ServerOptions) *service {
	t.Helper()
	dir := t.TempDir()
	s := &service{ca: certtest.NewCA(t, "ca", certtest.WithIPs("10.42.0.0/16")), now: certtest.Now()}
	id, err := authority.LoadOrCreateTLSIdentity(filepath.Join(dir, "tls.pem"), []string{"localhost"}, s.Now())
	if err != nil {
		t.Fatal(err)
	}
	svcKey, err := authority.LoadOrCreateServiceKey(filepath.Join(dir, "service.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.url, s.pin = "https://"+ln.Addr().String(), id.Pin
	store, err := authority.OpenBolt(filepath.Join(dir, "ca.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	s.a, err = authority.New(authority.Options{
		Store: store, CAs: []authority.SigningCA{{Cert: s.ca.Cert, Key: s.ca.Key}}, ServiceKey: svcKey,
		Lighthouses: []authority.Lighthouse{{VpnIP: netip.MustParseAddr("10.42.0.1"), Addrs: []string{"192.0.2.1:4242"}}},
		URL:         s.url, Pin: id.Pin, CertDuration: time.Hour, Now: s.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.a.SyncCIDRs([]authority.CIDR{{Name: "mesh", Prefix: netip.MustParsePrefix("10.42.0.0/16")}, {Name: "servers", Prefix: netip.MustParsePrefix("10.42.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	so.Authority, so.TLS, so.Now = s.a, id, s.Now
	srv := authority.NewServer(so)
	h := srv.Handler()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		s.mu.Lock()
		s.bodies = append(s.bodies, b)
		s.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		h.ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(tls.NewListener(ln, srv.TLSConfig())) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return s
}

func (s *service) invite(t *testing.T, name string, groups ...string) string {
	t.Helper()
	tok, _, err := s.a.Invite(authority.InviteRequest{Name: name, CIDR: "servers", Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (s *service) client() *client.Client {
	return client.New(s.url, s.pin, client.Options{Now: s.Now})
}

var ctx = context.Background()

func TestEnrollOverHTTPS(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	tok := s.invite(t, "web1", "web", "ssh")
	e, err := client.Enroll(ctx, tok, client.Options{Now: s.Now})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := cert.NewPoolFromPEMWithClock(e.CABundle, s.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Verify(e.Cert, s.Now()); err != nil {
		t.Fatal(err)
	}
	d := e.Cert.Details
	if d.Name != "web1" || d.Ips[0] != netip.MustParsePrefix("10.42.0.2/16") || !slices.Equal(d.Groups, []string{"web", "ssh"}) {
		t.Errorf("cert = %+v", d)
	}
	if err := e.Cert.VerifyPrivateKey(e.Key); err != nil {
		t.Error(err)
	}
	if len(e.Lighthouses) != 1 || e.URL != s.url || !bytes.Equal(e.Pin, s.pin) || !bytes.Equal(e.ServiceKey, s.a.ServicePublicKey()) {
		t.Errorf("enrollment: lighthouses %v url %s", e.Lighthouses, e.URL)
	}
	rec := s.recorded()
	for what, b := range map[string][]byte{
		"private key (raw)":    e.Key,
		"private key (base64)": []byte(base64.StdEncoding.EncodeToString(e.Key)),
		"private key (hex)":    []byte(hex.EncodeToString(e.Key)),
	} {
		if bytes.Contains(rec, b) {
			t.Errorf("the service received the %s", what)
		}
	}

	if _, err := client.Enroll(ctx, tok, client.Options{Now: s.Now}); !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("token reuse = %v, want ErrTokenUsed", err)
	}
	late := s.invite(t, "late")
	s.advance(authority.DefaultTokenTTL + time.Second)
	if _, err := client.Enroll(ctx, late, client.Options{Now: s.Now}); !errors.Is(err, authority.ErrTokenExpired) {
		t.Errorf("expired token = %v, want ErrTokenExpired", err)
	}
}

func TestClientRefusesAServiceWithAnotherPin(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	tok := s.invite(t, "web1")
	parsed, _ := authority.ParseToken(tok)
	parsed.Pin = bytes.Repeat([]byte{0x42}, 32)
	if _, err := client.Enroll(ctx, parsed.String(), client.Options{}); !errors.Is(err, client.ErrPinMismatch) {
		t.Fatalf("Enroll with wrong pin = %v, want ErrPinMismatch", err)
	}
	if rec := s.recorded(); len(rec) != 0 {
		t.Fatalf("the service received %d bytes through an unpinned connection", len(rec))
	}
	if bytes.Contains(s.recorded(), parsed.Secret) {
		t.Fatal("secret reached the service")
	}
	// The token is still good for the real service.
	if _, err := client.Enroll(ctx, tok, client.Options{Now: s.Now}); err != nil {
		t.Fatal(err)
	}
}

func TestRenewOverHTTPS(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	e, err := client.Enroll(ctx, s.invite(t, "web1", "web"), client.Options{Now: s.Now})
	if err != nil {
		t.Fatal(err)
	}
	c := s.client()
	s.advance(40 * time.Minute)
	r, err := c.Renew(ctx, client.RenewParams{CertPEM: e.CertPEM, Key: e.Key, ServiceKey: e.ServiceKey, Counter: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Cert.Details.Name != "web1" || r.Cert.Details.Ips[0] != e.Cert.Details.Ips[0] || !slices.Equal(r.Cert.Details.Groups, e.Cert.Details.Groups) {
		t.Errorf("renewed identity %+v", r.Cert.Details)
	}
	if bytes.Equal(r.Cert.Details.PublicKey, e.Cert.Details.PublicKey) {
		t.Error("renewal kept the key")
	}
	// Replaying the recorded request body is refused.
	bodies := bytes.Split(s.recorded(), []byte("\n"))
	renewBody := bodies[len(bodies)-1]
	status, code := rawPost(t, s, "/v1/renew", renewBody)
	if status != http.StatusForbidden || code != "replay" {
		t.Errorf("replayed renewal: %d %s", status, code)
	}
	// A lower counter is refused, as is a stolen cert without its key.
	if _, err := c.Renew(ctx, client.RenewParams{CertPEM: r.CertPEM, Key: r.Key, ServiceKey: e.ServiceKey, Counter: 1}); !errors.Is(err, authority.ErrReplay) {
		t.Errorf("old counter = %v, want ErrReplay", err)
	}
	_, thief, _ := cert.GenerateX25519()
	if _, err := c.Renew(ctx, client.RenewParams{CertPEM: r.CertPEM, Key: thief, ServiceKey: e.ServiceKey}); !errors.Is(err, authority.ErrBadProof) {
		t.Errorf("wrong key = %v, want ErrBadProof", err)
	}
	// The default counter (wall clock) works after an explicit small one.
	if _, err := c.Renew(ctx, client.RenewParams{CertPEM: r.CertPEM, Key: r.Key, ServiceKey: e.ServiceKey}); err != nil {
		t.Errorf("renewal with the clock counter: %v", err)
	}
}

func TestRevokedHostOverHTTPS(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	e, err := client.Enroll(ctx, s.invite(t, "web1"), client.Options{Now: s.Now})
	if err != nil {
		t.Fatal(err)
	}
	c := s.client()
	pool, _ := cert.NewPoolFromPEM(e.CABundle)
	b, err := c.FetchBlocklist(ctx, pool)
	if err != nil || b.Version != 0 || len(b.Fingerprints) != 0 {
		t.Fatalf("initial blocklist %+v, %v", b, err)
	}
	if _, err := s.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Renew(ctx, client.RenewParams{CertPEM: e.CertPEM, Key: e.Key, ServiceKey: e.ServiceKey}); !errors.Is(err, authority.ErrRevoked) {
		t.Errorf("revoked renewal = %v, want ErrRevoked", err)
	}
	if _, _, err := s.a.Invite(authority.InviteRequest{Name: "web1", CIDR: "servers"}); !errors.Is(err, authority.ErrNameTaken) {
		t.Errorf("re-invite of revoked host = %v", err)
	}
	b, err = c.FetchBlocklist(ctx, pool)
	if err != nil || b.Version != 1 || !slices.Contains(b.Fingerprints, e.Cert.Fingerprint()) {
		t.Fatalf("blocklist after revoke %+v, %v", b, err)
	}
	other := certtest.NewCA(t, "other")
	otherPool := cert.NewPool()
	otherPool.AddCA(other.Cert)
	if _, err := c.FetchBlocklist(ctx, otherPool); !errors.Is(err, authority.ErrBlocklistInvalid) {
		t.Errorf("blocklist from an untrusted CA = %v, want ErrBlocklistInvalid", err)
	}
}

func rawPost(t *testing.T, s *service, path string, body []byte) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Post(s.url+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Code string }
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Code
}

func TestServerRefusesBadBodies(t *testing.T) {
	s := startService(t, authority.ServerOptions{EnrollRate: -1})
	for _, tc := range []struct {
		name, path string
		body       []byte
		status     int
		code       string
	}{
		{"not JSON", "/v1/enroll", []byte("hello"), 400, "malformed"},
		{"empty", "/v1/enroll", nil, 400, "malformed"},
		{"unknown field", "/v1/enroll", []byte(`{"secret":"","public_key":"","identity":"admin"}`), 400, "malformed"},
		{"two objects", "/v1/enroll", []byte(`{} {}`), 400, "malformed"},
		{"oversized", "/v1/enroll", append([]byte(`{"secret":"`), append(bytes.Repeat([]byte("A"), 100<<10), `"}`...)...), 413, "too_large"},
		{"forged token", "/v1/enroll", []byte(`{"secret":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)) + `","public_key":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)) + `"}`), 403, "token_unknown"},
		{"renew garbage cert", "/v1/renew", []byte(`{"cert":"","public_key":"","nonce":"","counter":1,"time":1,"mac":""}`), 400, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code := rawPost(t, s, tc.path, tc.body)
			if status != tc.status || code != tc.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tc.status, tc.code)
			}
		})
	}
	hs, _ := s.a.Hosts()
	if len(hs) != 0 {
		t.Errorf("bad requests created hosts: %v", hs)
	}
}

func TestEnrollIsRateLimitedPerSource(t *testing.T) {
	s := startService(t, authority.ServerOptions{EnrollRate: 0.001, EnrollBurst: 3})
	var limited int
	for range 6 {
		status, code := rawPost(t, s, "/v1/enroll", []byte(`{}`))
		if status == http.StatusTooManyRequests && code == "rate_limited" {
			limited++
		}
	}
	if limited != 3 {
		t.Fatalf("%d of 6 requests limited, want 3 (burst 3)", limited)
	}
}

func TestFiftyParallelEnrollmentsOverHTTPSGiveOneCert(t *testing.T) {
	s := startService(t, authority.ServerOptions{EnrollRate: -1})
	tok := s.invite(t, "race")
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = client.Enroll(ctx, tok, client.Options{Now: s.Now})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else if !errors.Is(err, authority.ErrTokenUsed) {
			t.Errorf("unexpected: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d succeeded, want 1", ok)
	}
}

func TestServeAnswersHealthAndStops(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, "ca")
	id, err := authority.LoadOrCreateTLSIdentity(filepath.Join(dir, "tls.pem"), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	again, err := authority.LoadOrCreateTLSIdentity(filepath.Join(dir, "tls.pem"), nil, time.Now())
	if err != nil || !bytes.Equal(again.Pin, id.Pin) {
		t.Fatalf("TLS identity changed on reload: %v", err)
	}
	_, key, _ := cert.GenerateX25519()
	a, err := authority.New(authority.Options{Store: authority.NewMemStore(), CAs: []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}}, ServiceKey: key})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- authority.NewServer(authority.ServerOptions{Authority: a, TLS: id}).Serve(cctx, ln) }()
	h, err := client.New("https://"+ln.Addr().String(), id.Pin, client.Options{}).Health(ctx)
	if err != nil || h.Status != "ok" {
		t.Fatalf("health = %+v, %v", h, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !strings.Contains(err.Error(), "closed") {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop")
	}
}

func TestEnrollSucceedsWhenTheHostClockIsOff(t *testing.T) {
	s := startService(t, authority.ServerOptions{})
	behind := func() time.Time { return s.Now().Add(-2 * time.Hour) }
	e, err := client.Enroll(ctx, s.invite(t, "web1"), client.Options{Now: behind})
	if err != nil {
		t.Fatalf("a host whose clock lags lost its token: %v", err)
	}
	if e.Cert.Details.Name != "web1" {
		t.Errorf("cert %+v", e.Cert.Details)
	}
}
