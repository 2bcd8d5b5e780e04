package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/header"
)

// Lighthouse timings (Nebula 1.6's where it has them).
const (
	DefaultLighthouseInterval = 10 * time.Second
	punchInterval             = 10 * time.Second
	queryMinGap               = 500 * time.Millisecond
	// bookTTL forgets hosts that stopped reporting; clients report every interval (10 s by
	// default, 60 s in Nebula's example config), so three of the longer interval.
	bookTTL = 3 * time.Minute
	// maxLearned bounds the addresses kept per host and lighthouse, per family.
	maxLearned = 10
)

// lhConf is the part of the lighthouse section a reload may replace; it is swapped whole.
type lhConf struct {
	hosts       []netip.Addr // the lighthouses we report to and query
	isLH        map[netip.Addr]bool
	interval    time.Duration
	remoteAllow *lighthouse.RemoteAllowList
	localAllow  *lighthouse.AllowList
	advertise   []netip.AddrPort
	preferred   []netip.Prefix
}

// lighthouseState is both roles of the lighthouse protocol: the client that reports its
// addresses and asks where peers are, and (with am_lighthouse) the server keeping the book.
type lighthouseState struct {
	n       *Node
	am      bool
	conf    atomic.Pointer[lhConf]
	book    *lighthouse.Book
	queries *lighthouse.Limiter

	mu         sync.Mutex
	learned    map[netip.Addr]map[netip.Addr][]netip.AddrPort // peer -> source lighthouse -> addrs
	lastQuery  map[netip.Addr]time.Time
	lastUpdate time.Time

	acks atomic.Int64 // HostUpdateNotificationAcks received (tests read it)
}

func (lh *lighthouseState) c() *lhConf { return lh.conf.Load() }

func newLighthouseState(n *Node) (*lighthouseState, error) {
	lh := &lighthouseState{
		n: n, am: n.cfg.Lighthouse.AmLighthouse,
		learned:   map[netip.Addr]map[netip.Addr][]netip.AddrPort{},
		lastQuery: map[netip.Addr]time.Time{},
	}
	conf, err := parseLHConf(n, n.cfg)
	if err != nil {
		return nil, err
	}
	lh.conf.Store(conf)
	if lh.am {
		lh.book = lighthouse.NewBook(lighthouse.BookOptions{Now: n.now, RemoteAllowList: conf.remoteAllow,
			OwnVPNNet: n.vpnNet, TTL: bookTTL, AllowLoopback: n.conn.LocalAddr().Addr().IsLoopback()})
		lh.queries = lighthouse.NewLimiter(lighthouse.LimiterOptions{Rate: 50, Burst: 100, Now: n.now})
	}
	return lh, nil
}

// parseLHConf reads the reloadable part of the lighthouse section.
func parseLHConf(n *Node, cfg *Config) (*lhConf, error) {
	c := cfg.Lighthouse
	lc := &lhConf{isLH: map[netip.Addr]bool{}, interval: time.Duration(c.Interval) * time.Second}
	if lc.interval <= 0 {
		lc.interval = DefaultLighthouseInterval
	}
	for i, h := range c.Hosts {
		a, err := netip.ParseAddr(h)
		if err != nil {
			return nil, fmt.Errorf("lighthouse.hosts[%d]: %q is not an IP address", i, h)
		}
		if a == n.vpnIP {
			continue // a lighthouse may list itself in a shared config
		}
		lc.hosts = append(lc.hosts, a)
		lc.isLH[a] = true
	}
	var err error
	if lc.remoteAllow, err = lighthouse.ParseRemoteAllowList("lighthouse.remote_allow_list",
		&c.RemoteAllowList, "lighthouse.remote_allow_ranges", &c.RemoteAllowRanges); err != nil {
		return nil, err
	}
	if lc.localAllow, err = lighthouse.ParseLocalAllowList("lighthouse.local_allow_list", &c.LocalAllowList); err != nil {
		return nil, err
	}
	for i, s := range c.AdvertiseAddrs {
		ap, err := resolveAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("lighthouse.advertise_addrs[%d]: %w", i, err)
		}
		lc.advertise = append(lc.advertise, ap)
	}
	for _, p := range cfg.PreferredRanges() {
		if pp, err := netip.ParsePrefix(p); err == nil {
			lc.preferred = append(lc.preferred, pp.Masked())
		}
	}
	return lc, nil
}

// client reports whether this node queries lighthouses.
func (lh *lighthouseState) client() bool { return !lh.am && len(lh.c().hosts) > 0 }

// remotesFor lists the underlay addresses to try for a peer: static entries first, then the
// address of the current tunnel to it, then what lighthouses told us, deduplicated, with
// preferred_ranges first.
func (n *Node) remotesFor(vpn netip.Addr) []netip.AddrPort {
	out := append([]netip.AddrPort(nil), n.staticMap()[vpn]...)
	// The address a tunnel to vpn runs on now is a proven one, and for a peer that reached
	// us (a lighthouse's hosts, a host behind NAT) the only one: a re-handshake after a
	// renewal goes there too.
	if t := n.hosts.byVPNIP(vpn); t != nil {
		if a := t.remoteAddr(); a.IsValid() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	lh := n.lh
	lh.mu.Lock()
	for _, addrs := range lh.learned[vpn] {
		for _, a := range addrs {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	lh.mu.Unlock()
	if len(lh.c().preferred) > 0 {
		slices.SortStableFunc(out, func(a, b netip.AddrPort) int {
			return boolRank(lh.isPreferred(a.Addr())) - boolRank(lh.isPreferred(b.Addr()))
		})
	}
	return out
}

func boolRank(b bool) int {
	if b {
		return 0
	}
	return 1
}

func (lh *lighthouseState) isPreferred(a netip.Addr) bool {
	for _, p := range lh.c().preferred {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// query asks every lighthouse where vpn is (at most every queryMinGap per peer).
func (lh *lighthouseState) query(vpn netip.Addr) {
	if !lh.client() || lh.c().isLH[vpn] {
		return
	}
	now := lh.n.now()
	lh.mu.Lock()
	if last, ok := lh.lastQuery[vpn]; ok && now.Sub(last) < queryMinGap {
		lh.mu.Unlock()
		return
	}
	lh.lastQuery[vpn] = now
	lh.mu.Unlock()
	lh.sendToLighthouses(&lighthouse.Meta{Type: lighthouse.HostQuery, VpnIP: vpn})
}

// sendToLighthouses sends m to every lighthouse, in each tunnel's form (metaFor).
func (lh *lighthouseState) sendToLighthouses(m *lighthouse.Meta) {
	for _, h := range lh.c().hosts {
		if t := lh.n.hosts.byVPNIP(h); t != nil {
			lh.n.sendEncrypted(t, header.LightHouse, 0, metaFor(t, m))
		} else {
			lh.n.hs.trigger(h, nil)
		}
	}
}

// metaFor encodes m for tunnel t as Nebula 1.10+ does: on a tunnel built on v2
// certificates the host goes in VpnAddr and relays in RelayVpnAddrs, and an update names no
// host (the lighthouse takes the tunnel's peer); on a v1 tunnel the v1 fields, which Nebula
// 1.6 reads. An IPv6 host fits VpnAddr only, whatever the tunnel.
func metaFor(t *tunnel, m *lighthouse.Meta) []byte { return appendMetaFor(nil, t, m) }

// appendMetaFor is metaFor appending to dst.
func appendMetaFor(dst []byte, t *tunnel, m *lighthouse.Meta) []byte {
	c := *m
	c.AddrV2 = t.localCert.Version() == cert.Version2 || c.VpnIP.Is6()
	if c.AddrV2 && c.Type == lighthouse.HostUpdateNotification {
		c.VpnIP = netip.Addr{}
	}
	return c.Marshal(dst)
}

// tick sends periodic updates and ages the book.
func (lh *lighthouseState) tick(now time.Time) {
	if lh.client() && now.Sub(lh.lastUpdate) >= lh.c().interval {
		lh.lastUpdate = now
		lh.sendToLighthouses(lh.update())
	}
	if lh.book != nil {
		lh.book.Expire()
	}
	lh.mu.Lock()
	for vpn, at := range lh.lastQuery {
		if now.Sub(at) > time.Minute {
			delete(lh.lastQuery, vpn)
		}
	}
	lh.mu.Unlock()
}

// punch keeps the NAT mapping towards a direct peer open (punchy.punch): a one-byte
// datagram every punchInterval, from the tunnel's own timer visit (checkTunnel), so the
// punches of many tunnels spread over the interval instead of leaving in one burst. It
// returns when the next one is due.
func (lh *lighthouseState) punch(t *tunnel, now time.Time) (time.Time, bool) {
	if !lh.n.cfg.Punchy.Punch {
		return time.Time{}, false
	}
	if last := time.Unix(0, t.punched); t.punched == 0 || now.Sub(last) >= punchInterval || now.Before(last) {
		if a := t.remoteAddr(); a.IsValid() && t.relay.Load() == nil {
			lh.n.sendRaw([]byte{1}, []netip.AddrPort{a})
		}
		t.punched = now.UnixNano()
	}
	return time.Unix(0, t.punched).Add(punchInterval), true
}

// tunnelUp sends our addresses to a lighthouse as soon as its tunnel forms.
func (lh *lighthouseState) tunnelUp(t *tunnel) {
	if lh.client() && lh.c().isLH[t.vpnIP] {
		lh.n.sendEncrypted(t, header.LightHouse, 0, metaFor(t, lh.update()))
		lh.n.lighthouseUp() // and ask it for a newer blocklist
	}
}

// tunnelDown forgets a host whose tunnel to this lighthouse ended.
func (lh *lighthouseState) tunnelDown(t *tunnel) {
	if lh.book != nil {
		if _, static := lh.n.staticMap()[t.vpnIP]; !static {
			lh.book.Forget(t.vpnIP)
		}
	}
}

// update builds our HostUpdateNotification: advertised addresses, then local interface
// addresses allowed by local_allow_list, each with our listening port.
func (lh *lighthouseState) update() *lighthouse.Meta {
	n := lh.n
	m := &lighthouse.Meta{Type: lighthouse.HostUpdateNotification, VpnIP: n.vpnIP, Relays: n.relay.advertised()}
	port := n.conn.LocalAddr().Port()
	add := func(ap netip.AddrPort) {
		a := ap.Addr().Unmap()
		if n.inOverlay(a) { // our TUN's own addresses are no way to reach us
			return
		}
		ap = netip.AddrPortFrom(a, ap.Port())
		if a.Is4() {
			if len(m.V4) < maxLearned && !slices.Contains(m.V4, ap) {
				m.V4 = append(m.V4, ap)
			}
		} else if len(m.V6) < maxLearned && !slices.Contains(m.V6, ap) {
			m.V6 = append(m.V6, ap)
		}
	}
	for _, a := range lh.c().advertise {
		if a.Port() == 0 {
			a = netip.AddrPortFrom(a.Addr(), port)
		}
		add(a)
	}
	for _, a := range lh.localAddrs() {
		add(netip.AddrPortFrom(a, port))
	}
	return m
}

// localAddrs are this host's underlay addresses worth reporting.
func (lh *lighthouseState) localAddrs() []netip.Addr {
	if la := lh.n.conn.LocalAddr().Addr().Unmap(); la.IsValid() && !la.IsUnspecified() {
		return []netip.Addr{la}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		if lh.c().localAllow != nil && !lh.c().localAllow.AllowName(ifc.Name) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
				continue
			}
			if lh.c().localAllow != nil && !lh.c().localAllow.Allow(ip) {
				continue
			}
			out = append(out, ip)
		}
	}
	return out
}

// handle processes an authenticated lighthouse message from tunnel t.
func (lh *lighthouseState) handle(t *tunnel, pt []byte) {
	n := lh.n
	// Decoded into a pooled Meta: a lighthouse gets an update from each host every
	// interval. Nothing below keeps m's lists (the book, learn and the relays copy them).
	s := ctlPool.Get().(*ctlScratch)
	defer ctlPool.Put(s)
	m := &s.in
	if err := lighthouse.Unmarshal(pt, m); err != nil {
		n.m.dropped(dropLighthouseBad)
		return
	}
	switch m.Type {
	case lighthouse.HostUpdateNotification:
		if lh.book == nil {
			n.m.dropped(dropLighthouseRole)
			return
		}
		if m.VpnIP != t.vpnIP && slices.Contains(t.allowedIPs, m.VpnIP) {
			m.VpnIP = t.vpnIP // the host named itself by another of its addresses
		}
		// The v2 form names no host (Nebula 1.10+ and meshnode on v2 tunnels); read before
		// the fix-up below, which fills VpnIP in.
		v2Form := m.AddrV2 || !m.VpnIP.IsValid() || m.VpnIP.IsUnspecified()
		if err := lh.book.Update(t.vpnIP, t.remoteAddr(), m); err != nil {
			n.m.dropped(dropLighthouseBad)
			n.log.Info("lighthouse: update refused", "from", t.vpnIP, "err", err)
			return
		}
		if v2Form {
			// Nebula 1.10+ lighthouses acknowledge an accepted update with an empty
			// HostUpdateNotificationAck. Only the v2 form gets one here: a 1.6 host, which
			// sends the v1 form, does not know the type.
			n.sendEncrypted(t, header.LightHouse, 0, (&lighthouse.Meta{Type: lighthouse.HostUpdateNotificationAck, AddrV2: true}).Marshal(nil))
		}
	case lighthouse.HostUpdateNotificationAck:
		// Our lighthouse got our update; nothing to do (Nebula 1.11 ignores it too).
		lh.acks.Add(1)
	case lighthouse.HostQuery:
		if lh.book == nil {
			n.m.dropped(dropLighthouseRole)
			return
		}
		if !lh.queries.Allow(t.vpnIP) {
			n.m.dropped(dropLighthouseRate)
			return
		}
		// The book files a host under its first address; a query may name any of them (an
		// IPv6 one from a v2 host), and the host's tunnel to us knows them all.
		target := n.hosts.byVPNIP(m.VpnIP)
		key := m.VpnIP
		if target != nil {
			key = target.vpnIP
		}
		// Answered from pooled buffers: at 100k hosts the garbage of each answer set how
		// often the collector ran, and a query met during marking waited for it.
		reply := &s.meta
		if !lh.book.LookupInto(key, reply) {
			return // Nebula answers nothing for unknown hosts
		}
		// The answer names the address asked about, in the form it was asked in (the
		// querier files it under that address); IPv6 only fits VpnAddr.
		reply.Type, reply.VpnIP = lighthouse.HostQueryReply, m.VpnIP
		reply.AddrV2 = m.AddrV2 || m.VpnIP.Is6()
		s.payload = reply.Marshal(s.payload[:0])
		n.sendEncrypted(t, header.LightHouse, 0, s.payload)
		// Tell the wanted host to punch towards the querier, so both NATs open.
		if target != nil && lh.book.PunchNotificationInto(t.vpnIP, reply) {
			s.payload = appendMetaFor(s.payload[:0], target, reply)
			n.sendEncrypted(target, header.LightHouse, 0, s.payload)
		}
	case lighthouse.HostQueryReply:
		if !lh.c().isLH[t.vpnIP] {
			n.m.dropped(dropLighthouseRole)
			return
		}
		if lh.learn(t.vpnIP, m) {
			n.hs.kick(m.VpnIP)
		}
	case lighthouse.HostPunchNotification:
		if !lh.c().isLH[t.vpnIP] {
			n.m.dropped(dropLighthouseRole)
			return
		}
		if !lh.learn(t.vpnIP, m) {
			return
		}
		addrs := append(append([]netip.AddrPort(nil), m.V4...), m.V6...)
		peer := m.VpnIP
		delay := n.cfg.Punchy.Delay
		if delay <= 0 {
			delay = time.Second
		}
		time.AfterFunc(delay, func() {
			if n.closed() {
				return
			}
			n.sendRaw([]byte{0}, unmapAll(addrs))
		})
		if n.cfg.Punchy.Respond {
			time.AfterFunc(n.cfg.Punchy.RespondDelay, func() {
				if !n.closed() && n.hosts.byVPNIP(peer) == nil {
					n.hs.trigger(peer, nil)
				}
			})
		}
	default:
		// HostMoved, Whoami and PathCheck are unused by Nebula 1.6.
	}
}

// learn records the addresses a lighthouse gave for a peer, replacing that lighthouse's
// earlier answer. It reports whether the message named a usable peer.
func (lh *lighthouseState) learn(from netip.Addr, m *lighthouse.Meta) bool {
	n := lh.n
	vpn := m.VpnIP
	if !vpn.IsValid() || slices.Contains(n.ownIPs, vpn) || !n.inOverlay(vpn) {
		n.m.dropped(dropLighthouseBad)
		return false
	}
	var addrs []netip.AddrPort
	for _, list := range [][]netip.AddrPort{m.V4, m.V6} {
		kept := 0
		for _, a := range list {
			a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
			if kept >= maxLearned || !lighthouse.Usable(a) && !a.Addr().IsLoopback() {
				continue
			}
			if n.inOverlay(a.Addr()) {
				continue
			}
			if lh.c().remoteAllow != nil && !lh.c().remoteAllow.Allow(vpn, a.Addr()) {
				continue
			}
			addrs = append(addrs, a)
			kept++
		}
	}
	if m.Type == lighthouse.HostQueryReply {
		n.relay.learnPeerRelays(vpn, m.Relays)
	}
	lh.mu.Lock()
	if lh.learned[vpn] == nil {
		lh.learned[vpn] = map[netip.Addr][]netip.AddrPort{}
	}
	lh.learned[vpn][from] = addrs
	lh.mu.Unlock()
	n.hsq.addExpected(addrs) // its msg 1 is answered first, even during a flood
	return len(addrs) > 0 || len(m.Relays) > 0
}

func unmapAll(in []netip.AddrPort) []netip.AddrPort {
	out := make([]netip.AddrPort, len(in))
	for i, a := range in {
		out[i] = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	return out
}
