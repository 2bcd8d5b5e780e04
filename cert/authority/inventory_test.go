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
		{"IPv6 second prefix IPv4", []string{"a=10.0.0.0/24,10.1.0.0/24"}, ErrCIDRInvalid},
		{"IPv6 then IPv6", []string{"a=fd00::/64,fd01::/64"}, ErrCIDRInvalid},
		{"IPv6 host bits", []string{"a=10.0.0.0/24,fd00::1/64"}, ErrCIDRInvalid},
		{"same IPv6 prefix twice", []string{"a=10.0.0.0/24,fd00::/64", "b=fd00::/64"}, ErrCIDRInvalid},
		{"families in different parents", []string{"a=10.0.0.0/16,fd00::/48", "b=10.1.0.0/16,fd01::/48", "c=10.0.1.0/24,fd01:0:0:1::/64"}, ErrCIDRInvalid},
		{"child has a family its parent lacks", []string{"a=10.0.0.0/16", "c=10.0.1.0/24,fd01:0:0:1::/64"}, ErrCIDRInvalid},
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

func TestDualStackTree(t *testing.T) {
	tr, err := NewTree(cidrs(t, "mesh=10.42.0.0/16,fd42::/48", "servers=10.42.0.0/24,fd42::/64", "v4only=10.42.5.0/24", "six=fd43::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Roots(); !slices.Equal(got, []string{"mesh", "six"}) {
		t.Errorf("Roots = %v", got)
	}
	if got := tr.Children("mesh"); !slices.Equal(got, []string{"servers", "v4only"}) {
		t.Errorf("Children(mesh) = %v", got)
	}
	none := func(netip.Addr) bool { return false }
	for _, tc := range []struct {
		cidr  string
		given []string
		want  []string
		err   error
	}{
		{"servers", nil, []string{"10.42.0.1/16", "fd42::1/48"}, nil},
		{"mesh", nil, []string{"10.42.1.0/16", "fd42:0:0:1::/48"}, nil}, // past the children
		{"v4only", nil, []string{"10.42.5.1/16"}, nil},
		{"six", nil, []string{"fd43::1/64"}, nil},
		{"servers", []string{"fd42::7"}, []string{"10.42.0.1/16", "fd42::7/48"}, nil},
		{"servers", []string{"fd42::7", "10.42.0.9"}, []string{"10.42.0.9/16", "fd42::7/48"}, nil},
		{"servers", []string{"fd42::7", "fd42::8"}, nil, ErrMalformed},
		{"servers", []string{"fd42::"}, nil, ErrIPOutsideCIDR},        // subnet-router anycast
		{"servers", []string{"fd42:0:0:1::5"}, nil, ErrIPOutsideCIDR}, // another /64
		{"v4only", []string{"fd42::9"}, nil, ErrIPOutsideCIDR},        // no IPv6 network
		{"mesh", []string{"fd42::9"}, nil, ErrIPOutsideCIDR},          // belongs to servers
		{"six", []string{"10.42.0.9"}, nil, ErrIPOutsideCIDR},
	} {
		var given []netip.Addr
		for _, g := range tc.given {
			given = append(given, netip.MustParseAddr(g))
		}
		got, err := tr.Addrs(tc.cidr, given, none)
		if !errors.Is(err, tc.err) {
			t.Errorf("Addrs(%s, %v) err = %v, want %v", tc.cidr, tc.given, err, tc.err)
			continue
		}
		var gs []string
		for _, p := range got {
			gs = append(gs, p.String())
		}
		if !slices.Equal(gs, tc.want) {
			t.Errorf("Addrs(%s, %v) = %v, want %v", tc.cidr, tc.given, gs, tc.want)
		}
	}
	taken := func(a netip.Addr) bool { return a == netip.MustParseAddr("fd43::1") }
	if a, err := tr.NextFree("six", taken); err != nil || a != netip.MustParseAddr("fd43::2") {
		t.Errorf("NextFree(six) = %v, %v", a, err)
	}
	if tiny, err := NewTree(cidrs(t, "t=fd44::/127")); err != nil {
		t.Fatal(err)
	} else if a, err := tiny.NextFree("t", none); err != nil || a != netip.MustParseAddr("fd44::") {
		t.Errorf("a /127 has no anycast address to skip: %v, %v", a, err)
	}
}
