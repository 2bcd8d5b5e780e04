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

// Tree is the inventory's CIDRs arranged by containment (two prefixes of one family always
// either nest or are disjoint, so containment alone gives a tree); a host's mask length is
// that of its CIDR's root (the overlay network) in the address's family.
type Tree struct {
	cidrs    map[string]CIDR
	parent   map[string]string
	children map[string][]string
	roots    []string
}

// Prefixes are c's networks: Prefix, then Prefix6 for a dual-stack CIDR.
func (c CIDR) Prefixes() []netip.Prefix {
	if c.Prefix6.IsValid() {
		return []netip.Prefix{c.Prefix, c.Prefix6}
	}
	return []netip.Prefix{c.Prefix}
}

// prefixFor is c's prefix of a's family (IPv4 or IPv6), if it has one.
func (c CIDR) prefixFor(a netip.Addr) (netip.Prefix, bool) {
	for _, p := range c.Prefixes() {
		if p.Addr().Is4() == a.Is4() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (c CIDR) String() string {
	if c.Prefix6.IsValid() {
		return c.Prefix.String() + "," + c.Prefix6.String()
	}
	return c.Prefix.String()
}

func familyName(v4 bool) string {
	if v4 {
		return "IPv4"
	}
	return "IPv6"
}

// NewTree checks cs (unique names and prefixes, masked; Prefix IPv4 or IPv6, Prefix6 only
// IPv6 beside an IPv4 Prefix) and builds the tree. A dual-stack CIDR's two prefixes must
// sit in the same parent, and a child has no family its parent lacks: its hosts' masks come
// from the root's prefix of each family.
func NewTree(cs []CIDR) (*Tree, error) {
	t := &Tree{cidrs: map[string]CIDR{}, parent: map[string]string{}, children: map[string][]string{}}
	for _, c := range cs {
		if err := checkName("CIDR", c.Name); err != nil {
			return nil, err
		}
		p := c.Prefix
		if !p.IsValid() || p.Addr().Is4In6() || p != p.Masked() {
			return nil, fmt.Errorf("%w: %s %v: want a network address with its mask (10.42.0.0/24, fd42::/64)", ErrCIDRInvalid, c.Name, p)
		}
		if q := c.Prefix6; q.IsValid() || q != (netip.Prefix{}) {
			if !q.IsValid() || !q.Addr().Is6() || q.Addr().Is4In6() || q != q.Masked() || !p.Addr().Is4() {
				return nil, fmt.Errorf("%w: %s %v: the second prefix of a network must be IPv6 (fd42::/64) beside an IPv4 one", ErrCIDRInvalid, c.Name, q)
			}
		}
		if _, dup := t.cidrs[c.Name]; dup {
			return nil, fmt.Errorf("%w: CIDR %s is defined twice", ErrNameTaken, c.Name)
		}
		t.cidrs[c.Name] = c
	}
	names := slices.Sorted(mapsKeys(t.cidrs))
	for _, n := range names {
		c := t.cidrs[n]
		parent, first := "", true
		for _, p := range c.Prefixes() {
			best, bestBits := "", -1
			for _, m := range names {
				if m == n {
					continue
				}
				o, ok := t.cidrs[m].prefixFor(p.Addr())
				switch {
				case !ok:
				case o == p:
					return nil, fmt.Errorf("%w: %s and %s are both %v", ErrCIDRInvalid, n, m, p)
				case o.Bits() < p.Bits() && o.Contains(p.Addr()) && o.Bits() > bestBits:
					best, bestBits = m, o.Bits()
				}
			}
			if !first && best != parent {
				return nil, fmt.Errorf("%w: %s: its IPv4 network lies in %q and its IPv6 one in %q; both must be in the same parent (\"\" is none)",
					ErrCIDRInvalid, n, parent, best)
			}
			parent, first = best, false
		}
		if parent == "" {
			t.roots = append(t.roots, n)
			continue
		}
		// A parent without one of the child's families would leave its hosts without a mask.
		for _, p := range c.Prefixes() {
			if _, ok := t.cidrs[parent].prefixFor(p.Addr()); !ok {
				return nil, fmt.Errorf("%w: %s has an %s network but its parent %s has none", ErrCIDRInvalid, n, familyName(p.Addr().Is4()), parent)
			}
		}
		t.parent[n] = parent
		t.children[parent] = append(t.children[parent], n)
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

// HostPrefix is addr with the mask length of the overlay network of its family that CIDR
// name lies in (10.42.0.5/16, fd42::5/64), as certificates carry it.
func (t *Tree) HostPrefix(name string, addr netip.Addr) netip.Prefix {
	p, _ := t.Root(name).prefixFor(addr)
	return netip.PrefixFrom(addr, p.Bits())
}

// usable reports the first and last host address of p: an IPv4 network's network and
// broadcast addresses are skipped except in /31 and /32, which have none; an IPv6 network's
// first address (the subnet-router anycast) except in /127 and /128.
func usable(p netip.Prefix) (first, last netip.Addr) {
	first = p.Addr()
	last = lastAddr(p)
	switch {
	case p.Addr().Is4() && p.Bits() < 31:
		first, last = first.Next(), last.Prev()
	case p.Addr().Is6() && p.Bits() < 127:
		first = first.Next()
	}
	return first, last
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// CheckAddr reports whether addr may be given to a host of CIDR name: inside its network of
// addr's family, not its network or broadcast address, and not inside one of its child
// CIDRs (those addresses belong to the child).
func (t *Tree) CheckAddr(name string, addr netip.Addr) error {
	c, ok := t.cidrs[name]
	if !ok {
		return fmt.Errorf("%w: %s", ErrCIDRUnknown, name)
	}
	p, ok := c.prefixFor(addr)
	if !ok || addr.Is4In6() || addr.Zone() != "" {
		return fmt.Errorf("%w: %v: %s %v has no network of its family", ErrIPOutsideCIDR, addr, name, c)
	}
	first, last := usable(p)
	if addr.Less(first) || last.Less(addr) {
		return fmt.Errorf("%w: %v in %s %v", ErrIPOutsideCIDR, addr, name, p)
	}
	for _, ch := range t.children[name] {
		if cp, ok := t.cidrs[ch].prefixFor(addr); ok && cp.Contains(addr) {
			return fmt.Errorf("%w: %v belongs to child CIDR %s", ErrIPOutsideCIDR, addr, ch)
		}
	}
	return nil
}

// NextFree suggests the lowest usable address of CIDR name's first network (its IPv4 one
// when it has both) that taken does not report, jumping over child CIDRs.
func (t *Tree) NextFree(name string, taken func(netip.Addr) bool) (netip.Addr, error) {
	c, ok := t.cidrs[name]
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrCIDRUnknown, name)
	}
	return t.nextFreeIn(name, c.Prefix, taken)
}

// nextFreeIn is NextFree in p, one of CIDR name's networks.
func (t *Tree) nextFreeIn(name string, p netip.Prefix, taken func(netip.Addr) bool) (netip.Addr, error) {
	first, last := usable(p)
	kids := t.children[name]
	for a := first; a.IsValid() && !last.Less(a); a = a.Next() {
		skipped := false
		for _, ch := range kids {
			if cp, ok := t.cidrs[ch].prefixFor(a); ok && cp.Contains(a) {
				a = lastAddr(cp) // the loop's Next moves past the child
				skipped = true
				break
			}
		}
		if !skipped && !taken(a) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %s %v", ErrNoFreeIP, name, p)
}

// Addrs picks a host's addresses in CIDR name, one per network of it: a given address of
// that family (checked with CheckAddr), else the next free one. Each comes with its overlay
// mask, IPv4 first. Given addresses of a family the CIDR lacks, or two of one family, are
// refused.
func (t *Tree) Addrs(name string, given []netip.Addr, taken func(netip.Addr) bool) ([]netip.Prefix, error) {
	c, ok := t.cidrs[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrCIDRUnknown, name)
	}
	for i, g := range given {
		if err := t.CheckAddr(name, g); err != nil {
			return nil, err
		}
		for _, h := range given[:i] {
			if h.Is4() == g.Is4() {
				return nil, fmt.Errorf("%w: %v and %v: one address per family", ErrMalformed, h, g)
			}
		}
	}
	var out []netip.Prefix
	for _, p := range c.Prefixes() {
		i := slices.IndexFunc(given, func(g netip.Addr) bool { return g.Is4() == p.Addr().Is4() })
		var a netip.Addr
		if i >= 0 {
			a = given[i]
		} else {
			var err error
			if a, err = t.nextFreeIn(name, p, taken); err != nil {
				return nil, err
			}
		}
		out = append(out, t.HostPrefix(name, a))
	}
	return out, nil
}

// ParseCIDRSpec reads "name prefix" or "name=prefix" (as the CLI and tests write CIDRs);
// prefix may be "ipv4prefix,ipv6prefix" for a dual-stack network.
func ParseCIDRSpec(s string) (CIDR, error) {
	name, pfx, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		name, pfx, ok = strings.Cut(strings.TrimSpace(s), " ")
	}
	if !ok {
		return CIDR{}, fmt.Errorf("%w: %q: want NAME=PREFIX", ErrCIDRInvalid, s)
	}
	v4, v6, dual := strings.Cut(pfx, ",")
	p, err := netip.ParsePrefix(strings.TrimSpace(v4))
	if err != nil {
		return CIDR{}, fmt.Errorf("%w: %s: %w", ErrCIDRInvalid, name, err)
	}
	c := CIDR{Name: strings.TrimSpace(name), Prefix: p}
	if dual {
		if c.Prefix6, err = netip.ParsePrefix(strings.TrimSpace(v6)); err != nil {
			return CIDR{}, fmt.Errorf("%w: %s: %w", ErrCIDRInvalid, name, err)
		}
	}
	return c, nil
}
