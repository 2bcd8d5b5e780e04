package client_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/authority/client"
)

// TestAHostRenewingInALoopIsStillRevokedEverywhere: one host renews as fast as it can for
// the whole test (three certificate lifetimes, a request every 20 s of service time), then
// is revoked. Its renewals beyond the allowance are refused and counted, it never holds
// more than a few unexpired certificates, and every node fetches and applies the list,
// which blocks each of them.
func TestAHostRenewingInALoopIsStillRevokedEverywhere(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := startService(t, authority.ServerOptions{Registerer: reg, EnrollRate: -1})
	loop, err := client.Enroll(ctx, s.invite(t, "loop"), client.Options{Now: s.Now})
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*cert.Pool
	for _, name := range []string{"n1", "n2", "n3"} {
		e, err := client.Enroll(ctx, s.invite(t, name), client.Options{Now: s.Now})
		if err != nil {
			t.Fatal(err)
		}
		pool, err := cert.NewPoolFromPEMWithClock(e.CABundle, s.Now)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, pool)
	}
	c := s.client()
	certPEM, key := loop.CertPEM, loop.Key
	live := []*cert.Certificate{loop.Cert}
	accepted, refused := 0, 0
	for end := s.Now().Add(3 * time.Hour); s.Now().Before(end); s.advance(20 * time.Second) {
		r, err := c.Renew(ctx, client.RenewParams{CertPEM: certPEM, Key: key, ServiceKey: loop.ServiceKey})
		if err != nil {
			refused++
			continue
		}
		accepted++
		certPEM, key = r.CertPEM, r.Key
		live = append(live, r.Cert)
		live = slices.DeleteFunc(live, func(c *cert.Certificate) bool { return c.Expired(s.Now()) })
		if len(live) > 4 {
			t.Fatalf("after %d renewals the host holds %d unexpired certificates", accepted, len(live))
		}
	}
	t.Logf("%d renewals accepted, %d refused", accepted, refused)
	if got := requestCount(t, reg, "/v1/renew", "renew_limited"); got != float64(refused) || refused == 0 {
		t.Errorf("refused renewals counted %v, want %d (> 0)", got, refused)
	}
	if _, err := s.a.Revoke("loop"); err != nil {
		t.Fatal(err)
	}
	for i, pool := range nodes {
		b, err := c.FetchBlocklist(ctx, pool)
		if err != nil {
			t.Fatalf("node %d cannot fetch the blocklist: %v", i, err)
		}
		for _, fp := range b.Fingerprints {
			pool.Block(fp)
		}
		for _, lc := range live {
			if _, err := pool.Verify(lc, s.Now()); !errors.Is(err, cert.ErrBlocked) {
				t.Errorf("node %d still accepts the revoked host's cert %s: %v", i, lc.Fingerprint(), err)
			}
		}
	}
}

// requestCount is meshnode_ca_requests_total{path, code}.
func requestCount(t *testing.T, reg *prometheus.Registry, path, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meshnode_ca_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["path"] == path && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
