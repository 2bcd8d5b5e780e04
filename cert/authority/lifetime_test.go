package authority_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/cert/authority"
	"github.com/meshnode/meshnode/cert/certtest"
)

// durations.cert is the whole validity of a host cert, NotAfter − NotBefore: the backdating
// for lagging clocks is a part of it (a minute, at most a tenth), never added to it. So an
// operator's 90 s cert lives 90 s, and renewal at 2/3 comes 60 s after NotBefore.
func TestCertDurationIsTheWholeValidityBackdateIncluded(t *testing.T) {
	for _, tc := range []struct {
		life, backdate time.Duration
	}{
		{90 * time.Second, 9 * time.Second},
		{5 * time.Second, 0}, // a tenth of 5 s, in the whole seconds certs keep
		{10 * time.Minute, time.Minute},
		{time.Hour, time.Minute},
		{30 * 24 * time.Hour, time.Minute},
	} {
		t.Run(tc.life.String(), func(t *testing.T) {
			f := newFixture(t, func(o *authority.Options) { o.CertDuration = tc.life })
			check := func(what string, n *node) {
				t.Helper()
				now := f.clock.Now()
				d := n.cert.Details
				if got := d.NotAfter.Sub(d.NotBefore); got != tc.life {
					t.Errorf("%s: NotAfter − NotBefore = %v, want %v", what, got, tc.life)
				}
				if want := now.Add(-tc.backdate).Truncate(time.Second); !d.NotBefore.Equal(want) {
					t.Errorf("%s: NotBefore %v, want %v (backdated %v)", what, d.NotBefore, want, tc.backdate)
				}
			}
			n := f.enroll(t, "web1", "servers")
			check("enrolled", n)
			f.clock.Add(tc.life * 2 / 3)
			f.renew(t, n)
			check("renewed", n)
		})
	}
}

// A host cert never outlives its CA, and never starts before it: a CA made a moment ago
// moves NotBefore up, and the cert still gets its whole lifetime from there.
func TestHostCertStaysInsideItsCAsValidity(t *testing.T) {
	now := certtest.Now()
	t.Run("CA ends first", func(t *testing.T) {
		ca := certtest.NewCA(t, "short", certtest.WithIPs("10.42.0.0/16"), certtest.WithValidity(now.Add(-time.Hour), now.Add(30*time.Minute)))
		f := newFixture(t, func(o *authority.Options) {
			o.CAs = []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}}
			o.CertDuration = time.Hour
		})
		n := f.enroll(t, "web1", "servers")
		// The fixture's clock, not now: it was read later and may be a second ahead.
		start := f.clock.Now().Add(-time.Minute)
		if d := n.cert.Details; !d.NotAfter.Equal(ca.Cert.Details.NotAfter) || !d.NotBefore.Equal(start) {
			t.Errorf("cert %v – %v, want %v – the CA's end %v", d.NotBefore, d.NotAfter, start, ca.Cert.Details.NotAfter)
		}
	})
	t.Run("CA just made", func(t *testing.T) {
		ca := certtest.NewCA(t, "fresh", certtest.WithIPs("10.42.0.0/16"), certtest.WithValidity(now.Add(-2*time.Second), now.Add(time.Hour)))
		f := newFixture(t, func(o *authority.Options) {
			o.CAs = []authority.SigningCA{{Cert: ca.Cert, Key: ca.Key}}
			o.CertDuration = 90 * time.Second
		})
		n := f.enroll(t, "web1", "servers")
		d := n.cert.Details
		if !d.NotBefore.Equal(ca.Cert.Details.NotBefore) || d.NotAfter.Sub(d.NotBefore) != 90*time.Second {
			t.Errorf("cert %v – %v, want from the CA's start %v for 90s", d.NotBefore, d.NotAfter, ca.Cert.Details.NotBefore)
		}
	})
}

func TestCertDurationUnderASecondIsRefused(t *testing.T) {
	f := newFixture(t)
	o := f.opts
	o.CertDuration = 500 * time.Millisecond
	if _, err := authority.New(o); err == nil || !strings.Contains(err.Error(), "lifetime") {
		t.Errorf("New with a 500ms cert lifetime = %v, want an error", err)
	}
}

// Revoking a host voids every token ever issued for it: the one it enrolled with, and
// outstanding unused ones, current, superseded or expired. Each is refused with ErrRevoked
// and a message naming the host, and nothing is issued or consumed.
func TestEveryTokenOfARevokedHostIsRefused(t *testing.T) {
	f := newFixture(t)

	// web1 enrolled; its token is used.
	usedTok, _ := f.invite(t, "web1", "servers")
	pub, _ := newKey(t)
	if _, err := f.a.Enroll(usedTok.Secret, pub); err != nil {
		t.Fatal(err)
	}
	// laptop was invited three times and never enrolled: the first token expired, the second
	// was superseded by the third, which is still outstanding.
	expiredTok, _ := f.invite(t, "laptop", "humans")
	f.clock.Add(authority.DefaultTokenTTL + time.Second)
	supersededTok, _ := f.invite(t, "laptop", "humans")
	outstandingTok, _ := f.invite(t, "laptop", "humans")
	// A bystander's outstanding token must keep working.
	otherTok, _ := f.invite(t, "web2", "servers")

	for _, h := range []string{"web1", "laptop"} {
		if _, err := f.a.Revoke(h); err != nil {
			t.Fatal(err)
		}
	}
	before := auditLen(t, f)
	hostsBefore, _ := f.a.Hosts()
	for _, tc := range []struct {
		name string
		tok  authority.Token
		host string
	}{
		{"used token of an enrolled host", usedTok, "web1"},
		{"outstanding token", outstandingTok, "laptop"},
		{"superseded unused token", supersededTok, "laptop"},
		{"expired unused token", expiredTok, "laptop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub, _ := newKey(t)
			_, err := f.a.Enroll(tc.tok.Secret, pub)
			if !errors.Is(err, authority.ErrRevoked) || !strings.Contains(err.Error(), tc.host) {
				t.Fatalf("Enroll = %v, want ErrRevoked naming %s", err, tc.host)
			}
		})
	}
	if n := auditLen(t, f); n != before {
		t.Errorf("refused enrollments wrote %d audit entries", n-before)
	}
	hostsAfter, _ := f.a.Hosts()
	for i := range hostsAfter {
		if hostsAfter[i].State != hostsBefore[i].State || hostsAfter[i].Fingerprint != hostsBefore[i].Fingerprint {
			t.Errorf("host %s changed: %+v -> %+v", hostsAfter[i].Name, hostsBefore[i], hostsAfter[i])
		}
	}
	// Nor can the admin hand out a new token under a revoked name.
	for _, h := range []string{"web1", "laptop"} {
		if _, _, err := f.a.Invite(authority.InviteRequest{Name: h, CIDR: "servers"}); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("invite of revoked %s = %v, want refused as revoked", h, err)
		}
	}
	if _, err := f.a.Enroll(otherTok.Secret, pub); err != nil {
		t.Errorf("a bystander's token: %v", err)
	}
}

// The first invite without an explicit IP never gets a lighthouse's VPN IP, however ca.yml
// declares it (plain, IPv4-mapped IPv6, several, inside a child CIDR, or only enrolled in the
// inventory), nor an address already taken, nor a network or broadcast address.
func TestInviteWithoutIPAvoidsLighthousesTakenAndReservedAddresses(t *testing.T) {
	dir := t.TempDir()
	yml := filepath.Join(dir, "ca.yml")
	if err := os.WriteFile(yml, []byte(`ca:
  - crt: ca.crt
    key: ca.key
lighthouses:
  - vpn_ip: 10.42.0.1
    addrs: ["192.0.2.1:4242"]
  - vpn_ip: "::ffff:10.42.0.2"
    addrs: ["192.0.2.2:4242"]
  - vpn_ip: 10.42.9.1
    addrs: ["192.0.2.3:4242"]
  - vpn_ip: 10.42.9.6
    addrs: ["192.0.2.4:4242"]
cidrs:
  mesh:
    cidr: 10.42.0.0/16
    children:
      servers:
        cidr: 10.42.0.0/24
      small:
        cidr: 10.42.9.0/29
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := authority.LoadConfig(yml)
	if err != nil {
		t.Fatal(err)
	}
	lhs := cfg.LighthouseList()
	for _, l := range lhs {
		if !l.VpnIP.Is4() {
			t.Errorf("lighthouse %v handed to nodes as %v, want plain IPv4", l.VpnIP, l.VpnIP)
		}
	}
	f := newFixture(t, func(o *authority.Options) { o.Lighthouses = lhs })
	if err := f.a.SyncCIDRs(cfg.ConfigCIDRs()); err != nil {
		t.Fatal(err)
	}
	// A lighthouse known only to the inventory: invited by its address explicitly.
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "lh3", CIDR: "servers", IP: netip.MustParseAddr("10.42.0.3")}); err != nil {
		t.Fatal(err)
	}
	// And the configured lighthouse's address may still be chosen explicitly (to enroll it).
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "lh1", CIDR: "servers", IP: netip.MustParseAddr("10.42.0.1")}); err != nil {
		t.Fatal(err)
	}
	invite := func(name, cidr string) (netip.Addr, error) {
		_, id, err := f.a.Invite(authority.InviteRequest{Name: name, CIDR: cidr})
		return id.IP.Addr(), err
	}
	if ip, err := invite("first", "servers"); err != nil || ip != netip.MustParseAddr("10.42.0.4") {
		t.Errorf("first invite in servers = %v, %v; want 10.42.0.4 (.0 network, .1 and .2 lighthouses, .3 taken)", ip, err)
	}
	// small is 10.42.9.0/29: .0 network, .7 broadcast, .1 and .6 lighthouses.
	for i, want := range []string{"10.42.9.2", "10.42.9.3", "10.42.9.4", "10.42.9.5"} {
		if ip, err := invite("s"+want[len(want)-1:], "small"); err != nil || ip != netip.MustParseAddr(want) {
			t.Errorf("invite %d in small = %v, %v; want %s", i, ip, err, want)
		}
	}
	if ip, err := invite("one-too-many", "small"); !errors.Is(err, authority.ErrNoFreeIP) {
		t.Errorf("invite in a full small = %v, %v; want ErrNoFreeIP", ip, err)
	}
	for _, ip := range []string{"10.42.9.0", "10.42.9.7", "10.42.0.0", "10.42.0.255"} {
		if _, _, err := f.a.Invite(authority.InviteRequest{Name: "reserved", CIDR: "small", IP: netip.MustParseAddr(ip)}); err == nil {
			t.Errorf("explicit %s accepted", ip)
		}
	}
	if _, _, err := f.a.Invite(authority.InviteRequest{Name: "dup", CIDR: "servers", IP: netip.MustParseAddr("10.42.0.4")}); !errors.Is(err, authority.ErrIPTaken) {
		t.Errorf("explicit taken address = %v, want ErrIPTaken", err)
	}
}

func TestConfigRefusesANonIPv4Lighthouse(t *testing.T) {
	yml := filepath.Join(t.TempDir(), "ca.yml")
	if err := os.WriteFile(yml, []byte("ca: [{crt: ca.crt, key: ca.key}]\nlighthouses: [{vpn_ip: \"fd00::1\", addrs: [\"192.0.2.1:4242\"]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := authority.LoadConfig(yml); err == nil || !strings.Contains(err.Error(), "lighthouses[0].vpn_ip") {
		t.Errorf("LoadConfig = %v, want lighthouses[0].vpn_ip refused", err)
	}
}
