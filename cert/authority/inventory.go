package authority

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// names of CIDRs, hosts and groups: printable, no separators that configs or the CLI split on.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func checkName(what, n string) error {
	if !nameRE.MatchString(n) {
		return fmt.Errorf("%w: %s %q (letters, digits, '.', '_', '-'; up to 63)", ErrInvalidName, what, n)
	}
	return nil
}

// Tree is the inventory's CIDRs arranged by containment (two prefixes always either nest
// or are disjoint, so containment alone gives a tree); a host's mask length is that of its CIDR's root (the overlay network).
type Tree struct {
	cidrs    map[string]CIDR
	parent   map[string]string
	children map[string][]string
	roots    []string
}

// NewTree checks cs (unique names and prefixes, IPv4, masked) and
// builds the tree.
func NewTree(cs []CIDR) (*Tree, error) {
	t := &Tree{cidrs: map[string]CIDR{}, parent: map[string]string{}, children: map[string][]string{}}
	for _, c := range cs {
		if err := checkName("CIDR", c.Name); err != nil {
			return nil, err
		}
		p := c.Prefix
		if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
			return nil, fmt.Errorf("%w: %s %v: want an IPv4 network address with its mask (10.42.0.0/24)", ErrCIDRInvalid, c.Name, p)
		}
		if _, dup := t.cidrs[c.Name]; dup {
			return nil, fmt.Errorf("%w: CIDR %s is defined twice", ErrNameTaken, c.Name)
		}
		t.cidrs[c.Name] = c
	}
	names := slices.Sorted(mapsKeys(t.cidrs))
	for _, n := range names {
		c := t.cidrs[n]
		best := ""
		for _, m := range names {
			if m == n {
				continue
			}
			o := t.cidrs[m]
			switch {
			case o.Prefix == c.Prefix:
				return nil, fmt.Errorf("%w: %s and %s are both %v", ErrCIDRInvalid, n, m, c.Prefix)
			case o.Prefix.Bits() < c.Prefix.Bits() && o.Prefix.Contains(c.Prefix.Addr()):
				if best == "" || o.Prefix.Bits() > t.cidrs[best].Prefix.Bits() {
					best = m
				}
			}
		}
		if best == "" {
			t.roots = append(t.roots, n)
		} else {
			t.parent[n] = best
			t.children[best] = append(t.children[best], n)
		}
	}
	byAddr := func(a, b string) int { return t.cidrs[a].Prefix.Addr().Compare(t.cidrs[b].Prefix.Addr()) }
	slices.SortFunc(t.roots, byAddr)
	for _, ch := range t.children {
		slices.SortFunc(ch, byAddr)
	}
	return t, nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Get returns the CIDR called name.
func (t *Tree) Get(name string) (CIDR, bool) { c, ok := t.cidrs[name]; return c, ok }

// Roots are the CIDRs no other contains, in address order.
func (t *Tree) Roots() []string { return slices.Clone(t.roots) }

// Children are the CIDRs directly inside name, in address order.
func (t *Tree) Children(name string) []string { return slices.Clone(t.children[name]) }

// Parent is the smallest CIDR containing name, or "" for a root.
func (t *Tree) Parent(name string) string { return t.parent[name] }

// Root is the outermost CIDR containing name: the overlay network whose mask hosts carry.
func (t *Tree) Root(name string) CIDR {
	for t.parent[name] != "" {
		name = t.parent[name]
	}
	return t.cidrs[name]
}

// usable reports the first and last host address of p: network and broadcast addresses
// are skipped except in /31 and /32, which have none.
func usable(p netip.Prefix) (first, last netip.Addr) {
	first = p.Addr()
	last = lastAddr(p)
	if p.Bits() < 31 {
		first, last = first.Next(), last.Prev()
	}
	return first, last
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// CheckAddr reports whether addr may be given to a host of CIDR name: inside it, not its
// network or broadcast address, and not inside one of its child CIDRs (those addresses
// belong to the child).
func (t *Tree) CheckAddr(name string, addr netip.Addr) error {
	c, ok := t.cidrs[name]
	if !ok {
		return fmt.Errorf("%w: %s", ErrCIDRUnknown, name)
	}
	first, last := usable(c.Prefix)
	if !addr.Is4() || addr.Less(first) || last.Less(addr) {
		return fmt.Errorf("%w: %v in %s %v", ErrIPOutsideCIDR, addr, name, c.Prefix)
	}
	for _, ch := range t.children[name] {
		if t.cidrs[ch].Prefix.Contains(addr) {
			return fmt.Errorf("%w: %v belongs to child CIDR %s", ErrIPOutsideCIDR, addr, ch)
		}
	}
	return nil
}

// NextFree suggests the lowest usable address of CIDR name that taken does not report,
// jumping over child CIDRs.
func (t *Tree) NextFree(name string, taken func(netip.Addr) bool) (netip.Addr, error) {
	c, ok := t.cidrs[name]
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrCIDRUnknown, name)
	}
	first, last := usable(c.Prefix)
	kids := t.children[name]
	for a := first; a.IsValid() && !last.Less(a); a = a.Next() {
		skipped := false
		for _, ch := range kids {
			if p := t.cidrs[ch].Prefix; p.Contains(a) {
				a = lastAddr(p) // the loop's Next moves past the child
				skipped = true
				break
			}
		}
		if !skipped && !taken(a) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %s %v", ErrNoFreeIP, name, c.Prefix)
}

// ParseCIDRSpec reads "name prefix" or "name=prefix" (as the CLI and tests write CIDRs).
func ParseCIDRSpec(s string) (CIDR, error) {
	name, pfx, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		name, pfx, ok = strings.Cut(strings.TrimSpace(s), " ")
	}
	if !ok {
		return CIDR{}, fmt.Errorf("%w: %q: want NAME=PREFIX", ErrCIDRInvalid, s)
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(pfx))
	if err != nil {
		return CIDR{}, fmt.Errorf("%w: %s: %w", ErrCIDRInvalid, name, err)
	}
	return CIDR{Name: strings.TrimSpace(name), Prefix: p}, nil
}
