package authority_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshnode/meshnode/cert/authority"
)

// pollServer is the API on plain loopback HTTP with its own metrics registry.
type pollServer struct {
	f   *fixture
	url string
	reg *prometheus.Registry
}

func startPollServer(t *testing.T, so authority.ServerOptions) *pollServer {
	t.Helper()
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	so.Authority, so.Registerer, so.Now = f.a, reg, f.clock.Now
	hs := httptest.NewServer(authority.NewServer(so).Handler())
	t.Cleanup(hs.Close)
	return &pollServer{f: f, url: hs.URL, reg: reg}
}

// waiters is the meshnode_ca_blocklist_waiters gauge.
func (p *pollServer) waiters(t *testing.T) int {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "meshnode_ca_blocklist_waiters" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("no meshnode_ca_blocklist_waiters gauge")
	return 0
}

func (p *pollServer) awaitWaiters(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.waiters(t) != n {
		if time.Now().After(deadline) {
			t.Fatalf("waiters = %d, want %d", p.waiters(t), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type pollResult struct {
	status  int
	version uint64
	body    string
	header  http.Header
	took    time.Duration
	err     error
}

func get(ctx context.Context, url string) pollResult {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return pollResult{err: err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return pollResult{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := pollResult{status: resp.StatusCode, body: string(b), header: resp.Header, took: time.Since(start)}
	if resp.StatusCode == http.StatusOK {
		var bl authority.SignedBlocklist
		if err := json.Unmarshal(b, &bl); err != nil {
			r.err = err
		}
		r.version = bl.Version
	}
	return r
}

func goGet(ctx context.Context, url string) <-chan pollResult {
	ch := make(chan pollResult, 1)
	go func() { ch <- get(ctx, url) }()
	return ch
}

func TestBlocklistWaitAnswersAtOnceWhenANewerListExists(t *testing.T) {
	p := startPollServer(t, authority.ServerOptions{})
	p.f.enroll(t, "web1", "servers")
	if _, err := p.f.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	r := get(t.Context(), p.url+"/v1/blocklist?after=0&wait=30")
	if r.err != nil || r.status != http.StatusOK || r.version != 1 || r.took > 2*time.Second {
		t.Fatalf("wait after=0 with version 1 present: %+v", r)
	}
	// wait=0 (or none) asks without waiting: nothing newer than 1 is a 204.
	for _, q := range []string{"after=1&wait=0", "after=1"} {
		if r := get(t.Context(), p.url+"/v1/blocklist?"+q); r.status != http.StatusNoContent || r.body != "" {
			t.Errorf("%s: %+v, want 204 with no body", q, r)
		}
	}
	// The plain form is unchanged: the current list, always.
	if r := get(t.Context(), p.url+"/v1/blocklist"); r.status != http.StatusOK || r.version != 1 {
		t.Errorf("plain GET: %+v", r)
	}
}

func TestBlocklistWaitWakesOnRevoke(t *testing.T) {
	p := startPollServer(t, authority.ServerOptions{})
	p.f.enroll(t, "web1", "servers")
	held := goGet(t.Context(), p.url+"/v1/blocklist?after=0&wait=30")
	p.awaitWaiters(t, 1)
	revoked := time.Now()
	if _, err := p.f.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	r := <-held
	if r.err != nil || r.status != http.StatusOK || r.version != 1 {
		t.Fatalf("held request after revoke: %+v", r)
	}
	if d := time.Since(revoked); d > time.Second {
		t.Errorf("answered %v after the revoke, want at once", d)
	}
	t.Logf("answered %v after the revoke", time.Since(revoked).Round(time.Microsecond))
	p.awaitWaiters(t, 0)
}

func TestBlocklistWaitIgnoresChangesThatKeepTheVersion(t *testing.T) {
	p := startPollServer(t, authority.ServerOptions{})
	p.f.enroll(t, "web1", "servers")
	changed := p.f.a.BlocklistChanged()
	p.f.enroll(t, "web2", "servers")
	select {
	case <-changed:
		t.Fatal("an enrollment signalled a blocklist change")
	default:
	}
	if _, err := p.f.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("a revocation did not signal a blocklist change")
	}
	// Revoking again blocks nothing new: the version stays and a held request keeps waiting.
	held := goGet(t.Context(), p.url+"/v1/blocklist?after=1&wait=1")
	p.awaitWaiters(t, 1)
	if _, err := p.f.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	if r := <-held; r.status != http.StatusNoContent || r.took < 900*time.Millisecond {
		t.Errorf("held request after a revocation that changed nothing: %+v", r)
	}
}

func TestBlocklistWaitTimesOutWithNoContent(t *testing.T) {
	p := startPollServer(t, authority.ServerOptions{})
	r := get(t.Context(), p.url+"/v1/blocklist?after=0&wait=1")
	if r.err != nil || r.status != http.StatusNoContent || r.body != "" {
		t.Fatalf("wait with no change: %+v, want 204", r)
	}
	if r.took < 900*time.Millisecond || r.took > 3*time.Second {
		t.Errorf("answered after %v, want about the 1 s asked for", r.took)
	}
	p.awaitWaiters(t, 0)
}

func TestBlocklistWaitRefusesBadParameters(t *testing.T) {
	p := startPollServer(t, authority.ServerOptions{})
	for _, q := range []string{
		"after=", "after=-1", "after=x", "after=1.5", "after=18446744073709551616", "after=0x10",
		"wait=5", "after=0&wait=", "after=0&wait=-1", "after=0&wait=56", "after=0&wait=1.5",
		"after=0&wait=1s", "after=0&wait=99999999999999999999",
	} {
		r := get(t.Context(), p.url+"/v1/blocklist?"+q)
		var e authority.ErrorResponse
		json.Unmarshal([]byte(r.body), &e)
		if r.status != http.StatusBadRequest || e.Code != "malformed" || !strings.Contains(e.Message, "after:") && !strings.Contains(e.Message, "wait:") {
			t.Errorf("%q: %d %+v, want 400 malformed naming the parameter", q, r.status, e)
		}
	}
	if p.waiters(t) != 0 {
		t.Error("a refused request holds a waiter slot")
	}
}

func TestBlocklistWaitersAreBounded(t *testing.T) {
	p := startPollServer(t, authority.ServerOptions{MaxBlocklistWaiters: 2})
	p.f.enroll(t, "web1", "servers")
	a := goGet(t.Context(), p.url+"/v1/blocklist?after=0&wait=30")
	b := goGet(t.Context(), p.url+"/v1/blocklist?after=0&wait=30")
	p.awaitWaiters(t, 2)
	r := get(t.Context(), p.url+"/v1/blocklist?after=0&wait=30")
	var e authority.ErrorResponse
	json.Unmarshal([]byte(r.body), &e)
	if r.status != http.StatusServiceUnavailable || e.Code != "busy" || r.header.Get("Retry-After") == "" || r.took > 2*time.Second {
		t.Fatalf("third waiter: %d %+v %v, want an immediate 503 busy with Retry-After", r.status, e, r.header)
	}
	// A request that need not wait is answered whatever the bound.
	if r := get(t.Context(), p.url+"/v1/blocklist"); r.status != http.StatusOK {
		t.Errorf("plain GET while waiters are full: %+v", r)
	}
	if _, err := p.f.a.Revoke("web1"); err != nil {
		t.Fatal(err)
	}
	if r := get(t.Context(), p.url+"/v1/blocklist?after=0&wait=30"); r.status != http.StatusOK || r.version != 1 {
		t.Errorf("newer list while waiters are full: %+v", r)
	}
	for _, ch := range []<-chan pollResult{a, b} {
		if r := <-ch; r.status != http.StatusOK || r.version != 1 {
			t.Errorf("held waiter: %+v", r)
		}
	}
	p.awaitWaiters(t, 0)
	// The slots are free again.
	c := goGet(t.Context(), p.url+"/v1/blocklist?after=1&wait=30")
	d := goGet(t.Context(), p.url+"/v1/blocklist?after=1&wait=30")
	p.awaitWaiters(t, 2)
	p.f.enroll(t, "web2", "servers")
	p.f.a.Revoke("web2")
	<-c
	<-d
}

func TestBlocklistWaiterLeavesWhenTheClientGoes(t *testing.T) {
	p := startPollServer(t, authority.ServerOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	held := goGet(ctx, p.url+"/v1/blocklist?after=0&wait=30")
	p.awaitWaiters(t, 1)
	cancel()
	if r := <-held; r.err == nil {
		t.Errorf("cancelled request: %+v", r)
	}
	p.awaitWaiters(t, 0)
}

// serveTLS runs Serve (the real server with its timeouts) on loopback and returns its URL,
// its pin, and a stop function that reports how long Serve took to return.
func serveTLS(t *testing.T, f *fixture) (url string, pin []byte, stop func() time.Duration) {
	t.Helper()
	id, err := authority.LoadOrCreateTLSIdentity(filepath.Join(t.TempDir(), "tls.pem"), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- authority.NewServer(authority.ServerOptions{Authority: f.a, TLS: id}).Serve(ctx, ln) }()
	stopped := false
	stop = func() time.Duration {
		if stopped {
			return 0
		}
		stopped = true
		start := time.Now()
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not stop")
		}
		return time.Since(start)
	}
	t.Cleanup(func() { stop() })
	return "https://" + ln.Addr().String(), id.Pin, stop
}

func TestBlocklistWaitOutlastsTheServersReadAndWriteTimeouts(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 12 s")
	}
	t.Parallel()
	f := newFixture(t)
	url, pin, _ := serveTLS(t, f)
	c := tlsClient(pin)
	start := time.Now()
	resp, err := c.Get(url + "/v1/blocklist?after=0&wait=12") // beyond Serve's 10 s timeouts
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || time.Since(start) < 11*time.Second {
		t.Errorf("%s after %v, want 204 after 12 s", resp.Status, time.Since(start))
	}
}

func TestServeShutdownAnswersHeldWaitsAndLeavesNoGoroutines(t *testing.T) {
	f := newFixture(t)
	before := runtime.NumGoroutine()
	url, pin, stop := serveTLS(t, f)
	c := tlsClient(pin)
	held := make(chan *http.Response, 3)
	for range 3 {
		go func() {
			resp, err := c.Get(url + "/v1/blocklist?after=0&wait=50")
			if err != nil {
				t.Error(err)
			}
			held <- resp
		}()
	}
	time.Sleep(300 * time.Millisecond) // let them be held
	if d := stop(); d > 2*time.Second {
		t.Errorf("Serve took %v to stop with waits held, want well under its 5 s grace", d)
	}
	for range 3 {
		if resp := <-held; resp != nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				t.Errorf("held wait at shutdown: %s, want 204", resp.Status)
			}
		}
	}
	c.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the server:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tlsClient trusts the one TLS certificate with SHA-256 pin.
func tlsClient(pin []byte) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if sum := sha256.Sum256(cs.PeerCertificates[0].Raw); !bytes.Equal(sum[:], pin) {
				return errors.New("pin mismatch")
			}
			return nil
		},
	}}}
}
