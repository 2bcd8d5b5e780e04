package overlay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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
	handshakes *prometheus.CounterVec
	tunnelsUp  prometheus.GaugeFunc
	traffic    *trafficCollector
	drops      *prometheus.CounterVec
	fwDrops    *prometheus.CounterVec

	// Pre-resolved children keep label lookups off the hot path.
	drop map[string]prometheus.Counter
	// fwDrop[direction][reason] are the firewall's verdict reasons, pre-resolved.
	fwDrop [2][]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, hosts *hostMap) *metrics {
	m := &metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshnode_handshakes_total", Help: "Handshakes by role and outcome.",
		}, []string{"role", "outcome"}),
		tunnelsUp: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshnode_tunnels", Help: "Established tunnels.",
		}, func() float64 { return float64(hosts.count.Load()) }),
		traffic: &trafficCollector{hosts: hosts,
			packets: prometheus.NewDesc("meshnode_packets_total", "Tunneled IP packets by direction (in = from peers).", []string{"direction"}, nil),
			bytes:   prometheus.NewDesc("meshnode_bytes_total", "Tunneled IP bytes (inner packets) by direction.", []string{"direction"}, nil),
		},
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshnode_drops_total", Help: "Dropped packets by reason.",
		}, []string{"reason"}),
		fwDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshnode_firewall_drops_total", Help: "Packets the firewall dropped or rejected, by direction and reason.",
		}, []string{"direction", "reason"}),
		drop: map[string]prometheus.Counter{},
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

// priorityCollector reports the priority lane's counters (tun.priority_queue).
type priorityCollector struct {
	n    *Node
	desc *prometheus.Desc
}

func (c *priorityCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *priorityCollector) Collect(ch chan<- prometheus.Metric) {
	out, in := c.n.PriorityPackets()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(out), "out")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(in), "in")
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
func (n *Node) certTTL() prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
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
	hosts          *hostMap
	packets, bytes *prometheus.Desc
}

func (c *trafficCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
}

func (c *trafficCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.hosts.traffic()
	ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(t.packetsIn), "in")
	ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(t.packetsOut), "out")
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(t.bytesIn), "in")
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(t.bytesOut), "out")
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
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return 0
	}
	return uint64(d.GetCounter().GetValue())
}

// DropReasons lists the reasons Dropped understands.
func DropReasons() []string { return append([]string(nil), allDropReasons...) }
