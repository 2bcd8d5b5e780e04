package overlay

import (
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/firewall"
)

// Drop reasons, used as the `reason` label of meshnode_drops_total. Tests read them through
// Node.Drops, so each bad-input case proves it was counted under the right name.
const (
	dropShort            = "short_datagram"
	dropBadHeader        = "bad_header"
	dropUnknownIndex     = "unknown_index"
	dropReplay           = "replay"
	dropDecrypt          = "decrypt_failed"
	dropSpoofedSource    = "inner_source_not_in_cert"
	dropNotForUs         = "inner_destination_not_ours"
	dropNotIP            = "not_ip"
	dropBadInner         = "bad_inner_packet"
	dropFirewallIn       = "firewall_inbound"
	dropFirewallOut      = "firewall_outbound"
	dropNoRoute          = "no_route"
	dropQueueFull        = "handshake_queue_full"
	dropUnsupported      = "unsupported_message"
	dropRateLimited      = "handshake_rate_limited"
	dropHandshake        = "handshake_invalid"
	dropHandshakeOld     = "handshake_too_old"
	dropHandshakeRace    = "handshake_race"
	dropPendingFull      = "handshake_pending_full"
	dropTooBig           = "too_big"
	dropTunWrite         = "tun_write_failed"
	dropUDPWrite         = "udp_write_failed"
	dropUnauthClose      = "unauthenticated_close"
	dropSelf             = "handshake_with_self"
	dropRecvErrorIgnor   = "recv_error_ignored"
	dropLighthouseBad    = "lighthouse_invalid"
	dropLighthouseRole   = "lighthouse_wrong_role"
	dropLighthouseRate   = "lighthouse_rate_limited"
	dropRelay            = "relay_invalid"
	dropClockSkew        = "handshake_clock_skew"
	dropCandidateEvicted = "handshake_unconfirmed_evicted"
	dropRelayLimit       = "relay_limit"                  // a relay request beyond the table's bounds
	dropRecvErrorRate    = "recv_error_rate_limited"      // a recv_error we did not send (not a datagram)
	dropBacklogFull      = "handshake_backlog_full"       // msg 1 from a stranger, its queue full
	dropBacklogFullKnown = "handshake_backlog_full_known" // msg 1 from an expected source, its queue full
	dropCertVersion      = "handshake_cert_version"       // msg 1 from a peer that cannot read any certificate we hold
)

var allDropReasons = []string{
	dropShort, dropBadHeader, dropUnknownIndex, dropReplay, dropDecrypt, dropSpoofedSource,
	dropNotForUs, dropNotIP, dropBadInner, dropFirewallIn, dropFirewallOut, dropNoRoute,
	dropQueueFull, dropUnsupported, dropRateLimited, dropHandshake, dropHandshakeOld,
	dropHandshakeRace, dropPendingFull, dropTooBig, dropTunWrite, dropUDPWrite, dropUnauthClose,
	dropSelf, dropRecvErrorIgnor, dropLighthouseBad, dropLighthouseRole, dropLighthouseRate,
	dropRelay, dropClockSkew, dropCandidateEvicted, dropRelayLimit, dropRecvErrorRate,
	dropBacklogFull, dropBacklogFullKnown, dropCertVersion,
}

// metrics are registered on the Registerer the node was given (never the global one).
type metrics struct {
	handshakes *prom.CounterVec
	tunnelsUp  *prom.Func
	traffic    *trafficCollector
	drops      *prom.CounterVec
	fwDrops    *prom.CounterVec

	// Pre-resolved children keep label lookups off the hot path.
	drop map[string]*prom.Counter
	// fwDrop[direction][reason] are the firewall's verdict reasons, pre-resolved.
	fwDrop [2][]*prom.Counter
}

func newMetrics(reg prom.Registerer, hosts *hostMap) *metrics {
	m := &metrics{
		handshakes: prom.NewCounterVec(prom.CounterOpts{
			Name: "meshnode_handshakes_total", Help: "Handshakes by role and outcome.",
		}, []string{"role", "outcome"}),
		tunnelsUp: prom.NewGaugeFunc(prom.GaugeOpts{
			Name: "meshnode_tunnels", Help: "Established tunnels.",
		}, func() float64 { return float64(hosts.count.Load()) }),
		traffic: &trafficCollector{hosts: hosts},
		drops: prom.NewCounterVec(prom.CounterOpts{
			Name: "meshnode_drops_total", Help: "Dropped packets by reason.",
		}, []string{"reason"}),
		fwDrops: prom.NewCounterVec(prom.CounterOpts{
			Name: "meshnode_firewall_drops_total", Help: "Packets the firewall dropped or rejected, by direction and reason.",
		}, []string{"direction", "reason"}),
		drop: map[string]*prom.Counter{},
	}
	for d, dir := range []string{"inbound", "outbound"} {
		for _, r := range firewall.Reasons() {
			m.fwDrop[d] = append(m.fwDrop[d], m.fwDrops.WithLabelValues(dir, r.String()))
		}
	}
	for _, r := range allDropReasons {
		m.drop[r] = m.drops.WithLabelValues(r)
	}
	for _, role := range []string{"initiator", "responder"} {
		for _, o := range []string{"ok", "invalid", "timeout", "ignored", "no_common_version", "fallback_v1"} {
			m.handshakes.WithLabelValues(role, o)
		}
	}
	if reg != nil {
		reg.MustRegister(m.handshakes, m.tunnelsUp, m.traffic, m.drops, m.fwDrops)
	}
	return m
}

// priorityMetric reports the priority lane's counters (tun.priority_queue).
func (n *Node) priorityMetric() prom.Collector {
	const name, help = "meshnode_priority_packets_total",
		"Small packets the priority lane (tun.priority_queue) moved, by direction (out = read from the device)."
	return prom.CollectorFunc(func(w *prom.Writer) {
		out, in := n.PriorityPackets()
		w.Sample(name, help, "counter", float64(out), "direction", "out")
		w.Sample(name, help, "counter", float64(in), "direction", "in")
	})
}

// PriorityPackets is how many small packets the priority lane read from the device (out)
// and datagrams it read from its socket (in).
func (n *Node) PriorityPackets() (out, in uint64) {
	return n.prioOut.Load(), n.prioIn.Load()
}

// certTTL is Nebula's certificate_ttl_seconds (meshnode_ prefixed as every metric here):
// whole seconds until the certificate the node uses expires, negative once it has. It is
// read at scrape time, so a renewal or reload shows at once; operators alert on it to catch
// a host whose renewal is failing before its tunnels do.
func (n *Node) certTTL() *prom.Func {
	return prom.NewGaugeFunc(prom.GaugeOpts{
		Name: "meshnode_certificate_ttl_seconds",
		Help: "Seconds until this host's certificate expires (negative once expired).",
	}, func() float64 {
		left := n.pki.Load().Creds.Cert.Details.NotAfter.Sub(n.now())
		return float64(left / time.Second) // truncated to whole seconds, as Nebula's gauge
	})
}

// trafficCollector reports packets and bytes from the tunnels' own counters, summed at
// scrape time: the data path then updates two per-tunnel atomics per packet instead of
// those and two shared Prometheus counters as well.
type trafficCollector struct {
	hosts *hostMap
}

func (c *trafficCollector) Collect(w *prom.Writer) {
	const (
		packets = "meshnode_packets_total"
		pHelp   = "Tunneled IP packets by direction (in = from peers)."
		bytes   = "meshnode_bytes_total"
		bHelp   = "Tunneled IP bytes (inner packets) by direction."
	)
	t := c.hosts.traffic()
	w.Sample(packets, pHelp, "counter", float64(t.packetsIn), "direction", "in")
	w.Sample(packets, pHelp, "counter", float64(t.packetsOut), "direction", "out")
	w.Sample(bytes, bHelp, "counter", float64(t.bytesIn), "direction", "in")
	w.Sample(bytes, bHelp, "counter", float64(t.bytesOut), "direction", "out")
}

// firewallDropped counts a firewall verdict that was not Accept.
func (m *metrics) firewallDropped(dir firewall.Direction, v firewall.Verdict) {
	d := 0
	if dir == firewall.Outbound {
		d = 1
		m.dropped(dropFirewallOut)
	} else {
		m.dropped(dropFirewallIn)
	}
	if i := int(v.Reason); i < len(m.fwDrop[d]) {
		m.fwDrop[d][i].Inc()
	}
}

func (m *metrics) dropped(reason string) {
	if c, ok := m.drop[reason]; ok {
		c.Inc()
		return
	}
	m.drops.WithLabelValues(reason).Inc()
}

// Dropped is how many packets were dropped for reason (a label of meshnode_drops_total).
func (n *Node) Dropped(reason string) uint64 {
	c, ok := n.m.drop[reason]
	if !ok {
		return 0
	}
	return uint64(c.Value())
}

// DropReasons lists the reasons Dropped understands.
func DropReasons() []string { return append([]string(nil), allDropReasons...) }
