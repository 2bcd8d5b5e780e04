package overlay

// The firewall query (extOpFirewallQuery): "would your inbound rules let this traffic from me
// in?", answered by the peer from the identity the tunnel proved (never from anything the
// body claims), and `meshnode check`, which puts that beside the tunnel's state and our own
// outbound verdict.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshnode/meshnode/firewall"
)

// Wire format, version 1.
//
// Request body: version (1) | proto (1: tcp, udp or icmp) | port (2, big endian). The whole
// Test payload is 13 bytes, short enough to send a Nebula 1.6 peer safely (see ext.go), so
// the query needs no hello first and a Nebula peer is recognised in one round trip.
//
// Answer body: version (1) | status (1) and, when the status is fwStatusOK: action (1) |
// rule index (2, big endian; 0xffff when none) | reason (str8) | rule text (str8) |
// hint count (1) | hints (str8 each), where str8 is a length byte and that many bytes of
// printable UTF-8.
const (
	fwQueryVersion = 1
	fwQueryLen     = 4

	fwStatusOK         = 0
	fwStatusBadVersion = 1
	fwStatusBadQuery   = 2

	fwNoRule   = 0xffff
	fwTextMax  = 200 // a rule text is cut to this many bytes (the answer must stay one datagram)
	fwHintsMax = 4   // rules that let the asker in, listed when the verdict is not accept

	// fwQueryTimeout bounds the wait for the peer's answer (three tries, extRetry apart).
	fwQueryTimeout = 3 * time.Second
)

// Traffic is the flow `meshnode check` asks about: a protocol and, for TCP and UDP, the
// destination port.
type Traffic struct {
	Proto uint8
	Port  uint16
	// local is the address behind the answering gateway the traffic is for (meshnode check
	// of a destination in tun.unsafe_routes); unset means the gateway's own VPN IP. It
	// travels as 4 more bytes of the query, which a meshnode without it refuses as bad_query.
	local netip.Addr
}

// ParseTraffic reads "tcp/5432", "udp/53" or "icmp".
func ParseTraffic(s string) (Traffic, error) {
	name, port, hasPort := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "/")
	var t Traffic
	switch name {
	case "tcp":
		t.Proto = firewall.ProtoTCP
	case "udp":
		t.Proto = firewall.ProtoUDP
	case "icmp":
		if hasPort {
			return t, fmt.Errorf("%q: icmp has no port; write icmp", s)
		}
		return Traffic{Proto: firewall.ProtoICMP}, nil
	default:
		return t, fmt.Errorf("%q: want tcp/PORT, udp/PORT or icmp", s)
	}
	if !hasPort {
		return t, fmt.Errorf("%q: %s needs a port, e.g. %s/5432", s, name, name)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return t, fmt.Errorf("%q: the port must be 1-65535", s)
	}
	t.Port = uint16(p)
	return t, nil
}

func (t Traffic) String() string {
	switch t.Proto {
	case firewall.ProtoTCP:
		return fmt.Sprintf("tcp/%d", t.Port)
	case firewall.ProtoUDP:
		return fmt.Sprintf("udp/%d", t.Port)
	case firewall.ProtoICMP:
		return "icmp"
	}
	return fmt.Sprintf("proto %d", t.Proto)
}

func (t Traffic) valid() bool {
	switch t.Proto {
	case firewall.ProtoTCP, firewall.ProtoUDP:
		return t.Port != 0
	case firewall.ProtoICMP:
		return t.Port == 0
	}
	return false
}

func appendFWQuery(out []byte, t Traffic) []byte {
	out = append(out, fwQueryVersion, t.Proto)
	out = binary.BigEndian.AppendUint16(out, t.Port)
	if t.local.Is4() {
		out = append(out, t.local.AsSlice()...)
	}
	return out
}

// parseFWQuery reads a request body from the network; it never panics.
func parseFWQuery(b []byte) (Traffic, byte) {
	if len(b) < 1 || b[0] != fwQueryVersion {
		return Traffic{}, fwStatusBadVersion
	}
	if len(b) != fwQueryLen && len(b) != fwQueryLen+4 {
		return Traffic{}, fwStatusBadQuery
	}
	t := Traffic{Proto: b[1], Port: binary.BigEndian.Uint16(b[2:4])}
	if len(b) == fwQueryLen+4 {
		t.local = netip.AddrFrom4([4]byte(b[4:8]))
	}
	if !t.valid() {
		return Traffic{}, fwStatusBadQuery
	}
	return t, fwStatusOK
}

// FirewallVerdict is one firewall's verdict on the traffic `meshnode check` asks about.
type FirewallVerdict struct {
	Allowed  bool   `json:"allowed"`
	Action   string `json:"action"` // accept, drop or reject
	Reason   string `json:"reason"` // the firewall's reason label: rule, no_rule, ...
	Rule     int    `json:"rule"`   // index in firewall.inbound/outbound of the deciding rule; -1 when none
	RuleText string `json:"rule_text,omitempty"`
	// RulesForHost are rules whose host, group, cidr and CA conditions the far side of the
	// traffic meets, whatever their port: what it may send instead. Listed when the
	// traffic is refused.
	RulesForHost []string `json:"rules_for_host,omitempty"`
	// RulesForPort are rules for this protocol and port, whoever they admit (our own
	// outbound rules only: a peer does not tell us whom else it admits).
	RulesForPort []string `json:"rules_for_port,omitempty"`
}

func verdictOf(e firewall.Explanation) FirewallVerdict {
	return FirewallVerdict{Allowed: e.Verdict.Allowed(), Action: e.Verdict.Action.String(),
		Reason: e.Verdict.Reason.String(), Rule: e.Rule, RuleText: e.RuleText}
}

func refs(rs []firewall.RuleRef, max int) []string {
	var out []string
	for i, r := range rs {
		if i == max {
			out = append(out, fmt.Sprintf("... and %d more", len(rs)-max))
			break
		}
		out = append(out, r.String())
	}
	return out
}

// answerFirewallQuery is the extOpFirewallQuery handler: our inbound verdict for traffic from
// the tunnel's peer, as its certificate says it is, to us.
func (n *Node) answerFirewallQuery(t *tunnel, body, out []byte) []byte {
	q, st := parseFWQuery(body)
	out = append(out, fwQueryVersion, st)
	if st != fwStatusOK {
		return out
	}
	fw := n.fw.Load()
	local := n.vpnIP
	if q.local.IsValid() {
		local = q.local // the firewall refuses it (local_addr) unless it is ours or behind us
	}
	e := fw.Check(firewall.Query{Proto: q.Proto, Port: q.Port, Remote: t.vpnIP, Local: local}, firewall.Inbound, t.fwPeer)
	idx := uint16(fwNoRule)
	if e.Rule >= 0 && e.Rule < fwNoRule {
		idx = uint16(e.Rule)
	}
	out = append(out, byte(e.Verdict.Action))
	out = binary.BigEndian.AppendUint16(out, idx)
	out = appendStr8(out, e.Verdict.Reason.String())
	out = appendStr8(out, e.RuleText)
	var hints []firewall.RuleRef
	if !e.Verdict.Allowed() {
		hints = fw.PeerRules(firewall.Inbound, t.fwPeer, t.vpnIP, local)
	}
	hints = hints[:min(len(hints), fwHintsMax)]
	out = append(out, byte(len(hints)))
	for _, h := range hints {
		out = appendStr8(out, h.String())
	}
	return out
}

// appendStr8 appends s, cut to fwTextMax bytes on a rune boundary, with its length byte.
func appendStr8(out []byte, s string) []byte {
	if len(s) > fwTextMax {
		cut := fwTextMax - len("...")
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	out = append(out, byte(len(s)))
	return append(out, s...)
}

var errFWAnswer = errors.New("garbled firewall answer")

// parseFWAnswer reads an answer body from the network; it never panics, and refuses
// anything but a well-formed answer whose texts are printable (they reach a terminal).
func parseFWAnswer(b []byte) (FirewallVerdict, error) {
	var v FirewallVerdict
	if len(b) < 2 || b[0] != fwQueryVersion {
		return v, errFWAnswer
	}
	switch b[1] {
	case fwStatusOK:
	case fwStatusBadVersion, fwStatusBadQuery:
		if len(b) != 2 {
			return v, errFWAnswer
		}
		return v, errors.New("the peer could not read the query (a different meshnode version?)")
	default:
		return v, errFWAnswer
	}
	b = b[2:]
	if len(b) < 3 || b[0] > byte(firewall.Reject) {
		return v, errFWAnswer
	}
	action := firewall.Action(b[0])
	v.Action, v.Allowed = action.String(), action == firewall.Accept
	v.Rule = int(binary.BigEndian.Uint16(b[1:]))
	if v.Rule == fwNoRule {
		v.Rule = -1
	}
	b = b[3:]
	var ok bool
	if v.Reason, b, ok = readStr8(b); !ok || v.Reason == "" || len(v.Reason) > 32 {
		return FirewallVerdict{}, errFWAnswer
	}
	if v.RuleText, b, ok = readStr8(b); !ok || (v.Rule >= 0) != (v.RuleText != "") {
		return FirewallVerdict{}, errFWAnswer
	}
	if len(b) < 1 || b[0] > fwHintsMax {
		return FirewallVerdict{}, errFWAnswer
	}
	n := int(b[0])
	b = b[1:]
	for range n {
		var h string
		if h, b, ok = readStr8(b); !ok || h == "" {
			return FirewallVerdict{}, errFWAnswer
		}
		v.RulesForHost = append(v.RulesForHost, h)
	}
	if len(b) != 0 {
		return FirewallVerdict{}, errFWAnswer
	}
	return v, nil
}

func readStr8(b []byte) (string, []byte, bool) {
	if len(b) < 1 || len(b)-1 < int(b[0]) {
		return "", nil, false
	}
	s := string(b[1 : 1+int(b[0])])
	if !utf8.ValidString(s) {
		return "", nil, false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", nil, false
		}
	}
	return s, b[1+int(b[0]):], true
}

// FirewallCheck is what `meshnode check` reports: the tunnel, our outbound verdict and the
// peer's inbound verdict for one kind of traffic to the peer.
type FirewallCheck struct {
	Target netip.Addr `json:"target"`
	// Destination is set when the target is a gateway (tun.unsafe_routes): the address
	// behind it the check is for; the gateway's firewall judges it with that local address.
	Destination netip.Addr `json:"destination,omitzero"`
	Name        string     `json:"name"`
	Groups      []string   `json:"groups"` // the peer's, from its certificate
	Self        string     `json:"self"`
	SelfIP      netip.Addr `json:"self_ip"`
	MyGroups    []string   `json:"my_groups"`
	Traffic     string     `json:"traffic"` // tcp/5432, udp/53, icmp
	Tunnel      struct {
		Path       string         `json:"path"` // direct or relayed
		RelayedVia string         `json:"relayed_via,omitempty"`
		RelayName  string         `json:"relay_name,omitempty"`
		Remote     netip.AddrPort `json:"remote"`
		RTTMS      float64        `json:"rtt_ms"` // -1 when the probe got no answer
	} `json:"tunnel"`
	Outbound FirewallVerdict `json:"outbound"` // this host's outbound rules
	// Inbound is the peer's verdict, when it could be asked; InboundUnknown says why not.
	Inbound        *FirewallVerdict `json:"inbound,omitempty"`
	InboundUnknown string           `json:"inbound_unknown,omitempty"`
	PeerIsNebula   bool             `json:"peer_not_meshnode,omitempty"` // Nebula, or a meshnode without the query
	// Result is allowed, dropped_outbound, dropped_inbound, or unknown (our side allows it
	// and the peer could not be asked).
	Result string `json:"result"`
}

// Check results.
const (
	CheckAllowed         = "allowed"
	CheckDroppedOutbound = "dropped_outbound"
	CheckDroppedInbound  = "dropped_inbound"
	CheckUnknown         = "unknown"
)

// CheckFirewall brings up the tunnel to vpn if needed and reports whether tr would pass:
// the tunnel (path, a probe's round trip), our outbound rules, and the peer's inbound rules
// (asked over the tunnel). The peer not answering the query is not an error: it is reported
// in the result.
func (n *Node) CheckFirewall(ctx context.Context, vpn netip.Addr, tr Traffic) (*FirewallCheck, error) {
	if !tr.valid() {
		return nil, fmt.Errorf("cannot check %s: want tcp/PORT, udp/PORT or icmp", tr)
	}
	var dst netip.Addr
	if !n.vpnNet.Contains(vpn) {
		gw, ok := n.RouteFor(vpn)
		if !ok {
			return nil, fmt.Errorf("%s is outside the overlay network %s and no tun.unsafe_routes entry covers it", vpn, n.vpnNet)
		}
		dst, vpn = vpn, gw
		tr.local = dst
	}
	t, err := n.waitTunnel(ctx, vpn)
	if err != nil {
		return nil, err
	}
	own := n.pki.Load().Creds.Cert.Details
	c := &FirewallCheck{Target: vpn, Destination: dst, Name: t.peer.Details.Name, Groups: nonNil(t.peer.Details.Groups),
		Self: own.Name, SelfIP: n.vpnIP, MyGroups: nonNil(own.Groups), Traffic: tr.String()}
	c.Tunnel.Path, c.Tunnel.Remote = "direct", t.remoteAddr()
	if r := t.relay.Load(); r != nil {
		c.Tunnel.Path, c.Tunnel.RelayedVia = "relayed", r.hop.String()
		if hop := n.hosts.byVPNIP(r.hop); hop != nil {
			c.Tunnel.RelayName = hop.peer.Details.Name
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	rtt, err := n.Ping(pctx, vpn)
	cancel()
	c.Tunnel.RTTMS = -1
	if err == nil {
		c.Tunnel.RTTMS = max(ms(rtt), 0.001)
	}

	fw := n.fw.Load()
	remote := vpn
	if dst.IsValid() {
		remote = dst // our outbound rules see the packet's destination, behind the gateway
	}
	q := firewall.Query{Proto: tr.Proto, Port: tr.Port, Remote: remote, Local: n.vpnIP}
	c.Outbound = verdictOf(fw.Check(q, firewall.Outbound, t.fwPeer))
	if !c.Outbound.Allowed {
		c.Outbound.RulesForHost = refs(fw.PeerRules(firewall.Outbound, t.fwPeer, remote, n.vpnIP), fwHintsMax)
		c.Outbound.RulesForPort = refs(fw.PortRules(firewall.Outbound, q), fwHintsMax)
	}

	qctx, cancel := context.WithTimeout(ctx, fwQueryTimeout)
	body, err := n.extCall(qctx, vpn, extOpFirewallQuery, appendFWQuery(nil, tr))
	cancel()
	switch {
	case errors.Is(err, ErrExtUnsupported):
		c.PeerIsNebula = true
		c.InboundUnknown = "the peer runs Nebula (or an older meshnode): its firewall cannot be asked"
	case err != nil && qctx.Err() != nil:
		c.InboundUnknown = "the peer did not answer the firewall query in time"
	case err != nil:
		c.InboundUnknown = err.Error()
	default:
		v, err := parseFWAnswer(body)
		if err != nil {
			c.InboundUnknown = fmt.Sprintf("the peer's answer could not be read: %v", err)
		} else {
			c.Inbound = &v
		}
	}
	switch {
	case !c.Outbound.Allowed:
		c.Result = CheckDroppedOutbound
	case c.Inbound == nil:
		c.Result = CheckUnknown
	case !c.Inbound.Allowed:
		c.Result = CheckDroppedInbound
	default:
		c.Result = CheckAllowed
	}
	return c, nil
}
