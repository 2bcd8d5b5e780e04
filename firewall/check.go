package firewall

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Query describes a flow for Check by what its first packet would carry.
type Query struct {
	// Proto is the IP protocol: ProtoTCP, ProtoUDP, ProtoICMP (ProtoICMPv6 over IPv6), or any
	// other number, which only `proto: any` rules match.
	Proto uint8
	// Port is the service port: the destination port of the flow's first packet, which is
	// what rules compare in both directions (ours inbound, the peer's outbound). Ignored for
	// protocols without ports.
	Port uint16
	// Remote is the peer's side of the flow; the zero Addr means the peer's first certificate
	// IP. Local is ours; the zero Addr means the firewall's first local address.
	Remote, Local netip.Addr
}

// Explanation is Check's answer: the verdict the first packet of the flow would get, and the
// rule that decided it.
type Explanation struct {
	Verdict Verdict
	Dir     Direction
	// Rule is the index in firewall.inbound or firewall.outbound (by Dir) of the first rule
	// that matches, or -1 when none does (Verdict.Reason then says why).
	Rule int
	// RuleText is that rule as a YAML flow map, e.g. `{port: 5432, proto: tcp, group: web}`.
	RuleText string
}

// String says what decided the verdict, for people: "accept: inbound[1] {port: 5432, ...}",
// "drop: no inbound rule matches (default drop)".
func (e Explanation) String() string {
	switch {
	case e.Rule >= 0:
		return fmt.Sprintf("%s: %s[%d] %s", e.Verdict.Action, e.Dir, e.Rule, e.RuleText)
	case e.Verdict.Reason == ReasonNoRule:
		how := "default drop"
		if e.Verdict.Action == Reject {
			how = e.Dir.String() + "_action: reject"
		}
		return fmt.Sprintf("%s: no %s rule matches (%s)", e.Verdict.Action, e.Dir, how)
	}
	return e.Verdict.String()
}

// RuleRef names one configured rule.
type RuleRef struct {
	Dir   Direction
	Index int
	Text  string
}

func (r RuleRef) String() string { return fmt.Sprintf("%s[%d] %s", r.Dir, r.Index, r.Text) }

// Check judges the first packet of the flow q describes, to or from peer, as Verdict would,
// without touching conntrack, counters or anything else: it is safe to call at any time, as
// often as wanted. It walks the rules in their configured order, so Rule is the first rule
// that matches (Verdict's index may find another one first; both agree on the verdict).
func (f *Firewall) Check(q Query, dir Direction, peer *Peer) Explanation {
	e := Explanation{Dir: dir, Rule: -1}
	if peer == nil || (dir != Inbound && dir != Outbound) {
		e.Verdict = Verdict{Drop, ReasonNoPeer}
		return e
	}
	rs := f.rules.Load()
	fl, r := f.queryFlow(q, peer, rs)
	if r != ReasonNone {
		e.Verdict = Verdict{Drop, r}
		return e
	}
	t, action := rs.in, rs.inAction
	if dir == Outbound {
		t, action = rs.out, rs.outAction
	}
	for i := range t.rules {
		if t.rules[i].matchProtoPort(&fl) && t.rules[i].matchPeer(&fl, peer) {
			e.Verdict, e.Rule, e.RuleText = Verdict{Accept, ReasonRule}, i, t.text[i]
			return e
		}
	}
	e.Verdict = Verdict{action, ReasonNoRule}
	return e
}

// PeerRules lists the rules of one direction whose peer conditions (host, groups, cidr, CA,
// local_cidr) the peer meets, whatever their port and proto: what the peer may do. The
// addresses default as in Query.
func (f *Firewall) PeerRules(dir Direction, peer *Peer, remote, local netip.Addr) []RuleRef {
	if peer == nil {
		return nil
	}
	rs := f.rules.Load()
	fl, r := f.queryFlow(Query{Remote: remote, Local: local}, peer, rs)
	if r != ReasonNone {
		return nil
	}
	t := rs.tableFor(dir)
	var out []RuleRef
	for i := range t.rules {
		if t.rules[i].matchPeer(&fl, peer) {
			out = append(out, RuleRef{Dir: dir, Index: i, Text: t.text[i]})
		}
	}
	return out
}

// PortRules lists the rules of one direction whose proto and port match q, whoever they
// admit: what a flow like q needs.
func (f *Firewall) PortRules(dir Direction, q Query) []RuleRef {
	rs := f.rules.Load()
	fl := flow{proto: q.Proto, ported: q.Proto == ProtoTCP || q.Proto == ProtoUDP, port: q.Port}
	fl.icmp = (q.Proto == ProtoICMP && !q.Remote.Is6()) || (q.Proto == ProtoICMPv6 && q.Remote.Is6())
	t := rs.tableFor(dir)
	var out []RuleRef
	for i := range t.rules {
		if t.rules[i].matchProtoPort(&fl) {
			out = append(out, RuleRef{Dir: dir, Index: i, Text: t.text[i]})
		}
	}
	return out
}

func (rs *ruleSet) tableFor(dir Direction) *table {
	if dir == Outbound {
		return rs.out
	}
	return rs.in
}

// queryFlow is the flow of q's first packet, after the address checks Verdict makes first.
func (f *Firewall) queryFlow(q Query, peer *Peer, rs *ruleSet) (flow, Reason) {
	remote, local := q.Remote, q.Local
	if !remote.IsValid() && len(peer.IPs) > 0 {
		remote = peer.IPs[0].Addr()
	}
	if !local.IsValid() && len(f.localAddrs) > 0 {
		local = f.localAddrs[0]
	}
	if !remote.IsValid() || !peer.owns(remote) {
		return flow{}, ReasonRemoteAddr
	}
	if !local.IsValid() || remote.Is4() != local.Is4() || !f.ownsLocal(local) {
		return flow{}, ReasonLocalAddr
	}
	fl := flow{proto: q.Proto, remote: remote, local: local, localVPN: f.localIsVPN(local), groups: peer.groupsIn(rs)}
	fl.icmp = (remote.Is4() && q.Proto == ProtoICMP) || (remote.Is6() && q.Proto == ProtoICMPv6)
	if q.Proto == ProtoTCP || q.Proto == ProtoUDP {
		fl.ported, fl.port = true, q.Port
	}
	return fl, ReasonNone
}

// matchProtoPort is the proto and port half of a rule, for a linear walk: the same test the
// table's index makes by where it files the rule.
func (r *compiledRule) matchProtoPort(f *flow) bool {
	switch r.class {
	case classTCP:
		if f.icmp || f.proto != ProtoTCP {
			return false
		}
	case classUDP:
		if f.icmp || f.proto != ProtoUDP {
			return false
		}
	case classICMP:
		if !f.icmp {
			return false
		}
	}
	switch {
	case r.portLo == portAny:
		return true
	case f.frag:
		return r.portLo == portFragment
	case !f.ported || r.portLo == portFragment:
		return false
	}
	return int32(f.port) >= r.portLo && int32(f.port) <= r.portHi
}

// String writes the rule as a YAML flow map with the keys that are set, in Nebula's order,
// so an operator recognises the line of their config.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteByte('{')
	kv := func(k, v string) {
		if v == "" {
			return
		}
		if b.Len() > 1 {
			b.WriteString(", ")
		}
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(yamlScalar(v))
	}
	kv("port", r.Port)
	kv("code", r.Code)
	kv("proto", r.Proto)
	kv("host", r.Host)
	kv("group", r.Group)
	if len(r.Groups) > 0 {
		gs := make([]string, len(r.Groups))
		for i, g := range r.Groups {
			gs[i] = yamlScalar(g)
		}
		if b.Len() > 1 {
			b.WriteString(", ")
		}
		b.WriteString("groups: [" + strings.Join(gs, ", ") + "]")
	}
	kv("cidr", r.CIDR)
	kv("local_cidr", r.LocalCIDR)
	kv("ca_name", r.CAName)
	kv("ca_sha", r.CASha)
	b.WriteByte('}')
	return b.String()
}

// yamlScalar quotes a value that would not read back as the same plain scalar.
func yamlScalar(s string) string {
	if s == "" || strings.ContainsAny(s, ",:{}[]#&*!|>'\"%@`\\\n\t") || strings.TrimSpace(s) != s {
		return strconv.Quote(s)
	}
	return s
}

func ruleTexts(rules []Rule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.String()
	}
	return out
}
