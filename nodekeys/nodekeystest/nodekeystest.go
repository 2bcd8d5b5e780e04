// Package nodekeystest runs a CA service on loopback HTTPS with a clock the test moves, for
// the tests of nodekeys and of the meshnode command.
package nodekeystest

import (
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/certtest"
)

// FakeClock is a clock a test moves by hand; After channels fire when it passes them.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	asked   []time.Duration // every After duration, in order
	changed chan struct{}   // closed and replaced whenever a waiter is added
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func NewFakeClock(t time.Time) *FakeClock { return &FakeClock{now: t, changed: make(chan struct{})} }

func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *FakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.asked = append(c.asked, d)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	close(c.changed)
	c.changed = make(chan struct{})
	return ch
}

func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
}

// Jump moves the wall clock by d without firing any timer, as when a machine wakes from
// suspend: timers run on the monotonic clock, which stood still.
func (c *FakeClock) Jump(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// WaitFor blocks until n waiters are pending, and returns the earliest deadline.
func (c *FakeClock) WaitFor(t *testing.T, n int) time.Time {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		if len(c.waiters) >= n {
			ws := append([]fakeWaiter(nil), c.waiters...)
			c.mu.Unlock()
			sort.Slice(ws, func(i, j int) bool { return ws[i].at.Before(ws[j].at) })
			return ws[0].at
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %d pending timers after 10 s", n)
		}
	}
}

func (c *FakeClock) AskedDurations() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.asked...)
}

// CAService is a CA service on loopback HTTPS whose clock is a FakeClock; down makes it
// answer 503 to everything.
type CAService struct {
	A     *authority.Authority
	CA    *certtest.CA
	Clock *FakeClock
	URL   string
	Pin   []byte
	Down  atomic.Bool
	Delay atomic.Int64 // nanoseconds each request is held
	Reqs  atomic.Int64
	// LoseReply makes the next request be served but its reply lost (a 502 instead).
	LoseReply atomic.Bool
}

func StartCAService(t *testing.T, lighthouses []authority.Lighthouse) *CAService {
	t.Helper()
	dir := t.TempDir()
	s := &CAService{CA: certtest.NewCA(t, "ca", certtest.WithIPs("10.42.0.0/16")), Clock: NewFakeClock(certtest.Now())}
	id, err := authority.LoadOrCreateTLSIdentity(filepath.Join(dir, "tls.pem"), []string{"localhost"}, s.Clock.Now())
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
	s.URL, s.Pin = "https://"+ln.Addr().String(), id.Pin
	store, err := authority.OpenBolt(filepath.Join(dir, "ca.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	s.A, err = authority.New(authority.Options{
		Store: store, CAs: []authority.SigningCA{{Cert: s.CA.Cert, Key: s.CA.Key}}, ServiceKey: svcKey,
		Lighthouses: lighthouses, URL: s.URL, Pin: id.Pin, CertDuration: time.Hour, Now: s.Clock.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.A.SyncCIDRs([]authority.CIDR{{Name: "mesh", Prefix: netip.MustParsePrefix("10.42.0.0/16")},
		{Name: "servers", Prefix: netip.MustParsePrefix("10.42.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	srv := authority.NewServer(authority.ServerOptions{Authority: s.A, TLS: id, Now: s.Clock.Now, EnrollRate: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h := srv.Handler()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Reqs.Add(1)
		time.Sleep(time.Duration(s.Delay.Load()))
		if s.Down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if s.LoseReply.CompareAndSwap(true, false) {
			h.ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, "reply lost", http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(tls.NewListener(ln, srv.TLSConfig())) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return s
}

func (s *CAService) Invite(t *testing.T, name string, ip string) string {
	t.Helper()
	req := authority.InviteRequest{Name: name, CIDR: "servers", Groups: []string{"test"}}
	if ip != "" {
		req.IP = netip.MustParseAddr(ip)
	}
	tok, _, err := s.A.Invite(req)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
