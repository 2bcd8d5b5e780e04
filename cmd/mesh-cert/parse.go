package main

import (
	"net/netip"
	"strings"
)

// parseCIDRs reads a comma separated list of IPv4 prefixes, keeping host bits as given
// (10.42.0.5/16 stays that, as nebula-cert stores it).
func parseCIDRs(flag, s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, usagef("invalid -%s definition %q: want an IPv4 address with a mask length, like 10.42.0.5/16", flag, part)
		}
		if !p.Addr().Is4() {
			return nil, usagef("invalid -%s definition %q: can only be IPv4", flag, part)
		}
		out = append(out, p)
	}
	return out, nil
}

// parseGroups splits a comma separated list, dropping blanks like nebula-cert does.
func parseGroups(s string) []string {
	var out []string
	for _, g := range strings.Split(s, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}
