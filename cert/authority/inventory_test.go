package authority

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func cidrs(t *testing.T, specs ...string) []CIDR {
	t.Helper()
	var out []CIDR
	for _, s := range specs {
		c, err := ParseCIDRSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func TestTreeNestsByContainment(t *testing.T) {
	tr, err := NewTree(cidrs(t, "humans=10.42.100.0/24", "mesh=10.42.0.0/16", "servers=10.42.0.0/24", "db=10.42.0.128/25", "other=10.99.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Roots(); !slices.Equal(got, []string{"mesh", "other"}) {
		t.Errorf("Roots = %v", got)
	}
	if got := tr.Children("mesh"); !slices.Equal(got, []string{"servers", "humans"}) {
		t.Errorf("Children(mesh) = %v", got)
	}
	if p := tr.Parent("db"); p != "servers" {
		t.Errorf("Parent(db) = %q, want the smallest container", p)
	}
	if r := tr.Root("db"); r.Name != "mesh" {
		t.Errorf("Root(db) = %v", r)
	}
}

func TestNewTreeRefusesBadCIDRs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs []string
		want  error
	}{
		{"same name twice", []string{"a=10.0.0.0/24", "a=10.0.1.0/24"}, ErrNameTaken},
		{"same prefix twice", []string{"a=10.0.0.0/24", "b=10.0.0.0/24"}, ErrCIDRInvalid},
		{"host bits set", []string{"a=10.0.0.1/24"}, ErrCIDRInvalid},
		{"IPv6", []string{"a=fd00::/64"}, ErrCIDRInvalid},
		{"name with space", []string{"a b=10.0.0.0/24"}, ErrInvalidName},
		{"empty name", []string{"=10.0.0.0/24"}, ErrInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cs []CIDR
			for _, s := range tc.specs {
				c, err := ParseCIDRSpec(s)
				if err != nil {
					t.Fatal(err)
				}
				cs = append(cs, c)
			}
			if _, err := NewTree(cs); !errors.Is(err, tc.want) {
				t.Fatalf("NewTree = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNextFreeSkipsReservedTakenAndChildAddresses(t *testing.T) {
	tr, err := NewTree(cidrs(t, "mesh=10.42.0.0/16", "servers=10.42.0.0/24", "tiny=10.43.0.0/30", "p2p=10.44.0.0/31"))
	if err != nil {
		t.Fatal(err)
	}
	set := func(addrs ...string) func(netip.Addr) bool {
		return func(a netip.Addr) bool { return slices.Contains(addrs, a.String()) }
	}
	for _, tc := range []struct {
		name, cidr string
		taken      []string
		want       string
		err        error
	}{
		{"skips network address", "servers", nil, "10.42.0.1", nil},
		{"skips taken", "servers", []string{"10.42.0.1", "10.42.0.2"}, "10.42.0.3", nil},
		{"parent skips its child CIDR", "mesh", nil, "10.42.1.0", nil},
		{"/30 has two usable addresses", "tiny", []string{"10.43.0.1"}, "10.43.0.2", nil},
		{"/30 full (broadcast never offered)", "tiny", []string{"10.43.0.1", "10.43.0.2"}, "", ErrNoFreeIP},
		{"/31 uses both addresses", "p2p", []string{"10.44.0.0"}, "10.44.0.1", nil},
		{"unknown CIDR", "nope", nil, "", ErrCIDRUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tr.NextFree(tc.cidr, set(tc.taken...))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if tc.err == nil && got.String() != tc.want {
				t.Fatalf("NextFree = %v, want %s", got, tc.want)
			}
		})
	}
}

func TestCheckAddr(t *testing.T) {
	tr, err := NewTree(cidrs(t, "mesh=10.42.0.0/16", "servers=10.42.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cidr, addr string
		ok         bool
	}{
		{"servers", "10.42.0.7", true},
		{"servers", "10.42.0.0", false},
		{"servers", "10.42.0.255", false},
		{"servers", "10.42.1.7", false},
		{"mesh", "10.42.0.7", false}, // belongs to servers
		{"mesh", "10.42.7.7", true},
	} {
		err := tr.CheckAddr(tc.cidr, netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("CheckAddr(%s, %s) = %v, want ok=%v", tc.cidr, tc.addr, err, tc.ok)
		}
	}
}
