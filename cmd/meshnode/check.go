package main

// meshnode check: can this kind of traffic reach a peer? The tunnel, our outbound rules and
// the peer's inbound rules (asked over the tunnel), with what to change when something drops it.

import (
	"fmt"
	"io"
	"strings"

	"github.com/meshnode/meshnode/overlay"
)

// Exit codes of check beyond 0 (the traffic passes both firewalls) and 2 (usage).
const (
	exitDropped = 1 // a firewall drops the traffic, or there is no tunnel
	exitUnknown = 3 // our side lets it out; the peer's firewall could not be asked
)

func cmdCheck(path string, asJSON bool, pos []string, stdout, stderr io.Writer) int {
	if len(pos) != 2 {
		fmt.Fprintln(stderr, "meshnode check: name a host and the traffic, e.g. meshnode check db1 tcp/5432")
		return 2
	}
	if _, err := overlay.ParseTraffic(pos[1]); err != nil {
		fmt.Fprintf(stderr, "meshnode check: %v\n", err)
		return 2
	}
	var c *overlay.FirewallCheck
	notes := stdout
	if asJSON {
		notes = stderr // stdout stays one JSON document
	}
	if !call(path, overlay.ControlRequest{Cmd: "check", Target: pos[0], Traffic: pos[1]}, stderr, func(r overlay.ControlResponse) {
		if r.Note != "" {
			fmt.Fprintln(notes, r.Note)
		}
		if r.Check != nil {
			c = r.Check
		}
	}) {
		return exitDropped
	}
	if c == nil {
		fmt.Fprintln(stderr, "meshnode check: the daemon sent no result")
		return 1
	}
	if asJSON {
		writeJSON(stdout, c)
	} else {
		printCheck(stdout, c)
	}
	switch c.Result {
	case overlay.CheckAllowed:
		return 0
	case overlay.CheckUnknown:
		return exitUnknown
	}
	return exitDropped
}

func printCheck(w io.Writer, c *overlay.FirewallCheck) {
	peer := fmt.Sprintf("%s (%s)", c.Name, c.Target)
	if c.Destination.IsValid() {
		peer = fmt.Sprintf("%s behind %s (%s)", c.Destination, c.Name, c.Target)
	}
	if c.Destination.IsValid() {
		fmt.Fprintf(w, "%s from %s (%s, groups %s) to %s behind gateway %s (%s, groups %s)\n", c.Traffic, c.Self, c.SelfIP, bracketed(c.MyGroups), c.Destination, c.Name, c.Target, bracketed(c.Groups))
	} else {
		fmt.Fprintf(w, "%s from %s (%s, groups %s) to %s (%s, groups %s)\n", c.Traffic, c.Self, c.SelfIP, bracketed(c.MyGroups), c.Name, c.Target, bracketed(c.Groups))
	}

	path := "direct to " + c.Tunnel.Remote.String()
	if c.Tunnel.Path == "relayed" {
		path = "relay via " + relayLabel(overlay.PeerStatus{RelayedVia: c.Tunnel.RelayedVia, RelayName: c.Tunnel.RelayName})
	}
	rtt := "no answer to a probe"
	if c.Tunnel.RTTMS >= 0 {
		rtt = fmt.Sprintf("round trip %.3f ms", c.Tunnel.RTTMS)
	}
	fmt.Fprintf(w, "  tunnel    up, %s, %s\n", path, rtt)

	if c.Outbound.Allowed {
		fmt.Fprintf(w, "  outbound  this host lets it out: outbound[%d] %s\n", c.Outbound.Rule, c.Outbound.RuleText)
	} else {
		fmt.Fprintf(w, "  outbound  this host %s it: %s\n", verb(c.Outbound), why(c.Outbound, "outbound", fmt.Sprintf("%s (groups %s)", c.Name, bracketed(c.Groups))))
		hints(w, "rules for "+c.Traffic, c.Outbound.RulesForPort)
		hints(w, "rules that match "+c.Name, c.Outbound.RulesForHost)
	}

	switch in := c.Inbound; {
	case in == nil:
		fmt.Fprintf(w, "  inbound   unknown: %s\n", c.InboundUnknown)
	case in.Allowed:
		fmt.Fprintf(w, "  inbound   %s lets it in: inbound[%d] %s\n", c.Name, in.Rule, in.RuleText)
	default:
		fmt.Fprintf(w, "  inbound   %s %s it from you: %s\n", c.Name, verb(*in), why(*in, "inbound", "your groups "+bracketed(c.MyGroups)))
		hints(w, c.Name+"'s rules that let you in", in.RulesForHost)
	}

	suggest := suggestion(c)
	switch c.Result {
	case overlay.CheckAllowed:
		fmt.Fprintf(w, "result: ALLOWED: both firewalls let %s from %s to %s through (a refused connection now means nothing listens there)\n", c.Traffic, c.Self, peer)
	case overlay.CheckDroppedOutbound:
		fmt.Fprintf(w, "result: DROPPED by this host's outbound firewall: %s to %s never leaves this host\n", c.Traffic, peer)
		fmt.Fprintf(w, "  to allow it: add %s to firewall.outbound here, then run meshnode reload\n", suggest(c.Name, c.Groups))
		if c.Inbound != nil && !c.Inbound.Allowed {
			fmt.Fprintf(w, "  and on %s: add %s to its firewall.inbound, then run meshnode reload there\n", c.Name, suggest(c.Self, c.MyGroups))
		}
	case overlay.CheckDroppedInbound:
		fmt.Fprintf(w, "result: DROPPED by %s's inbound firewall: %s %s %s from you: %s\n", c.Name, peer, verb(*c.Inbound), c.Traffic, why(*c.Inbound, "inbound", "your groups "+bracketed(c.MyGroups)))
		fmt.Fprintf(w, "  to allow it: on %s, add %s to firewall.inbound, then run meshnode reload there\n", c.Name, suggest(c.Self, c.MyGroups))
	default:
		fmt.Fprintf(w, "result: UNKNOWN: this host lets %s out to %s, but %s\n", c.Traffic, peer, c.InboundUnknown)
		fmt.Fprintf(w, "  look in %s's config for a firewall.inbound rule admitting %s from %s or your groups %s (its meshnode status or nebula logs count drops)\n",
			c.Name, c.Traffic, c.Self, bracketed(c.MyGroups))
	}
}

func verb(v overlay.FirewallVerdict) string {
	if v.Action == "reject" {
		return "rejects"
	}
	return "drops"
}

// why turns a refusal's reason into words; who is what the rules were matched against.
func why(v overlay.FirewallVerdict, dir, who string) string {
	switch v.Reason {
	case "no_rule":
		def := "default drop"
		if v.Action == "reject" {
			def = dir + "_action: reject"
		}
		return fmt.Sprintf("no %s rule matches %s (%s)", dir, who, def)
	case "remote_addr":
		return "the address is not one the peer's certificate holds"
	case "local_addr":
		return "the address is not one of this host's certificate"
	}
	return "reason " + v.Reason
}

func hints(w io.Writer, what string, rules []string) {
	if rules == nil {
		fmt.Fprintf(w, "            %s: none\n", what)
		return
	}
	fmt.Fprintf(w, "            %s: %s\n", what, strings.Join(rules, "; "))
}

// suggestion returns a rule admitting the checked traffic from or to a host, by its first
// group (or its name when it has none).
func suggestion(c *overlay.FirewallCheck) func(name string, groups []string) string {
	proto, port, _ := strings.Cut(c.Traffic, "/")
	if port == "" {
		port = "any"
	}
	return func(name string, groups []string) string {
		if len(groups) > 0 {
			return fmt.Sprintf("{port: %s, proto: %s, group: %s}", port, proto, groups[0])
		}
		return fmt.Sprintf("{port: %s, proto: %s, host: %s}", port, proto, name)
	}
}

// bracketed lists groups as "[web, ssh]" ("[]" for none).
func bracketed(g []string) string { return "[" + strings.Join(g, ", ") + "]" }
