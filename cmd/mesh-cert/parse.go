package main

import (
	"net/netip"
	"strings"

	"github.com/meshnode/meshnode/cert"
)

// parseCIDRs reads a comma separated list of IPv4 prefixes, keeping host bits as given
// (10.42.0.5/16 stays that, as nebula-cert stores it).
func parseCIDRs(flag, s string) ([]netip.Prefix, error) {
	return parseNetworks(flag, s, cert.Version1)
}

// parseNetworks reads a comma separated list of prefixes for a certificate of version v:
// IPv4 only for v1, IPv4 and IPv6 for v2. Host bits are kept as given, as nebula-cert does.
func parseNetworks(flag, s string, v cert.Version) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, usagef("invalid -%s definition %q: want an address with a prefix length, like 10.42.0.5/16 or fd42::5/64", flag, part)
		}
		if v == cert.Version1 && !p.Addr().Is4() {
			return nil, usagef("invalid -%s definition %q: v1 certificates can only contain IPv4 addresses (use -version 2)", flag, part)
		}
		out = append(out, p)
	}
	return out, nil
}

// parseVersion checks a -version flag; 0 is allowed only where it means "choose for me".
func parseVersion(v uint, zeroOK bool) (cert.Version, error) {
	switch {
	case v == 1, v == 2, v == 0 && zeroOK:
		return cert.Version(v), nil
	}
	return 0, usagef("-version must be either 1 or 2")
}

// checkCurve accepts the names nebula-cert 1.11 takes for Curve25519 and refuses P-256,
// which meshnode does not support.
func checkCurve(s string) error {
	switch s {
	case "25519", "X25519", "Curve25519", "CURVE25519":
		return nil
	case "P256":
		return usagef("-curve P256: %v", cert.ErrUnsupportedCurve)
	}
	return usagef("invalid -curve %q: want 25519", s)
}

// pickFlag returns the value of a flag or, when it is empty, of its deprecated alias, as
// nebula-cert 1.11 treats -ip/-ips and -subnets.
func pickFlag(current, deprecated string) string {
	if current == "" {
		return deprecated
	}
	return current
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
