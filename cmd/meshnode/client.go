package main

// The subcommands that talk to a running daemon over its control socket.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meshnode/meshnode/overlay"
)

// call runs one request and turns transport errors into one line telling the user what to do.
func call(path string, req overlay.ControlRequest, stderr io.Writer, each func(overlay.ControlResponse)) bool {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := overlay.ControlClient{Path: path}.Do(ctx, req, each)
	switch {
	case err == nil:
		return true
	case errors.Is(err, overlay.ErrControlUnavailable):
		fmt.Fprintf(stderr, "meshnode: no daemon answers on %s: is meshnode running? start it with: meshnode -config node.yml (or pass -control PATH if it uses another socket)\n", path)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "meshnode: interrupted")
	default:
		fmt.Fprintf(stderr, "meshnode %s: %v\n", req.Cmd, err)
	}
	return false
}

func cmdStatus(path string, asJSON, rtt bool, stdout, stderr io.Writer) int {
	var st *overlay.ControlStatus
	if !call(path, overlay.ControlRequest{Cmd: "status", RTT: rtt}, stderr, func(r overlay.ControlResponse) { st = r.Status }) {
		return 1
	}
	if st == nil {
		fmt.Fprintln(stderr, "meshnode status: the daemon sent no status")
		return 1
	}
	if asJSON {
		writeJSON(stdout, st)
		return 0
	}
	printStatus(stdout, st, time.Now())
	return 0
}

func printStatus(w io.Writer, st *overlay.ControlStatus, now time.Time) {
	role := ""
	if st.Lighthouse {
		role = ", lighthouse"
	}
	fmt.Fprintf(w, "%s %s (network %s%s), groups %s\n", st.Name, st.VpnIP, st.Network, role, groupList(st.Groups))
	fmt.Fprintf(w, "  cert %s, expires %s\n", short(st.Fingerprint), when(st.CertNotAfter, now))
	if !st.Started.IsZero() {
		fmt.Fprintf(w, "  meshnode %s, up %s\n", st.Version, age(now.Sub(st.Started)))
	}
	fmt.Fprintf(w, "  firewall drops: inbound %d, outbound %d\n", st.Drops["firewall_inbound"], st.Drops["firewall_outbound"])
	var other []string
	for r, v := range st.Drops {
		if v > 0 && r != "firewall_inbound" && r != "firewall_outbound" {
			other = append(other, fmt.Sprintf("%s %d", r, v))
		}
	}
	sort.Strings(other)
	if len(other) > 0 {
		fmt.Fprintf(w, "  other drops: %s\n", strings.Join(other, ", "))
	}
	printRoutes(w, st.Routes)
	fmt.Fprintln(w)
	if len(st.Peers) == 0 {
		fmt.Fprintln(w, "no tunnels yet (traffic to a peer, or `meshnode ping HOST`, starts one)")
		return
	}
	withRTT := false
	for _, p := range st.Peers {
		withRTT = withRTT || p.RTTMS != 0
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "NAME\tVPN IP\tGROUPS\tPATH\tREMOTE\tHANDSHAKE\tLAST PACKET\tIN\tOUT\tCERT EXPIRES"
	if withRTT {
		head += "\tRTT"
	}
	fmt.Fprintln(tw, head)
	relayed := false
	for _, p := range st.Peers {
		remote := "-"
		if p.Remote.IsValid() {
			remote = p.Remote.String()
		}
		if p.RelayedVia != "" {
			relayed = true
			p.Path = "relay via " + relayLabel(p)
			remote = "-" // the underlay address in use is the relay's
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", p.Name, p.VpnIP, groupList(p.Groups), p.Path,
			remote, ago(p.Handshake, now), ago(p.LastRecv, now), bytesStr(p.BytesIn), bytesStr(p.BytesOut),
			when(p.CertNotAfter, now))
		switch {
		case !withRTT:
		case p.RTTMS < 0:
			fmt.Fprint(tw, "\tno answer")
		default:
			fmt.Fprintf(tw, "\t%.3f ms", p.RTTMS)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if relayed {
		fmt.Fprintf(w, "\nrelayed tunnels try the direct path every %s and move to it when it opens\n", overlay.RelayProbeInterval)
	}
}

// relayLabel names a tunnel's relay: its certificate name and VPN IP when known.
func relayLabel(p overlay.PeerStatus) string {
	if p.RelayName != "" {
		return p.RelayName + " (" + p.RelayedVia + ")"
	}
	return p.RelayedVia
}

func groupList(g []string) string {
	if len(g) == 0 {
		return "-"
	}
	return strings.Join(g, ",")
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return age(now.Sub(t)) + " ago"
}

func when(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	if d < 0 {
		return "EXPIRED " + age(-d) + " ago"
	}
	return "in " + age(d)
}

// age is a duration rounded for people: 42s, 5m10s, 3h12m, 12d4h.
func age(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Hour:
		return d.Truncate(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Truncate(time.Minute).String(), "0s")
	}
	days := d / (24 * time.Hour)
	return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
}

func bytesStr(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// pingOptions are the flags of meshnode ping.
type pingOptions struct {
	control           string
	count             int
	interval, timeout time.Duration
}

func cmdPing(o pingOptions, pos []string, stdout, stderr io.Writer) int {
	path, count, interval, timeout := &o.control, &o.count, &o.interval, &o.timeout
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "meshnode ping: name one host (its name from its certificate, or its VPN IP)")
		return 2
	}
	if *count < 1 {
		fmt.Fprintln(stderr, "meshnode ping: -c must be at least 1")
		return 2
	}
	target := pos[0]
	fmt.Fprintf(stdout, "PING %s through the overlay tunnel\n", target)
	var sum *overlay.PingSummary
	req := overlay.ControlRequest{Cmd: "ping", Target: target, Count: *count,
		IntervalMS: int(interval.Milliseconds()), TimeoutMS: int(timeout.Milliseconds())}
	ok := call(*path, req, stderr, func(r overlay.ControlResponse) {
		switch {
		case r.Note != "":
			fmt.Fprintln(stdout, r.Note)
		case r.Probe != nil && r.Probe.Error == "":
			fmt.Fprintf(stdout, "reply from %s: seq=%d time=%.3f ms\n", target, r.Probe.Seq, r.Probe.RTTMS)
		case r.Probe != nil:
			fmt.Fprintf(stdout, "no reply: seq=%d (%s)\n", r.Probe.Seq, r.Probe.Error)
		case r.Ping != nil:
			sum = r.Ping
		}
	})
	if !ok || sum == nil {
		return 1
	}
	name := sum.Target.String()
	if sum.Name != "" {
		name = fmt.Sprintf("%s (%s)", sum.Name, sum.Target)
	}
	loss := 100 * (sum.Sent - sum.Received) / sum.Sent
	fmt.Fprintf(stdout, "--- %s ping statistics ---\n", name)
	fmt.Fprintf(stdout, "%d probes sent, %d replies, %d%% loss", sum.Sent, sum.Received, loss)
	if sum.Received > 0 {
		fmt.Fprintf(stdout, ", rtt min/avg/max = %.3f/%.3f/%.3f ms", sum.MinMS, sum.AvgMS, sum.MaxMS)
	}
	fmt.Fprintln(stdout)
	if sum.Received == 0 {
		fmt.Fprintf(stdout, "the tunnel to %s is not working: check `meshnode status` on both hosts, static_host_map or lighthouses, and that UDP reaches the peer's listen port\n", target)
		return 1
	}
	fmt.Fprintf(stdout, "note: this proves the tunnel (both daemons answer), not the firewalls: the peer's firewall may still drop the traffic you want to send. "+
		"Here, this host's firewall dropped %d inbound and %d outbound packets so far (meshnode status shows them; the peer's status shows its own). "+
		"meshnode check %s tcp/PORT asks both firewalls about your traffic.\n",
		sum.FirewallInbound, sum.FirewallOutbound, target)
	return 0
}

func cmdList(path string, tree, asJSON bool, stdout, stderr io.Writer) int {
	var hosts []overlay.KnownHost
	if !call(path, overlay.ControlRequest{Cmd: "list"}, stderr, func(r overlay.ControlResponse) { hosts = r.Hosts }) {
		return 1
	}
	switch {
	case asJSON:
		writeJSON(stdout, hosts)
	case tree:
		printTree(stdout, hosts)
	default:
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NETWORK\tVPN IP\tNAME\tKNOWN FROM\tUNDERLAY")
		for _, h := range hosts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Network, h.VpnIP, nameOf(h), strings.Join(h.Sources, ","), addrs(h.Remotes))
		}
		tw.Flush()
	}
	return 0
}

// printTree groups hosts by network (the list arrives sorted by network, then address).
func printTree(w io.Writer, hosts []overlay.KnownHost) {
	for i := 0; i < len(hosts); {
		net := hosts[i].Network
		j := i
		for j < len(hosts) && hosts[j].Network == net {
			j++
		}
		fmt.Fprintf(w, "%s (%d hosts)\n", net, j-i)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for k := i; k < j; k++ {
			h := hosts[k]
			branch := "├── "
			if k == j-1 {
				branch = "└── "
			}
			fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", branch, h.VpnIP, nameOf(h), strings.Join(h.Sources, ","), addrs(h.Remotes))
		}
		tw.Flush()
		i = j
	}
}

func nameOf(h overlay.KnownHost) string {
	if h.Name == "" {
		return "?"
	}
	return h.Name
}

func addrs(a []netip.AddrPort) string {
	if len(a) == 0 {
		return "-"
	}
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return strings.Join(s, " ")
}

func cmdReload(path string, stdout, stderr io.Writer) int {
	var res *overlay.ReloadResult
	if !call(path, overlay.ControlRequest{Cmd: "reload"}, stderr, func(r overlay.ControlResponse) { res = r.Reload }) {
		return 1
	}
	fmt.Fprintln(stdout, "reloaded:")
	if res != nil {
		for _, c := range res.Changes {
			fmt.Fprintf(stdout, "  %s\n", c)
		}
	}
	return 0
}

// writeJSON prints v as one indented JSON document (the -json output of the subcommands).
func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// printRoutes lists tun.unsafe_routes (gateways, and which carry traffic now) and tun.routes.
func printRoutes(w io.Writer, routes []overlay.RouteStatus) {
	for _, r := range routes {
		var opts []string
		if r.MTU > 0 {
			opts = append(opts, fmt.Sprintf("mtu %d", r.MTU))
		}
		if r.Metric > 0 {
			opts = append(opts, fmt.Sprintf("metric %d", r.Metric))
		}
		if !r.Install {
			opts = append(opts, "not installed")
		}
		extra := ""
		if len(opts) > 0 {
			extra = " (" + strings.Join(opts, ", ") + ")"
		}
		if !r.Unsafe {
			fmt.Fprintf(w, "  route %s%s\n", r.Route, extra)
			continue
		}
		var gws []string
		for _, g := range r.Gateways {
			state := "no tunnel"
			switch {
			case g.CarriesRoute != nil && !*g.CarriesRoute:
				state = "CERT LACKS THIS ROUTE: traffic dropped"
			case g.Tunnel:
				state = "up"
			}
			wt := ""
			if len(r.Gateways) > 1 {
				wt = fmt.Sprintf(" weight %d", g.Weight)
			}
			gws = append(gws, fmt.Sprintf("%s%s %s", g.Gateway, wt, state))
		}
		active := r.Active
		if active == "" {
			active = "none yet"
		}
		fmt.Fprintf(w, "  route %s via %s%s; using %s\n", r.Route, strings.Join(gws, ", "), extra, active)
	}
}
