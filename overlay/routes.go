package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshnode/meshnode/overlay/tun"
)

// UnsafeRoute is one entry of tun.unsafe_routes: a network outside the overlay reached
// through a host of the overlay (its gateway) whose certificate carries that network.
type UnsafeRoute struct {
	Route   string `yaml:"route"`
	Via     Via    `yaml:"via"`
	MTU     int    `yaml:"mtu"`
	Metric  int    `yaml:"metric"`
	Install *bool  `yaml:"install"` // put the route into the kernel's table; default true
}

// Via is the gateway of an unsafe route: one overlay IP (`via: 10.42.0.1`, Nebula 1.6's form)
// or a list of `{gateway, weight}` (Nebula 1.10), among which flows are spread by weight.
type Via []Gateway

// Gateway is one gateway of an unsafe route.
type Gateway struct {
	Gateway string `yaml:"gateway"`
	Weight  int    `yaml:"weight"` // default 1
}

// UnmarshalYAML reads both forms of via and refuses unknown keys in a gateway.
func (v *Via) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*v = Via{{Gateway: n.Value, Weight: 1}}
		return nil
	case yaml.SequenceNode:
		out := make(Via, 0, len(n.Content))
		for _, e := range n.Content {
			if e.Kind != yaml.MappingNode {
				return fmt.Errorf("line %d: via: each gateway must be a mapping {gateway: IP, weight: N}", e.Line)
			}
			g := Gateway{Weight: 1}
			for i := 0; i+1 < len(e.Content); i += 2 {
				k, val := e.Content[i], e.Content[i+1]
				switch k.Value {
				case "gateway":
					g.Gateway = val.Value
				case "weight":
					w, err := strconv.Atoi(val.Value)
					if err != nil {
						return fmt.Errorf("line %d: via: weight %q is not a number", val.Line, val.Value)
					}
					g.Weight = w
				default:
					return fmt.Errorf("line %d: via: unknown key %q (want gateway, weight)", k.Line, k.Value)
				}
			}
			out = append(out, g)
		}
		*v = out
		return nil
	}
	return fmt.Errorf("line %d: via must be an overlay IP or a list of {gateway, weight}", n.Line)
}

// TunRoute is one entry of tun.routes: a part of the overlay network with its own MTU.
type TunRoute struct {
	Route   string `yaml:"route"`
	MTU     int    `yaml:"mtu"`
	Install *bool  `yaml:"install"`
}

// routeGateway is one parsed gateway with the upper bound of its share of the hash space.
type routeGateway struct {
	addr   netip.Addr
	weight int
	bound  uint64 // flows hashing below this (and above the previous bound) take this gateway
}

// route is one parsed entry of tun.routes or tun.unsafe_routes.
type route struct {
	dst      netip.Prefix
	gateways []routeGateway // empty for tun.routes
	mtu      int
	metric   int
	install  bool
}

func (r route) kernel() tun.Route { return tun.Route{Dst: r.dst, MTU: r.mtu, Metric: r.metric} }

// routeTable is what the send path looks unsafe routes up in: longest prefix first.
type routeTable struct {
	unsafe []route
	tunnel []route // tun.routes, only for the kernel
}

// lookup returns the unsafe route covering dst, longest prefix first.
func (rt *routeTable) lookup(dst netip.Addr) *route {
	for i := range rt.unsafe {
		if rt.unsafe[i].dst.Contains(dst) {
			return &rt.unsafe[i]
		}
	}
	return nil
}

// parseRoutes checks tun.routes and tun.unsafe_routes against our network and builds the
// table; errors name the entry.
func parseRoutes(c *TunConfig, vpnNet netip.Prefix, vpnIP netip.Addr) (*routeTable, error) {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	rt := &routeTable{}
	mtu := func(key string, m int) int {
		if m == 0 {
			return 0
		}
		if m < 500 || m > 9000 {
			bad(key, "%d is out of range 500-9000", m)
		}
		// Nebula raises the device's MTU to the largest route MTU; meshnode's device keeps
		// tun.mtu, so a larger route MTU is used as tun.mtu (documented in CONFIG.md).
		return min(m, c.MTU)
	}
	for i, r := range c.Routes {
		key := fmt.Sprintf("tun.routes[%d]", i)
		p, err := netip.ParsePrefix(r.Route)
		if err != nil || !p.Addr().Is4() {
			bad(key+".route", "%q is not an IPv4 CIDR", r.Route)
			continue
		}
		p = p.Masked()
		if vpnNet.IsValid() && (!vpnNet.Contains(p.Addr()) || p.Bits() < vpnNet.Bits()) {
			bad(key+".route", "%s is not inside this host's network %s: tun.routes only sets the MTU of a part of the overlay; "+
				"a network behind a gateway goes in tun.unsafe_routes, with via", p, vpnNet)
			continue
		}
		if p == vpnNet {
			bad(key+".route", "%s is this host's whole network; set tun.mtu instead", p)
			continue
		}
		if r.MTU == 0 {
			bad(key+".mtu", "required (a tun.routes entry only sets an MTU)")
		}
		rt.tunnel = append(rt.tunnel, route{dst: p, mtu: mtu(key+".mtu", r.MTU), install: r.Install == nil || *r.Install})
	}
	for i, r := range c.UnsafeRoutes {
		key := fmt.Sprintf("tun.unsafe_routes[%d]", i)
		p, err := netip.ParsePrefix(r.Route)
		if err != nil || !p.Addr().Is4() {
			bad(key+".route", "%q is not an IPv4 CIDR", r.Route)
			continue
		}
		p = p.Masked()
		if vpnNet.IsValid() && p.Overlaps(vpnNet) {
			bad(key+".route", "%s overlaps this host's overlay network %s", p, vpnNet)
			continue
		}
		if len(r.Via) == 0 {
			bad(key+".via", "required (the overlay IP of the gateway, or a list of {gateway, weight})")
			continue
		}
		if r.Metric < 0 {
			bad(key+".metric", "%d is negative", r.Metric)
		}
		rr := route{dst: p, mtu: mtu(key+".mtu", r.MTU), metric: r.Metric, install: r.Install == nil || *r.Install}
		total := 0
		for j, g := range r.Via {
			gkey := key + ".via"
			if len(r.Via) > 1 {
				gkey = fmt.Sprintf("%s[%d]", gkey, j)
			}
			a, err := netip.ParseAddr(g.Gateway)
			switch {
			case err != nil:
				bad(gkey, "gateway %q is not an IP address", g.Gateway)
				continue
			case vpnNet.IsValid() && !vpnNet.Contains(a):
				bad(gkey, "gateway %s is not inside this host's network %s", a, vpnNet)
				continue
			case a == vpnIP:
				bad(gkey, "gateway %s is this host", a)
				continue
			case g.Weight < 1 || g.Weight > 1<<16:
				bad(gkey, "weight %d is out of range 1-65536", g.Weight)
				continue
			case slices.ContainsFunc(rr.gateways, func(o routeGateway) bool { return o.addr == a }):
				bad(gkey, "gateway %s is listed twice", a)
				continue
			}
			rr.gateways = append(rr.gateways, routeGateway{addr: a, weight: g.Weight})
			total += g.Weight
		}
		// Hash-threshold (RFC 2992): each gateway owns a slice of the hash space in
		// proportion to its weight, so a flow keeps its gateway while the set is stable.
		acc := 0
		for j := range rr.gateways {
			acc += rr.gateways[j].weight
			rr.gateways[j].bound = uint64(float64(^uint64(0)) * (float64(acc) / float64(total)))
		}
		if n := len(rr.gateways); n > 0 {
			rr.gateways[n-1].bound = ^uint64(0)
		}
		for _, o := range rt.unsafe {
			if o.dst == p {
				bad(key+".route", "%s is listed twice", p)
			}
		}
		rt.unsafe = append(rt.unsafe, rr)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortStableFunc(rt.unsafe, func(a, b route) int { return b.dst.Bits() - a.dst.Bits() })
	return rt, nil
}

// flowSeed keys the flow hash; a flow's gateway only has to be stable within one process.
var flowSeed = maphash.MakeSeed()

// flowHash hashes an IPv4 packet's addresses, protocol and (for TCP and UDP) ports.
func flowHash(pkt []byte) uint64 {
	var k [13]byte
	copy(k[:8], pkt[12:20])
	k[8] = pkt[9]
	if ihl := int(pkt[0]&0x0f) * 4; (pkt[9] == 6 || pkt[9] == 17) && len(pkt) >= ihl+4 &&
		binary.BigEndian.Uint16(pkt[6:8])&0x1fff == 0 {
		copy(k[9:13], pkt[ihl:ihl+4])
	}
	return maphash.Bytes(flowSeed, k[:])
}

// gatewayTunnel picks the tunnel an unsafe-routed packet leaves through: the gateway its
// flow hashes to when that gateway has a tunnel, else any gateway that has one, in order.
// Gateways without a tunnel are asked for one (at most once a second each), so a gateway
// that comes back takes its flows back. With no tunnel at all pkt waits for the gateway it
// hashes to.
func (n *Node) gatewayTunnel(r *route, pkt []byte, now int64) *tunnel {
	pick := 0
	if len(r.gateways) > 1 {
		h := flowHash(pkt)
		for pick < len(r.gateways)-1 && h > r.gateways[pick].bound {
			pick++
		}
	}
	if t := n.hosts.byVPNIP(r.gateways[pick].addr); t != nil {
		return t
	}
	n.askGateway(r.gateways[pick].addr, now, nil)
	for i, g := range r.gateways {
		if i == pick {
			continue
		}
		if t := n.hosts.byVPNIP(g.addr); t != nil {
			return t
		}
	}
	for i, g := range r.gateways {
		if i != pick {
			n.askGateway(g.addr, now, nil)
		}
	}
	n.hs.trigger(r.gateways[pick].addr, pkt)
	return nil
}

// askGateway starts a handshake to a gateway at most once a second: the send path calls it
// per packet while another gateway carries the traffic.
func (n *Node) askGateway(gw netip.Addr, now int64, pkt []byte) {
	v, _ := n.gwAsked.LoadOrStore(gw, new(atomic.Int64))
	last := v.(*atomic.Int64)
	if l := last.Load(); now-l < int64(time.Second) && l != 0 {
		return
	}
	last.Store(now)
	n.hs.trigger(gw, pkt)
}

// RouteInfo describes one route for status output.
type RouteInfo struct {
	Route    netip.Prefix
	Gateways []GatewayInfo `json:",omitempty"`
	MTU      int           `json:",omitempty"`
	Metric   int           `json:",omitempty"`
	Install  bool
	Unsafe   bool
}

// GatewayInfo is one gateway of a route: whether we have a tunnel to it, and whether its
// certificate carries the route (without that it drops what we would send).
type GatewayInfo struct {
	Gateway  netip.Addr
	Weight   int
	Tunnel   bool
	Carries  bool
	Verified bool // Carries is known (a tunnel exists)
}

// Routes lists tun.unsafe_routes and tun.routes as the node applies them.
func (n *Node) Routes() []RouteInfo {
	rt := n.routes.Load()
	var out []RouteInfo
	for _, r := range rt.unsafe {
		ri := RouteInfo{Route: r.dst, MTU: r.mtu, Metric: r.metric, Install: r.install, Unsafe: true}
		for _, g := range r.gateways {
			gi := GatewayInfo{Gateway: g.addr, Weight: g.weight}
			if t := n.hosts.byVPNIP(g.addr); t != nil {
				gi.Tunnel, gi.Verified = true, true
				gi.Carries = slices.ContainsFunc(t.allowedSubnets, func(s netip.Prefix) bool {
					return s.Bits() <= r.dst.Bits() && s.Contains(r.dst.Addr())
				})
			}
			ri.Gateways = append(ri.Gateways, gi)
		}
		out = append(out, ri)
	}
	for _, r := range rt.tunnel {
		out = append(out, RouteInfo{Route: r.dst, MTU: r.mtu, Install: r.install})
	}
	return out
}

// RouteFor says which gateway an unsafe-routed destination goes to now (for meshnode
// check): ok is false when no unsafe route covers dst.
func (n *Node) RouteFor(dst netip.Addr) (gw netip.Addr, ok bool) {
	r := n.routes.Load().lookup(dst)
	if r == nil {
		return netip.Addr{}, false
	}
	for _, g := range r.gateways {
		if n.hosts.byVPNIP(g.addr) != nil {
			return g.addr, true
		}
	}
	return r.gateways[0].addr, true
}

// installRoutes puts the routes that want it into the kernel through the device.
func (n *Node) installRoutes(rt *routeTable) error {
	dev, ok := n.dev.(tun.Router)
	if !ok {
		return nil // tuntest devices and tun.disabled: the table alone routes
	}
	var added []tun.Route
	for _, r := range slices.Concat(rt.tunnel, rt.unsafe) {
		if !r.install {
			continue
		}
		if err := dev.AddRoute(r.kernel()); err != nil {
			for _, a := range added {
				_ = dev.DeleteRoute(a)
			}
			return err
		}
		added = append(added, r.kernel())
	}
	return nil
}

// SetRoutes applies reloaded tun.routes and tun.unsafe_routes: routes that went are taken
// out of the kernel, new ones put in, and the send path uses the new table at once. Tunnels
// stay. It reports what changed.
func (n *Node) SetRoutes(c *Config) ([]string, error) {
	n.routesMu.Lock()
	defer n.routesMu.Unlock()
	c2 := c.Tun
	c2.MTU = n.mtu // the device's MTU does not change on reload
	rt, err := parseRoutes(&c2, n.vpnNet, n.vpnIP)
	if err != nil {
		return nil, err
	}
	old := n.routes.Load()
	var changes []string
	key := func(r route) string { return fmt.Sprintf("%v", r) }
	oldSet := map[string]route{}
	for _, r := range slices.Concat(old.tunnel, old.unsafe) {
		oldSet[key(r)] = r
	}
	newSet := map[string]route{}
	for _, r := range slices.Concat(rt.tunnel, rt.unsafe) {
		newSet[key(r)] = r
	}
	dev, _ := n.dev.(tun.Router)
	for k, r := range oldSet {
		if _, keep := newSet[k]; keep {
			continue
		}
		if dev != nil && r.install {
			if err := dev.DeleteRoute(r.kernel()); err != nil {
				n.log.Warn("removing a route", "route", r.dst, "err", err)
			}
		}
		changes = append(changes, "route "+r.dst.String()+" removed")
	}
	for k, r := range newSet {
		if _, had := oldSet[k]; had {
			continue
		}
		if dev != nil && r.install {
			if err := dev.AddRoute(r.kernel()); err != nil {
				return changes, fmt.Errorf("route %s: %w", r.dst, err)
			}
		}
		changes = append(changes, "route "+r.dst.String()+" added")
	}
	slices.Sort(changes)
	n.routes.Store(rt)
	return changes, nil
}
