// Package storetest is the contract every authority.Store must meet. Each implementation's
// tests call Run with a way to make a fresh store (and, for durable stores, to reopen one).
package storetest

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
)

// Factory makes stores for the suite.
type Factory struct {
	// New returns an empty store; the suite closes it.
	New func(t *testing.T) authority.Store
	// Reopen closes s and opens the same store again, as after a process restart. Nil for
	// stores that are not durable; the persistence test then skips.
	Reopen func(t *testing.T, s authority.Store) authority.Store
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

var errAlreadyUsed = errors.New("token already used")

// Run runs the contract suite.
func Run(t *testing.T, f Factory) {
	t.Run("records round-trip and missing ones are reported absent", func(t *testing.T) { testRoundTrip(t, f) })
	t.Run("failed update leaves nothing behind", func(t *testing.T) { testRollback(t, f) })
	t.Run("token consumed by exactly one of 50 racing updates", func(t *testing.T) { testAtomicToken(t, f) })
	t.Run("audit log numbers entries in order", func(t *testing.T) { testAudit(t, f) })
	t.Run("blocklist version and nonces", func(t *testing.T) { testCounters(t, f) })
	t.Run("certs are found by host, and only that host's", func(t *testing.T) { testHostCerts(t, f) })
	t.Run("IPv6 and dual-stack CIDRs and hosts round-trip", func(t *testing.T) { testDualStack(t, f) })
	t.Run("state survives reopen", func(t *testing.T) { testReopen(t, f) })
	t.Run("closed store refuses transactions", func(t *testing.T) { testClosed(t, f) })
}

func open(t *testing.T, f Factory) authority.Store {
	t.Helper()
	s := f.New(t)
	t.Cleanup(func() { s.Close() })
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sampleHost() authority.Host {
	return authority.Host{
		Name: "web1", IP: netip.MustParsePrefix("10.42.0.5/16"), Groups: []string{"web", "ssh"},
		Subnets: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")}, CIDR: "servers", State: authority.HostEnrolled, Fingerprint: "aa", PrevFingerprint: "bb",
		NotAfter: t0.Add(time.Hour), Enrolled: t0, LastRenewal: t0.Add(time.Minute), RenewCounter: 7,
		EarlyRenewals: []time.Time{t0, t0.Add(time.Second)}, ForkReported: "dd",
	}
}

func fill(t *testing.T, s authority.Store) {
	t.Helper()
	must(t, s.Update(func(tx authority.Tx) error {
		must(t, tx.PutCIDR(authority.CIDR{Name: "servers", Prefix: netip.MustParsePrefix("10.42.0.0/24")}))
		must(t, tx.PutHost(sampleHost()))
		must(t, tx.PutCert(authority.CertRecord{Fingerprint: "aa", Host: "web1", Issuer: "ca", NotBefore: t0, NotAfter: t0.Add(time.Hour), Issued: t0, PEM: []byte("pem"), Bundle: "b1"}))
		must(t, tx.PutToken(authority.TokenRecord{Hash: "h1", Host: "web1", Created: t0, Expires: t0.Add(time.Hour)}))
		must(t, tx.PutRevocation(authority.Revocation{Fingerprint: "cc", Host: "web2", Time: t0}))
		_, err := tx.BumpBlocklistVersion()
		must(t, err)
		must(t, tx.PutNonce("web1", []byte{1, 2, 3}, t0))
		_, err = tx.AppendAudit(authority.AuditEntry{Time: t0, Action: "invite", Host: "web1"})
		return err
	}))
}

func check(t *testing.T, s authority.Store) {
	t.Helper()
	must(t, s.View(func(tx authority.Tx) error {
		c, ok, err := tx.CIDR("servers")
		if err != nil || !ok || c.Prefix != netip.MustParsePrefix("10.42.0.0/24") {
			t.Errorf("CIDR = %+v, %v, %v", c, ok, err)
		}
		h, ok, err := tx.Host("web1")
		want := sampleHost()
		if err != nil || !ok || h.IP != want.IP || !slices.Equal(h.Groups, want.Groups) || !slices.Equal(h.Subnets, want.Subnets) || h.RenewCounter != 7 ||
			!h.NotAfter.Equal(want.NotAfter) || h.PrevFingerprint != "bb" || h.State != authority.HostEnrolled ||
			len(h.EarlyRenewals) != 2 || !h.EarlyRenewals[1].Equal(want.EarlyRenewals[1]) || h.ForkReported != "dd" {
			t.Errorf("Host = %+v, %v, %v", h, ok, err)
		}
		cr, ok, err := tx.Cert("aa")
		if err != nil || !ok || cr.Host != "web1" || string(cr.PEM) != "pem" || cr.Bundle != "b1" {
			t.Errorf("Cert = %+v, %v, %v", cr, ok, err)
		}
		tok, ok, err := tx.Token("h1")
		if err != nil || !ok || tok.Host != "web1" || tok.Used {
			t.Errorf("Token = %+v, %v, %v", tok, ok, err)
		}
		r, ok, err := tx.Revocation("cc")
		if err != nil || !ok || r.Host != "web2" {
			t.Errorf("Revocation = %+v, %v, %v", r, ok, err)
		}
		if v, err := tx.BlocklistVersion(); err != nil || v != 1 {
			t.Errorf("BlocklistVersion = %d, %v", v, err)
		}
		if seen, err := tx.NonceSeen("web1", []byte{1, 2, 3}); err != nil || !seen {
			t.Errorf("NonceSeen = %v, %v", seen, err)
		}
		if a, err := tx.Audit(); err != nil || len(a) != 1 || a[0].Action != "invite" || a[0].Seq != 1 {
			t.Errorf("Audit = %+v, %v", a, err)
		}
		for name, n := range map[string]func() (int, error){
			"CIDRs": func() (int, error) { v, err := tx.CIDRs(); return len(v), err },
			"Hosts": func() (int, error) { v, err := tx.Hosts(); return len(v), err },
			"Certs": func() (int, error) { v, err := tx.Certs(); return len(v), err },
			"Revocations": func() (int, error) {
				v, err := tx.Revocations()
				return len(v), err
			},
		} {
			if got, err := n(); err != nil || got != 1 {
				t.Errorf("%s: %d records, %v; want 1", name, got, err)
			}
		}
		return nil
	}))
}

func testRoundTrip(t *testing.T, f Factory) {
	s := open(t, f)
	must(t, s.View(func(tx authority.Tx) error {
		if _, ok, err := tx.Host("nobody"); ok || err != nil {
			t.Errorf("missing host: ok=%v err=%v", ok, err)
		}
		if _, ok, err := tx.Token("nohash"); ok || err != nil {
			t.Errorf("missing token: ok=%v err=%v", ok, err)
		}
		if v, err := tx.BlocklistVersion(); v != 0 || err != nil {
			t.Errorf("fresh blocklist version = %d, %v", v, err)
		}
		return nil
	}))
	fill(t, s)
	check(t, s)
}

func testRollback(t *testing.T, f Factory) {
	s := open(t, f)
	fill(t, s)
	boom := errors.New("boom")
	err := s.Update(func(tx authority.Tx) error {
		h := sampleHost()
		h.RenewCounter = 99
		must(t, tx.PutHost(h))
		must(t, tx.PutHost(authority.Host{Name: "ghost"}))
		must(t, tx.PutToken(authority.TokenRecord{Hash: "h1", Host: "web1", Used: true}))
		if _, err := tx.BumpBlocklistVersion(); err != nil {
			return err
		}
		if _, err := tx.AppendAudit(authority.AuditEntry{Action: "ghost"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want the function's error", err)
	}
	check(t, s)
	must(t, s.View(func(tx authority.Tx) error {
		if _, ok, _ := tx.Host("ghost"); ok {
			t.Error("host put in a failed update is visible")
		}
		return nil
	}))
}

func testAtomicToken(t *testing.T, f Factory) {
	s := open(t, f)
	fill(t, s)
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.Update(func(tx authority.Tx) error {
				tok, ok, err := tx.Token("h1")
				if err != nil {
					return err
				}
				if !ok || tok.Used {
					return errAlreadyUsed
				}
				tok.Used = true
				if err := tx.PutToken(tok); err != nil {
					return err
				}
				_, err = tx.AppendAudit(authority.AuditEntry{Action: "enroll", Detail: fmt.Sprint(i)})
				return err
			})
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, errAlreadyUsed):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d updates consumed the token, want exactly 1", ok)
	}
	must(t, s.View(func(tx authority.Tx) error {
		a, err := tx.Audit()
		if err != nil || len(a) != 2 {
			t.Errorf("audit has %d entries (%v), want the fill entry and one enroll", len(a), err)
		}
		return nil
	}))
}

func testAudit(t *testing.T, f Factory) {
	s := open(t, f)
	for i := range 5 {
		must(t, s.Update(func(tx authority.Tx) error {
			seq, err := tx.AppendAudit(authority.AuditEntry{Time: t0, Action: fmt.Sprint("a", i)})
			if seq != uint64(i+1) {
				t.Errorf("entry %d got seq %d", i, seq)
			}
			return err
		}))
	}
	must(t, s.View(func(tx authority.Tx) error {
		a, err := tx.Audit()
		must(t, err)
		for i, e := range a {
			if e.Seq != uint64(i+1) || e.Action != fmt.Sprint("a", i) {
				t.Errorf("entry %d = %+v", i, e)
			}
		}
		if len(a) != 5 {
			t.Errorf("%d entries, want 5", len(a))
		}
		return nil
	}))
}

func testCounters(t *testing.T, f Factory) {
	s := open(t, f)
	must(t, s.Update(func(tx authority.Tx) error {
		for want := uint64(1); want <= 3; want++ {
			if v, err := tx.BumpBlocklistVersion(); v != want || err != nil {
				t.Errorf("bump = %d, %v; want %d", v, err, want)
			}
		}
		must(t, tx.PutNonce("a", []byte("old"), t0))
		must(t, tx.PutNonce("a", []byte("new"), t0.Add(time.Hour)))
		must(t, tx.PruneNonces(t0.Add(time.Minute)))
		if seen, _ := tx.NonceSeen("a", []byte("old")); seen {
			t.Error("pruned nonce still seen")
		}
		if seen, _ := tx.NonceSeen("a", []byte("new")); !seen {
			t.Error("recent nonce pruned")
		}
		if seen, _ := tx.NonceSeen("b", []byte("new")); seen {
			t.Error("nonce of host a seen for host b")
		}
		return nil
	}))
}

func testReopen(t *testing.T, f Factory) {
	if f.Reopen == nil {
		t.Skip("store is not durable")
	}
	s := f.New(t)
	fill(t, s)
	s = f.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	check(t, s)
	// Sequences continue rather than restart, so audit entries are never overwritten.
	must(t, s.Update(func(tx authority.Tx) error {
		seq, err := tx.AppendAudit(authority.AuditEntry{Action: "after"})
		if seq != 2 {
			t.Errorf("first audit seq after reopen = %d, want 2", seq)
		}
		return err
	}))
}

func testClosed(t *testing.T, f Factory) {
	s := f.New(t)
	must(t, s.Close())
	if err := s.Update(func(authority.Tx) error { return nil }); !errors.Is(err, authority.ErrStoreClosed) {
		t.Errorf("Update after Close = %v, want ErrStoreClosed", err)
	}
	if err := s.View(func(authority.Tx) error { return nil }); !errors.Is(err, authority.ErrStoreClosed) {
		t.Errorf("View after Close = %v, want ErrStoreClosed", err)
	}
}

func testHostCerts(t *testing.T, f Factory) {
	s := open(t, f)
	cr := func(fp, host string) authority.CertRecord {
		return authority.CertRecord{Fingerprint: fp, Host: host, NotBefore: t0, NotAfter: t0.Add(time.Hour), Issued: t0}
	}
	must(t, s.Update(func(tx authority.Tx) error {
		// "web1" is a prefix of "web10": the lookup must not mix them up.
		for _, c := range []authority.CertRecord{cr("f1", "web1"), cr("f2", "web10"), cr("f3", "web1"), cr("f4", "db")} {
			must(t, tx.PutCert(c))
		}
		return nil
	}))
	fps := func(host string) []string {
		var out []string
		must(t, s.View(func(tx authority.Tx) error {
			cs, err := tx.HostCerts(host)
			for _, c := range cs {
				out = append(out, c.Fingerprint)
			}
			return err
		}))
		slices.Sort(out)
		return out
	}
	if got := fps("web1"); !slices.Equal(got, []string{"f1", "f3"}) {
		t.Errorf("HostCerts(web1) = %v, want [f1 f3]", got)
	}
	if got := fps("web10"); !slices.Equal(got, []string{"f2"}) {
		t.Errorf("HostCerts(web10) = %v, want [f2]", got)
	}
	if got := fps("nobody"); len(got) != 0 {
		t.Errorf("HostCerts(nobody) = %v", got)
	}
	// A rolled-back update leaves no index entry behind.
	_ = s.Update(func(tx authority.Tx) error {
		must(t, tx.PutCert(cr("f5", "web1")))
		return errors.New("abort")
	})
	if got := fps("web1"); !slices.Equal(got, []string{"f1", "f3"}) {
		t.Errorf("after a rollback HostCerts(web1) = %v", got)
	}
	if f.Reopen != nil {
		s = f.Reopen(t, s)
		t.Cleanup(func() { s.Close() })
		if got := fps("web1"); !slices.Equal(got, []string{"f1", "f3"}) {
			t.Errorf("after reopen HostCerts(web1) = %v", got)
		}
	}
}

// testDualStack: the IPv6 fields of CIDRs and hosts are kept, and a host that gives an
// address up (a store indexing addresses must drop its old ones) leaves it free for another.
func testDualStack(t *testing.T, f Factory) {
	s := open(t, f)
	dual := authority.CIDR{Name: "dual", Prefix: netip.MustParsePrefix("10.50.0.0/16"), Prefix6: netip.MustParsePrefix("fd50::/64")}
	six := authority.CIDR{Name: "six", Prefix: netip.MustParsePrefix("fd60::/64")}
	d := authority.Host{Name: "d", IP: netip.MustParsePrefix("10.50.0.1/16"), IP6: netip.MustParsePrefix("fd50::1/64"), CIDR: "dual", State: authority.HostInvited}
	v6 := authority.Host{Name: "v6", IP: netip.MustParsePrefix("fd60::1/64"), CIDR: "six", State: authority.HostInvited}
	must(t, s.Update(func(tx authority.Tx) error {
		must(t, tx.PutCIDR(dual))
		must(t, tx.PutCIDR(six))
		must(t, tx.PutHost(d))
		return tx.PutHost(v6)
	}))
	must(t, s.View(func(tx authority.Tx) error {
		for _, want := range []authority.CIDR{dual, six} {
			if c, ok, err := tx.CIDR(want.Name); err != nil || !ok || c != want {
				t.Errorf("CIDR %s = %+v, %v, %v", want.Name, c, ok, err)
			}
		}
		for _, want := range []authority.Host{d, v6} {
			if h, ok, err := tx.Host(want.Name); err != nil || !ok || h.IP != want.IP || h.IP6 != want.IP6 || !slices.Equal(h.Addrs(), want.Addrs()) {
				t.Errorf("Host %s = %+v, %v, %v", want.Name, h, ok, err)
			}
		}
		hs, err := tx.Hosts()
		if err != nil || len(hs) != 2 {
			t.Errorf("Hosts = %v, %v", hs, err)
		}
		return nil
	}))
	// d moves to other addresses (a replacing invite may); e then takes its old ones.
	d.IP, d.IP6 = netip.MustParsePrefix("10.50.0.2/16"), netip.MustParsePrefix("fd50::2/64")
	must(t, s.Update(func(tx authority.Tx) error { return tx.PutHost(d) }))
	must(t, s.Update(func(tx authority.Tx) error {
		return tx.PutHost(authority.Host{Name: "e", IP: netip.MustParsePrefix("10.50.0.1/16"), IP6: netip.MustParsePrefix("fd50::1/64"), CIDR: "dual"})
	}))
	// Dropping the IPv6 address is kept too.
	d.IP6 = netip.Prefix{}
	must(t, s.Update(func(tx authority.Tx) error { return tx.PutHost(d) }))
	must(t, s.View(func(tx authority.Tx) error {
		if h, _, err := tx.Host("d"); err != nil || h.IP6.IsValid() || len(h.Addrs()) != 1 {
			t.Errorf("Host d after dropping IP6 = %+v, %v", h, err)
		}
		return nil
	}))
}
