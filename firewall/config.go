package firewall

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Conntrack defaults, as in Nebula.
const (
	DefaultTCPTimeout     = 12 * time.Minute
	DefaultUDPTimeout     = 3 * time.Minute
	DefaultDefaultTimeout = 10 * time.Minute
)

// Config is the `firewall:` section of a node config, in Nebula's format. Its zero value is a
// valid config that denies everything in both directions.
type Config struct {
	Conntrack      ConntrackConfig `yaml:"conntrack"`
	InboundAction  string          `yaml:"inbound_action"`  // drop (default) or reject
	OutboundAction string          `yaml:"outbound_action"` // drop (default) or reject
	Inbound        []Rule          `yaml:"inbound"`
	Outbound       []Rule          `yaml:"outbound"`
	// DefaultLocalCIDRAny is what a rule without local_cidr means for our side of a packet:
	// false (the default, as in Nebula 1.10) limits it to our certificate's own IPs, so
	// traffic to the networks behind a gateway needs a rule that names them in local_cidr;
	// true lets it match every local address we own, subnets included (Nebula 1.6 to 1.9).
	DefaultLocalCIDRAny *bool `yaml:"default_local_cidr_any"`
}

// ConntrackConfig is `firewall.conntrack`. Zero durations take the defaults.
type ConntrackConfig struct {
	TCPTimeout     time.Duration `yaml:"tcp_timeout"`     // default 12m
	UDPTimeout     time.Duration `yaml:"udp_timeout"`     // default 3m
	DefaultTimeout time.Duration `yaml:"default_timeout"` // default 10m, for everything else
	// MaxConnections is accepted because Nebula's example configs carry it; Nebula 1.6 ignores
	// it, and so do we (the config loader warns that it has no effect).
	MaxConnections int `yaml:"max_connections"`
}

// Rule is one entry of firewall.inbound or firewall.outbound, with Nebula's keys. All values
// are kept as written; New validates them and names the rule in its errors.
type Rule struct {
	Port      string   `yaml:"port,omitempty"`       // "80", "8000-8100", "any" (or "0"), "fragment"; YAML ints are accepted
	Code      string   `yaml:"code,omitempty"`       // Nebula's alternative spelling of port; only one of the two may be set
	Proto     string   `yaml:"proto,omitempty"`      // any, tcp, udp, icmp
	Host      string   `yaml:"host,omitempty"`       // a certificate name, or any
	Group     string   `yaml:"group,omitempty"`      // a group, or any
	Groups    []string `yaml:"groups,omitempty"`     // all of these groups; a single string is accepted
	CIDR      string   `yaml:"cidr,omitempty"`       // the peer's address must be inside; any for everyone
	LocalCIDR string   `yaml:"local_cidr,omitempty"` // our address must be inside (for unsafe routes); any for everything
	CAName    string   `yaml:"ca_name,omitempty"`    // the issuing CA's name
	CASha     string   `yaml:"ca_sha,omitempty"`     // the issuing CA's fingerprint
}

// UnmarshalYAML decodes a rule. It accepts scalars of any YAML type for the string fields (so
// `port: 80` works), a one-element list for group, and one string or a list for groups, as
// Nebula does, and rejects unknown or repeated keys.
func (r *Rule) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a firewall rule must be a mapping", n.Line)
	}
	*r = Rule{}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			return fmt.Errorf("line %d: firewall rule: key %q repeated", k.Line, k.Value)
		}
		seen[k.Value] = true
		var dst *string
		switch k.Value {
		case "port":
			dst = &r.Port
		case "code":
			dst = &r.Code
		case "proto":
			dst = &r.Proto
		case "host":
			dst = &r.Host
		case "cidr":
			dst = &r.CIDR
		case "local_cidr":
			dst = &r.LocalCIDR
		case "ca_name":
			dst = &r.CAName
		case "ca_sha":
			dst = &r.CASha
		case "group":
			if v.Kind == yaml.SequenceNode {
				if len(v.Content) != 1 || v.Content[0].Kind != yaml.ScalarNode {
					return fmt.Errorf("line %d: firewall rule: group must be one value; use groups for several", v.Line)
				}
				v = v.Content[0]
			}
			dst = &r.Group
		case "groups":
			switch v.Kind {
			case yaml.ScalarNode:
				r.Groups = []string{v.Value}
			case yaml.SequenceNode:
				r.Groups = make([]string, 0, len(v.Content))
				for _, g := range v.Content {
					if g.Kind != yaml.ScalarNode {
						return fmt.Errorf("line %d: firewall rule: groups must be a list of names", g.Line)
					}
					r.Groups = append(r.Groups, g.Value)
				}
			default:
				return fmt.Errorf("line %d: firewall rule: groups must be a name or a list of names", v.Line)
			}
			continue
		default:
			return fmt.Errorf("line %d: firewall rule: unknown key %q", k.Line, k.Value)
		}
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: firewall rule: %s must be a single value", v.Line, k.Value)
		}
		if v.Tag != "!!null" {
			*dst = v.Value
		}
	}
	return nil
}

// ErrInvalidConfig is wrapped by every configuration error New and Reload return.
var ErrInvalidConfig = errors.New("invalid firewall config")

// ConfigError is one problem in a config, with the key path Nebula users know
// (`firewall.inbound[2].port`).
type ConfigError struct {
	Path string
	Msg  string
}

func (e *ConfigError) Error() string { return e.Path + ": " + e.Msg }

// Unwrap lets errors.Is(err, ErrInvalidConfig) work.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// Port values with a special meaning.
const (
	portAny      = -1
	portFragment = -2
)

// protoClass indexes a table by the protocol a rule names.
type protoClass uint8

const (
	classAny protoClass = iota
	classTCP
	classUDP
	classICMP
	numClasses
)

// compiledRule is a validated rule, ready for the hot path.
type compiledRule struct {
	index     int // position in the config list, for logs
	class     protoClass
	portLo    int32 // portAny, portFragment, or a range
	portHi    int32
	anyPeer   bool // host, group(s) or cidr said any, or none of them was given
	host      string
	groups    []string
	groupMask []maskWord   // groups as bits of the rule set's numbering
	cidr      netip.Prefix // invalid when unset
	local     netip.Prefix // invalid when unset or any
	vpnOnly   bool         // no local_cidr and not default_local_cidr_any: our cert IPs only
	caName    string
	caSha     string // lower-case hex
	caFilter  bool
}

// compileRules validates one direction's rules; problems are appended to errs.
func compileRules(table string, rules []Rule, localAny bool, warn func(msg string, args ...any), errs *[]error) []compiledRule {
	out := make([]compiledRule, 0, len(rules))
	for i, r := range rules {
		path := fmt.Sprintf("firewall.%s[%d]", table, i)
		bad := func(key, format string, a ...any) {
			*errs = append(*errs, &ConfigError{Path: path + key, Msg: fmt.Sprintf(format, a...)})
		}
		c := compiledRule{index: i}
		ok := true

		switch r.Proto {
		case "any":
			c.class = classAny
		case "tcp":
			c.class = classTCP
		case "udp":
			c.class = classUDP
		case "icmp":
			c.class = classICMP
		case "":
			bad(".proto", "missing; want any, tcp, udp or icmp")
			ok = false
		default:
			bad(".proto", "invalid proto %q; want any, tcp, udp or icmp", r.Proto)
			ok = false
		}

		portKey, port := ".port", r.Port
		if r.Code != "" {
			portKey, port = ".code", r.Code
		}
		switch {
		case r.Code != "" && r.Port != "":
			bad("", "only one of port or code may be given")
			ok = false
		case c.class == classICMP:
			// ICMP has no ports: the rule covers all of ICMP whatever it says.
			c.portLo, c.portHi = portAny, portAny
			if port != "" && port != "any" && port != "0" {
				warn("firewall: ignoring the port of an icmp rule", "rule", path, "port", port)
			}
		case port == "":
			bad(".port", "missing; want a port, a range like 8000-8100, any or fragment")
			ok = false
		default:
			lo, hi, err := parsePort(port)
			if err != nil {
				bad(portKey, "%v", err)
				ok = false
			}
			c.portLo, c.portHi = lo, hi
		}

		if r.Group != "" && len(r.Groups) > 0 {
			bad("", "only one of group or groups may be given")
			ok = false
		}
		groups := r.Groups
		if r.Group != "" {
			groups = []string{r.Group}
		}
		for _, g := range groups {
			if g == "" {
				bad(".groups", "empty group name")
				ok = false
			}
			if g == "any" {
				c.anyPeer = true
			}
		}
		c.groups = groups
		c.host = r.Host
		if r.Host == "any" {
			c.anyPeer = true
		}
		switch r.CIDR {
		case "":
		case "any":
			c.anyPeer = true
		default:
			p, err := netip.ParsePrefix(r.CIDR)
			if err != nil {
				bad(".cidr", "invalid cidr %q: %v", r.CIDR, err)
				ok = false
			}
			c.cidr = p.Masked()
		}
		c.vpnOnly = r.LocalCIDR == "" && !localAny
		switch r.LocalCIDR {
		case "", "any":
		default:
			p, err := netip.ParsePrefix(r.LocalCIDR)
			if err != nil {
				bad(".local_cidr", "invalid local_cidr %q: %v", r.LocalCIDR, err)
				ok = false
			}
			c.local = p.Masked()
		}
		if r.CASha != "" {
			if b, err := hex.DecodeString(r.CASha); err != nil || len(b) != 32 {
				bad(".ca_sha", "invalid ca_sha %q: want the 64 hex digits of a CA fingerprint", r.CASha)
				ok = false
			}
		}
		c.caName, c.caSha = r.CAName, strings.ToLower(r.CASha)
		c.caFilter = r.CAName != "" || r.CASha != ""
		if r.Host == "" && len(groups) == 0 && r.CIDR == "" && r.LocalCIDR == "" && !c.caFilter {
			bad("", "needs at least one of host, group, groups, cidr, local_cidr, ca_name or ca_sha")
			ok = false
		}
		if r.Host == "" && len(groups) == 0 && r.CIDR == "" {
			c.anyPeer = true // only CA or local_cidr restrict this rule
		}
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// parsePort reads Nebula's port syntax into an inclusive range or a special value.
func parsePort(s string) (lo, hi int32, err error) {
	switch s {
	case "any", "0":
		return portAny, portAny, nil
	case "fragment":
		return portFragment, portFragment, nil
	}
	one := func(s string) (int32, error) {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
		if err != nil {
			return 0, err
		}
		return int32(n), nil
	}
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		n, err := one(s)
		if err != nil {
			return 0, 0, fmt.Errorf("invalid port %q: want 0-65535, a range, any or fragment", s)
		}
		return n, n, nil
	}
	l, err1 := one(a)
	h, err2 := one(b)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("invalid port %q: want a range like 8000-8100", s)
	}
	if l > h {
		return 0, 0, fmt.Errorf("invalid port %q: range start is above its end", s)
	}
	return l, h, nil
}

func parseAction(key, s string, errs *[]error) Action {
	switch s {
	case "", "drop":
		return Drop
	case "reject":
		return Reject
	}
	*errs = append(*errs, &ConfigError{Path: "firewall." + key, Msg: fmt.Sprintf("invalid action %q; want drop or reject", s)})
	return Drop
}

// timeouts holds the conntrack timeouts in nanoseconds, read on the hot path.
type timeouts struct {
	tcp, udp, other int64
}

func parseTimeouts(c ConntrackConfig, errs *[]error) timeouts {
	get := func(key string, d, def time.Duration) int64 {
		switch {
		case d < 0:
			*errs = append(*errs, &ConfigError{Path: "firewall.conntrack." + key, Msg: fmt.Sprintf("negative timeout %v", d)})
			return int64(def)
		case d == 0:
			return int64(def)
		}
		return int64(d)
	}
	return timeouts{
		tcp:   get("tcp_timeout", c.TCPTimeout, DefaultTCPTimeout),
		udp:   get("udp_timeout", c.UDPTimeout, DefaultUDPTimeout),
		other: get("default_timeout", c.DefaultTimeout, DefaultDefaultTimeout),
	}
}
