package authority_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/certtest"
)

// newFixture6 is newFixture with a CA that limits no networks (a v1 CA cannot name an IPv6
// one) and a dual-stack network beside the v4 ones.
func newFixture6(t *testing.T) *fixture {
	t.Helper()
	ca := certtest.NewCA(t, "test-ca6")
	f := newFixture(t, func(o *authority.Options) { o.CAs = []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}} })
	f.ca = ca
	if err := f.a.SyncCIDRs([]authority.CIDR{
		{Name: "dual", Prefix: netip.MustParsePrefix("10.50.0.0/16"), Prefix6: netip.MustParsePrefix("fd50::/64")},
		{Name: "six", Prefix: netip.MustParsePrefix("fd60::/64")},
	}); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDualStackHostGetsV2CertWithBothAddresses(t *testing.T) {
	f := newFixture6(t)
	n := f.enroll(t, "d1", "dual", "web")
	want := []netip.Prefix{netip.MustParsePrefix("10.50.0.1/16"), netip.MustParsePrefix("fd50::1/64")}
	if n.cert.Version() != cert.Version2 || !slices.Equal(n.cert.Details.Ips, want) {
		t.Fatalf("enrolled cert %v %v, want v2 with %v", n.cert.Version(), n.cert.Details.Ips, want)
	}
	if _, err := cert.NewPoolWithClock(f.clock.Now).Verify(n.cert, f.clock.Now()); err == nil {
		t.Fatal("an empty pool verified the cert") // sanity of the check below
	}
	pool, _ := cert.NewPoolFromPEMWithClock(f.a.Bundle(), f.clock.Now)
	if _, err := pool.Verify(n.cert, f.clock.Now()); err != nil {
		t.Fatalf("v2 cert does not verify: %v", err)
	}
	f.renew(t, n)
	if n.cert.Version() != cert.Version2 || !slices.Equal(n.cert.Details.Ips, want) {
		t.Fatalf("renewed cert %v %v, want v2 with %v", n.cert.Version(), n.cert.Details.Ips, want)
	}
	// The next host gets the next address of each family; an IPv6-only host a v2 cert too.
	if _, id := f.invite(t, "d2", "dual"); id.IP.String() != "10.50.0.2/16" || id.IP6.String() != "fd50::2/64" {
		t.Errorf("second dual host got %v %v", id.IP, id.IP6)
	}
	s := f.enroll(t, "s1", "six")
	if s.cert.Version() != cert.Version2 || !slices.Equal(s.cert.Details.Ips, []netip.Prefix{netip.MustParsePrefix("fd60::1/64")}) {
		t.Errorf("v6-only host cert %v %v", s.cert.Version(), s.cert.Details.Ips)
	}
	// A v4-only host keeps a v1 cert.
	if v := f.enroll(t, "v4", "servers"); v.cert.Version() != cert.Version1 || len(v.cert.Details.Ips) != 1 {
		t.Errorf("v4 host cert %v %v", v.cert.Version(), v.cert.Details.Ips)
	}
}

func TestInviteChosenIPv6AddressesAndReplace(t *testing.T) {
	f := newFixture6(t)
	_, id, err := f.a.Invite(authority.InviteRequest{Name: "a", CIDR: "dual", IP: netip.MustParseAddr("fd50::77")})
	if err != nil || id.IP.String() != "10.50.0.1/16" || id.IP6.String() != "fd50::77/64" {
		t.Fatalf("invite -ip fd50::77 = %v %v, %v", id.IP, id.IP6, err)
	}
	// Never twice, in either family, whichever field names it.
	for _, req := range []authority.InviteRequest{
		{Name: "b", CIDR: "dual", IP: netip.MustParseAddr("fd50::77")},
		{Name: "b", CIDR: "dual", IP: netip.MustParseAddr("10.50.0.9"), IP6: netip.MustParseAddr("fd50::77")},
		{Name: "b", CIDR: "dual", IP6: netip.MustParseAddr("10.50.0.1")},
	} {
		if _, _, err := f.a.Invite(req); !errors.Is(err, authority.ErrIPTaken) {
			t.Errorf("Invite(%v, %v) = %v, want ErrIPTaken", req.IP, req.IP6, err)
		}
	}
	if _, id, err := f.a.Invite(authority.InviteRequest{Name: "b", CIDR: "dual"}); err != nil || id.IP6.String() != "fd50::1/64" {
		t.Errorf("next free after a chosen one: %v %v", id.IP6, err)
	}
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "c", CIDR: "servers", IP: netip.MustParseAddr("fd50::5")}); !errors.Is(err, authority.ErrIPOutsideCIDR) {
		t.Errorf("IPv6 address in a v4-only network: %v", err)
	}
	// Enrolled and replaced, the host keeps both addresses.
	tok, _ := authority.ParseToken(mustInvite(t, f, authority.InviteRequest{Name: "a", CIDR: "dual", IP: netip.MustParseAddr("fd50::77")}))
	pub, _ := newKey(t)
	if _, err := f.a.Enroll(tok.Secret, pub); err != nil {
		t.Fatal(err)
	}
	_, id, err = f.a.Invite(authority.InviteRequest{Name: "a", Replace: true})
	if err != nil || id.IP.String() != "10.50.0.1/16" || id.IP6.String() != "fd50::77/64" {
		t.Errorf("replace = %v %v, %v", id.IP, id.IP6, err)
	}
	es, _ := f.a.Audit()
	if d := es[len(es)-1].Detail; !strings.Contains(d, "ip=10.50.0.1/16 ip6=fd50::77/64 ") {
		t.Errorf("audit detail %q", d)
	}
	// A CIDR added later must not swallow a host's IPv6 address either.
	if err := f.a.AddCIDR(authority.CIDR{Name: "sub", Prefix: netip.MustParsePrefix("10.50.9.0/24"), Prefix6: netip.MustParsePrefix("fd50::/120")}); !errors.Is(err, authority.ErrCIDRInvalid) {
		t.Errorf("AddCIDR over a host's IPv6 address: %v", err)
	}
}

func mustInvite(t *testing.T, f *fixture, req authority.InviteRequest) string {
	t.Helper()
	s, _, err := f.a.Invite(req)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
