package lighthouse

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

// ErrBadAllowList is wrapped by every allow-list parse error; the message names the key.
var ErrBadAllowList = errors.New("invalid allow list")

// AllowList is Nebula's remote_allow_list / local_allow_list: CIDR → allow, the most specific
// matching CIDR decides. Each family has a default: the rule for 0.0.0.0/0 (or ::/0) when one
// is given; otherwise, if all of that family's rules say the same, the opposite of that;
// with no rules for a family, allow. Mixed values without a default are refused, as Nebula does.
//
// Addresses are unmapped before matching, so an IPv4 rule also covers ::ffff:a.b.c.d (the
// opposite was Nebula #1786). A nil *AllowList allows everything.
type AllowList struct {
	rules []allowRule // most specific first
	// names are local_allow_list's interface rules; they all share one value.
	names []*regexp.Regexp
	// nameAllow is the value of every name rule; unmatched names get the opposite.
	nameAllow bool
}

type allowRule struct {
	prefix netip.Prefix
	allow  bool
}

// Allow reports whether addr passes the list.
func (a *AllowList) Allow(addr netip.Addr) bool {
	if a == nil {
		return true
	}
	addr = addr.Unmap()
	for _, r := range a.rules {
		if r.prefix.Contains(addr) {
			return r.allow
		}
	}
	// Only an invalid address gets here: each family has a /0 default.
	return false
}

// AllowName reports whether an interface name passes local_allow_list's `interfaces` rules.
// The rules are anchored regular expressions; a name matching none gets the opposite of
// their common value, and no rules allow every name.
func (a *AllowList) AllowName(name string) bool {
	if a == nil || len(a.names) == 0 {
		return true
	}
	for _, re := range a.names {
		if re.MatchString(name) {
			return a.nameAllow
		}
	}
	return !a.nameAllow
}

// ParseAllowList parses a remote_allow_list-style mapping. key is the config path used in
// errors (e.g. "lighthouse.remote_allow_list"). An absent or null node gives nil (allow all).
func ParseAllowList(key string, n *yaml.Node) (*AllowList, error) {
	return parseAllowList(key, n, false)
}

// ParseLocalAllowList parses lighthouse.local_allow_list, which may also hold an
// `interfaces` mapping of interface-name regular expressions to a single true/false value.
func ParseLocalAllowList(key string, n *yaml.Node) (*AllowList, error) {
	return parseAllowList(key, n, true)
}

func badAllow(key, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", key, fmt.Sprintf(format, args...), ErrBadAllowList)
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func mapping(key string, n *yaml.Node) (*yaml.Node, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, badAllow(key, "must be a mapping of CIDR to true/false")
	}
	return n, nil
}

func subKey(key, name string) string { return key + "." + strconv.Quote(name) }

func parseAllowList(key string, n *yaml.Node, local bool) (*AllowList, error) {
	if isNull(n) {
		return nil, nil
	}
	n, err := mapping(key, n)
	if err != nil {
		return nil, err
	}
	a := &AllowList{}
	type family struct {
		n          int
		first      bool
		allSame    bool
		hasDefault bool
	}
	var v4, v6 family
	seen := map[netip.Prefix]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, badAllow(key, "line %d: key must be a CIDR string", k.Line)
		}
		if local && k.Value == "interfaces" {
			if err := a.parseNames(key+".interfaces", v); err != nil {
				return nil, err
			}
			continue
		}
		ck := subKey(key, k.Value)
		p, err := netip.ParsePrefix(k.Value)
		if err != nil {
			return nil, badAllow(ck, "not a CIDR")
		}
		p = p.Masked()
		var allow bool
		if v.Kind != yaml.ScalarNode || v.Decode(&allow) != nil {
			return nil, badAllow(ck, "value must be true or false")
		}
		// Two spellings of one prefix: Nebula keeps whichever its map iteration sees last, so
		// conflicting values are refused rather than decided by chance.
		if prev, dup := seen[p]; dup && prev != allow {
			return nil, badAllow(ck, "%s is also given with the opposite value", p)
		}
		seen[p] = allow
		fam := &v6
		if p.Addr().Is4() {
			fam = &v4
		}
		if fam.n == 0 {
			fam.first, fam.allSame = allow, true
		} else if allow != fam.first {
			fam.allSame = false
		}
		fam.n++
		if p.Bits() == 0 {
			fam.hasDefault = true
		}
		a.rules = append(a.rules, allowRule{p, allow})
	}
	for _, f := range []struct {
		fam *family
		def netip.Prefix
	}{{&v4, netip.MustParsePrefix("0.0.0.0/0")}, {&v6, netip.MustParsePrefix("::/0")}} {
		switch {
		case f.fam.hasDefault:
		case f.fam.n == 0:
			a.rules = append(a.rules, allowRule{f.def, true})
		case f.fam.allSame:
			a.rules = append(a.rules, allowRule{f.def, !f.fam.first})
		default:
			return nil, badAllow(key, "has both true and false rules but no default for %s", f.def)
		}
	}
	slices.SortStableFunc(a.rules, func(x, y allowRule) int { return y.prefix.Bits() - x.prefix.Bits() })
	return a, nil
}

func (a *AllowList) parseNames(key string, n *yaml.Node) error {
	n, err := mapping(key, n)
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ck := subKey(key, k.Value)
		if k.Kind != yaml.ScalarNode {
			return badAllow(key, "line %d: key must be an interface name pattern", k.Line)
		}
		var allow bool
		if v.Kind != yaml.ScalarNode || v.Decode(&allow) != nil {
			return badAllow(ck, "value must be true or false")
		}
		re, err := regexp.Compile("^(?:" + k.Value + ")$")
		if err != nil {
			return badAllow(ck, "bad regular expression: %v", err)
		}
		if len(a.names) > 0 && allow != a.nameAllow {
			return badAllow(key, "values must all be the same (all true or all false)")
		}
		a.names = append(a.names, re)
		a.nameAllow = allow
	}
	return nil
}

// RemoteAllowList is lighthouse.remote_allow_list together with lighthouse.remote_allow_ranges
// (allow lists that apply only to hosts whose VPN IP is inside a given range). An address must
// pass both the global list and the most specific range list for the host. A nil
// *RemoteAllowList allows everything.
type RemoteAllowList struct {
	Global *AllowList
	ranges []insideRange // most specific first
}

type insideRange struct {
	vpn  netip.Prefix
	list *AllowList
}

// Allow reports whether the underlay address addr may be used for the host vpn.
func (r *RemoteAllowList) Allow(vpn, addr netip.Addr) bool {
	if r == nil {
		return true
	}
	vpn = vpn.Unmap()
	for _, ir := range r.ranges {
		if ir.vpn.Contains(vpn) {
			if !ir.list.Allow(addr) {
				return false
			}
			break
		}
	}
	return r.Global.Allow(addr)
}

// ParseRemoteAllowList parses remote_allow_list (at listKey) and remote_allow_ranges (at
// rangesKey, a mapping of VPN CIDR to an allow list). Either node may be absent.
func ParseRemoteAllowList(listKey string, list *yaml.Node, rangesKey string, ranges *yaml.Node) (*RemoteAllowList, error) {
	g, err := ParseAllowList(listKey, list)
	if err != nil {
		return nil, err
	}
	r := &RemoteAllowList{Global: g}
	if !isNull(ranges) {
		m, err := mapping(rangesKey, ranges)
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			ck := subKey(rangesKey, k.Value)
			p, err := netip.ParsePrefix(k.Value)
			if k.Kind != yaml.ScalarNode || err != nil {
				return nil, badAllow(ck, "not a CIDR")
			}
			l, err := ParseAllowList(ck, v)
			if err != nil {
				return nil, err
			}
			if l == nil {
				return nil, badAllow(ck, "must be a mapping of CIDR to true/false")
			}
			r.ranges = append(r.ranges, insideRange{p.Masked(), l})
		}
		slices.SortStableFunc(r.ranges, func(x, y insideRange) int { return y.vpn.Bits() - x.vpn.Bits() })
	}
	if r.Global == nil && len(r.ranges) == 0 {
		return nil, nil
	}
	return r, nil
}
