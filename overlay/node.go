package overlay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/tun"
	"github.com/meshnode/meshnode/overlay/udp"
)

// Options are the seams a Node is built with: the devices it moves packets between, and the
// clock, randomness, logger and metrics registry, so that a whole mesh runs in one test.
type Options struct {
	Device tun.Device // nil when tun.disabled
	Conn   udp.Conn
	// Conns are more sockets bound to Conn's address with SO_REUSEPORT, one per routine
	// beyond the first; with a multi-queue Device (one queue per routine) each routine gets
	// a queue and a socket of its own and runs its own pair of data-path goroutines.
	Conns []udp.Conn
	// PriorityConn is a socket on Conn's address that the kernel gives only small datagrams
	// (udp.SteerSmall); with the Device's priority queue (tun.Options.PriorityQueue) it
	// makes the priority lane, which then receives as well as sends. nil: the lane sends
	// through Conn, and small datagrams arrive with everything else.
	PriorityConn udp.Conn
	Logger       *slog.Logger
	Registerer   prom.Registerer
	Now          func() time.Time
	Rand         io.Reader
	// Tick is how often timers (handshake retries, liveness) are looked at; tests shorten it.
	Tick time.Duration
}

// PKI is a node's identity and trust: its credentials and the CA pool (with blocklist).
type PKI struct {
	Creds *handshake.Credentials
	Pool  *cert.Pool
}

// Networks are the networks of every certificate held (v1 and v2), each once, in the order
// held: the addresses the TUN device carries.
func (p *PKI) Networks() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range p.Creds.Certs() {
		for _, n := range c.Details.Ips {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// LoadPKI reads pki.ca, pki.cert, pki.key and pki.blocklist and checks they fit together.
func LoadPKI(c *Config, now time.Time) (*PKI, error) {
	caPEM, err := ReadPEMSetting("pki.ca", c.PKI.CA)
	if err != nil {
		return nil, err
	}
	pool, err := cert.NewPoolFromPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki.ca: %w", err)
	}
	for _, fp := range c.Blocklist() {
		pool.Block(fp)
	}
	crtPEM, err := ReadPEMSetting("pki.cert", c.PKI.Cert)
	if err != nil {
		return nil, err
	}
	// pki.cert may hold a v1 and a v2 certificate of the same key (Nebula 1.10+); each must
	// be valid and trusted on its own.
	var crts []*cert.Certificate
	for rest := crtPEM; len(bytes.TrimSpace(rest)) > 0; {
		var crt *cert.Certificate
		crt, rest, err = cert.UnmarshalPEM(rest)
		if err != nil {
			return nil, fmt.Errorf("pki.cert: certificate %d: %w", len(crts)+1, err)
		}
		crts = append(crts, crt)
	}
	if len(crts) == 0 {
		return nil, errors.New("pki.cert: no certificate")
	}
	keyPEM, err := ReadPEMSetting("pki.key", c.PKI.Key)
	if err != nil {
		return nil, err
	}
	key, _, err := cert.UnmarshalX25519PrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki.key: %w", err)
	}
	for _, crt := range crts {
		if len(crt.Details.Ips) == 0 {
			return nil, fmt.Errorf("pki.cert: the %s certificate has no IP address", crt.Version())
		}
		if crt.Expired(now) {
			return nil, fmt.Errorf("pki.cert: the %s certificate is not valid now (valid %s to %s)", crt.Version(),
				crt.Details.NotBefore.Format(time.RFC3339), crt.Details.NotAfter.Format(time.RFC3339))
		}
		if _, err := pool.Verify(crt, now); err != nil {
			return nil, fmt.Errorf("pki.cert: the %s certificate is not trusted by pki.ca: %w", crt.Version(), err)
		}
	}
	if v := cert.Version(c.PKI.InitiatingVersion); v != 0 && !slices.ContainsFunc(crts, func(c *cert.Certificate) bool { return c.Version() == v }) {
		return nil, fmt.Errorf("pki.initiating_version: %d needs a %s certificate in pki.cert", v, v)
	}
	creds, err := handshake.NewCredentialSet(crts, key, cert.Version(c.PKI.InitiatingVersion))
	if err != nil {
		if len(crts) > 1 || c.PKI.InitiatingVersion != 0 {
			return nil, fmt.Errorf("pki.cert: %w", err)
		}
		return nil, fmt.Errorf("pki.key: %w", err)
	}
	return &PKI{Creds: creds, Pool: pool}, nil
}

// Node is one host of the mesh: it owns the host map, the handshake manager and the two
// packet paths between its TUN device and its UDP socket.
type Node struct {
	cfg    *Config
	dev    tun.Device
	conn   udp.Conn
	log    *slog.Logger
	m      *metrics
	now    func() time.Time
	rand   io.Reader
	tick   time.Duration
	cipher handshake.Cipher

	pki      atomic.Pointer[PKI]
	fw       atomic.Pointer[firewall.Firewall]
	vpnIP    netip.Addr
	vpnNet   netip.Prefix
	vpnNets  []netip.Prefix // every network of our certificates, masked (vpnNet first)
	ownIPs   []netip.Addr
	ownNets  []netip.Prefix
	static   atomic.Pointer[map[netip.Addr][]netip.AddrPort]
	hosts    hostMap
	hs       *handshakeManager
	hsq      *msg1Backlog
	lh       *lighthouseState
	relay    *relayState
	pings    pingWaiters
	ext      extState
	bl       *blocklistState
	sendMu   sync.Mutex                 // udp.Conn allows one writer at a time
	routes   atomic.Pointer[routeTable] // tun.routes and tun.unsafe_routes (routes.go)
	routesMu sync.Mutex                 // serialises SetRoutes
	gwAsked  sync.Map                   // gateway VPN IP -> *atomic.Int64, last handshake asked
	mtu      int
	sendRecv string
	recvErr  recvErrorLimiter // rate limits for sendRecvError

	closeOnce sync.Once
	done      chan struct{}
	// wake tells the timer loop a handshake started, so it goes from its idle pace (once a
	// second) to the handshake pace (tick) at once.
	wake chan struct{}
	// lanes are the data path's routines: lane 0 is (Device or its first queue, Conn), each
	// further lane a queue and a socket of Options.Conns.
	lanes []*lane
	// prio is the lane of small packets (tun.priority_queue), nil without one; prioOut and
	// prioIn count what it read from the device and from its socket.
	prio            *lane
	prioOut, prioIn atomic.Uint64
	wg              sync.WaitGroup
	// dueBuf is the timer loop's list of tunnels due (checkTunnels), kept between ticks.
	dueBuf []*tunnel
	// checkSliceTime and checkYield are checkTunnels' slice and what it does between two
	// (a short sleep); tests change them.
	checkSliceTime time.Duration
	checkYield     func()
}

// New builds a node from a validated config and its PKI.
func New(cfg *Config, pki *PKI, opts Options) (*Node, error) {
	if opts.Conn == nil {
		return nil, errors.New("overlay: Options.Conn is required")
	}
	if opts.Device == nil && !cfg.Tun.Disabled {
		return nil, errors.New("overlay: Options.Device is required unless tun.disabled")
	}
	n := &Node{
		cfg:      cfg,
		dev:      opts.Device,
		conn:     opts.Conn,
		log:      opts.Logger,
		now:      opts.Now,
		rand:     opts.Rand,
		tick:     opts.Tick,
		mtu:      cfg.Tun.MTU,
		sendRecv: cfg.Listen.SendRecvError,
		done:     make(chan struct{}),
		wake:     make(chan struct{}, 1),

		checkSliceTime: checkSliceTime,
		checkYield:     func() { time.Sleep(checkPause) },
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	if n.rand == nil {
		n.rand = rand.Reader
	}
	if n.tick == 0 {
		n.tick = cfg.Handshakes.TryInterval / 2
	}
	n.lanes = n.buildLanes(opts)
	if len(n.lanes) == 1 {
		n.prio = n.priorityLane(opts.Device, opts.Conn, opts.PriorityConn)
	}
	var err error
	if n.cipher, err = handshake.ParseCipher(cfg.Cipher); err != nil {
		return nil, fmt.Errorf("cipher: %w", err)
	}
	n.pki.Store(pki)
	own := pki.Creds.Cert
	n.vpnIP = own.VpnIP()
	n.vpnNet = own.Details.Ips[0].Masked()
	n.vpnNets = []netip.Prefix{n.vpnNet}
	// A v2 certificate held beside a v1 one may add networks (IPv6); we answer for all.
	for _, c := range pki.Creds.Certs() {
		for _, p := range c.Details.Ips {
			if !slices.Contains(n.ownIPs, p.Addr()) {
				n.ownIPs = append(n.ownIPs, p.Addr())
			}
			if !slices.Contains(n.vpnNets, p.Masked()) {
				n.vpnNets = append(n.vpnNets, p.Masked())
			}
		}
		for _, p := range c.Details.Subnets {
			if !slices.Contains(n.ownNets, p) {
				n.ownNets = append(n.ownNets, p)
			}
		}
	}
	rt, err := parseRoutes(&cfg.Tun, n.vpnNet, n.vpnIP)
	if err != nil {
		return nil, err
	}
	n.routes.Store(rt)
	fw, err := firewall.New(cfg.Firewall, n.firewallOptions())
	if err != nil {
		return nil, err
	}
	n.fw.Store(fw)
	static, err := resolveStatic(cfg.StaticHostMap, cfg.StaticMap, n.vpnNets)
	if err != nil {
		return nil, err
	}
	n.static.Store(&static)
	if cfg.Lighthouse.AmLighthouse {
		n.hosts.indexNames() // lighthouse DNS and name queries (names.go) find hosts by name
	}
	n.m = newMetrics(opts.Registerer, &n.hosts)
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(n.certTTL())
		if n.prio != nil {
			opts.Registerer.MustRegister(n.priorityMetric())
		}
	}
	n.hs = newHandshakeManager(n)
	if n.relay, err = newRelayState(n); err != nil {
		return nil, err
	}
	if n.lh, err = newLighthouseState(n); err != nil {
		return nil, err
	}
	n.hsq = newMsg1Backlog(n)
	n.hsq.rebuildExpected()
	n.ext.handle(extOpFirewallQuery, n.answerFirewallQuery)
	n.bl = newBlocklistState(n, opts.Registerer)
	if err := n.installRoutes(rt); err != nil {
		return nil, err
	}
	if n.lh.am {
		n.ext.handle(extOpBlocklistQuery, n.answerBlocklistQuery) // lighthouses relay the blocklist
		n.ext.handle(extOpNameQuery, n.answerNameQuery)           // and resolve names (names.go)
	} else {
		n.ext.handle(extOpBlocklistNotify, n.answerBlocklistNotify)
	}
	return n, nil
}

// resolveStatic parses static_host_map, resolving host names (at start and on reload; Nebula
// also re-resolves every static_map.cadence, which we do not). A name gives every address
// of static_map.network's families, as in Nebula.
func resolveStatic(m map[string]HostList, sm StaticMapConfig, vpnNets []netip.Prefix) (map[netip.Addr][]netip.AddrPort, error) {
	out := map[netip.Addr][]netip.AddrPort{}
	for k, addrs := range m {
		vpn, err := netip.ParseAddr(k)
		if err != nil {
			return nil, fmt.Errorf("static_host_map: %q is not an IP address", k)
		}
		if !slices.ContainsFunc(vpnNets, func(p netip.Prefix) bool { return p.Contains(vpn) }) {
			return nil, fmt.Errorf("static_host_map: %s is not inside this host's networks %v", vpn, vpnNets)
		}
		for _, a := range addrs {
			aps, err := resolveStaticAddr(a, sm)
			if err != nil {
				return nil, fmt.Errorf("static_host_map[%q]: %w", k, err)
			}
			out[vpn] = append(out[vpn], aps...)
		}
	}
	return out, nil
}

// resolveStaticAddr is one static_host_map entry: an address as is, or every address of a
// name in static_map.network's families, looked up within static_map.lookup_timeout.
func resolveStaticAddr(s string, sm StaticMapConfig) ([]netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not host:port", s)
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	network := sm.Network
	if network == "" {
		network = "ip4"
	}
	timeout := sm.LookupTimeout
	if timeout <= 0 {
		timeout = DefaultStaticLookupTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return nil, fmt.Errorf("resolving %q (static_map.network %s): %w", s, network, err)
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(p)))
	}
	return out, nil
}

func resolveAddrPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not host:port", s)
	}
	ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(host, port))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolving %q: %w", s, err)
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// resolveName answers lighthouse DNS: the VPN IP of a host name from a certificate we hold.
func (n *Node) resolveName(name string) (netip.Addr, bool) {
	if strings.EqualFold(n.pki.Load().Creds.Cert.Details.Name, name) {
		return n.vpnIP, true
	}
	if t := n.hosts.byPeerName(name); t != nil {
		return t.vpnIP, true
	}
	return netip.Addr{}, false
}

// resolveNameAll answers lighthouse DNS with every VPN address of the host: A records get
// the IPv4 ones, AAAA records the IPv6 ones of a v2 certificate.
func (n *Node) resolveNameAll(name string) ([]netip.Addr, bool) {
	if strings.EqualFold(n.pki.Load().Creds.Cert.Details.Name, name) {
		return n.ownIPs, true
	}
	if t := n.hosts.byPeerName(name); t != nil {
		return t.allowedIPs, true
	}
	return nil, false
}

// staticMap is static_host_map, resolved; a reload may replace it.
func (n *Node) staticMap() map[netip.Addr][]netip.AddrPort { return *n.static.Load() }

// SetLighthouses applies a reloaded static_host_map, lighthouse list, lighthouse client
// settings, preferred ranges and relay settings. Tunnels are kept; am_lighthouse needs a
// restart (the node's role changes).
func (n *Node) SetLighthouses(cfg *Config) error {
	if cfg.Lighthouse.AmLighthouse != n.lh.am {
		return errors.New("lighthouse.am_lighthouse changed; restart meshnode to apply")
	}
	static, err := resolveStatic(cfg.StaticHostMap, cfg.StaticMap, n.vpnNets)
	if err != nil {
		return err
	}
	lc, err := parseLHConf(n, cfg)
	if err != nil {
		return err
	}
	rc, err := parseRelayConf(n, cfg.Relay)
	if err != nil {
		return err
	}
	n.static.Store(&static)
	n.lh.conf.Store(lc)
	n.relay.conf.Store(rc)
	n.hsq.rebuildExpected()
	return nil
}

// VpnIP is this node's overlay address.
func (n *Node) VpnIP() netip.Addr { return n.vpnIP }

// Run moves packets until ctx ends or Close is called; it then sends CloseTunnel to every
// peer (so they need not wait for a timeout) and returns.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2*len(n.lanes)+2)
	for _, l := range n.lanes {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); errc <- n.readOutside(l) }()
		if l.dev != nil {
			n.wg.Add(1)
			go func() { defer n.wg.Done(); errc <- n.readInside(l) }()
		}
	}
	if n.prio != nil {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); errc <- n.readInside(n.prio) }()
		if n.prio.conn != n.conn {
			n.wg.Add(1)
			go func() { defer n.wg.Done(); errc <- n.readOutside(n.prio) }()
		}
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.timers(ctx) }()
	for range n.hsq.workers {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.hsq.run() }()
	}
	if !n.lh.am {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.blocklistLoop(ctx) }()
	}
	if c := n.cfg.Lighthouse; c.AmLighthouse && c.ServeDNS {
		dns, err := lighthouse.NewDNSServer(lighthouse.DNSOptions{Resolve: n.resolveName, ResolveAll: n.resolveNameAll, Now: n.now, Logger: n.log})
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(strings.Trim(c.DNS.Host, "[]"), strconv.Itoa(c.DNS.Port))
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := dns.ListenAndServe(ctx, addr); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("lighthouse.dns %s: %w", addr, err)
			}
		}()
		n.log.Info("lighthouse DNS", "listen", addr)
	}
	var err error
	select {
	case <-ctx.Done():
	case <-n.done:
	case err = <-errc:
	}
	n.shutdown()
	cancel()
	n.wg.Wait()
	return err
}

// Close stops Run.
func (n *Node) Close() {
	n.closeOnce.Do(func() { close(n.done) })
}

func (n *Node) shutdown() {
	for _, t := range n.hosts.all() {
		n.sendClose(t)
	}
	n.Close()
	_ = n.conn.Close()
	for _, l := range n.lanes[1:] {
		_ = l.conn.Close()
	}
	if n.prio != nil && n.prio.conn != n.conn {
		_ = n.prio.conn.Close()
	}
	if n.dev != nil {
		_ = n.dev.Close() // closes every queue
	}
}

// timers drives handshake retries and tunnel liveness from one goroutine.
func (n *Node) timers(ctx context.Context) {
	// Only pending handshakes need the fast pace (retries every try_interval); everything
	// else is per second, so an idle node wakes once a second instead of twenty times.
	idle := max(time.Second, n.tick)
	t := time.NewTimer(n.tick)
	defer t.Stop()
	lastLiveness := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.done:
			return
		case <-t.C:
		case <-n.wake:
		}
		now := n.now()
		n.hs.tick(now)
		if n.hs.busy() {
			t.Reset(n.tick)
		} else {
			t.Reset(idle)
		}
		if now.Sub(lastLiveness) >= time.Second || now.Before(lastLiveness) {
			lastLiveness = now
			n.checkTunnels(now)
			n.hsq.tick(now)
			n.lh.tick(now)
			n.relay.tick()
		}
	}
}

// SetPKI swaps in new credentials, CA pool and blocklist (renewal, reload). The signed
// blocklist in force (ApplyBlocklist) stays applied to the new pool. New handshakes use them
// at once; when our certificate changed, every tunnel re-handshakes onto it; tunnels of
// blocked peers are closed now, others whose peer is no longer valid by the liveness check.
func (n *Node) SetPKI(p *PKI) error {
	if p.Creds.Cert.VpnIP() != n.vpnIP {
		return fmt.Errorf("pki: the new certificate's IP %s differs from the running %s", p.Creds.Cert.VpnIP(), n.vpnIP)
	}
	var newNets []netip.Prefix
	for _, c := range p.Creds.Certs() {
		for _, q := range c.Details.Subnets {
			if !slices.Contains(newNets, q) {
				newNets = append(newNets, q)
			}
		}
	}
	if !slices.Equal(masked(newNets), masked(n.ownNets)) {
		// ownNets and the firewall's local subnets are fixed at start (the data path reads
		// them without a lock).
		n.log.Warn("pki: the new certificate routes for other subnets; restart meshnode to apply them",
			"running", n.ownNets, "new", newNets)
	}
	n.swapPKI(p)
	n.closeRevoked(p.Pool)
	n.hosts.checks.soon(n.hosts.all(), n.now()) // every peer verified against the new pool
	// Peers that hold a certificate of ours we no longer have re-handshake so they learn
	// the new one before the old one expires; each old tunnel carries traffic until its
	// successor is up. (A tunnel below pki.initiating_version moves on the next liveness
	// tick, see handshakeManager.upgrade.) Handshakes still in flight with the old
	// certificate are not tunnels yet: they re-handshake when they come up
	// (handshakeManager.renewIfStale), which runs after the swap above.
	for _, t := range n.hosts.all() {
		if !holdsCert(p.Creds, t.localCert) {
			n.hs.rehandshake(t.vpnIP)
		}
	}
	return nil
}

// holdsCert reports whether c is one of the certificates in creds.
func holdsCert(creds *handshake.Credentials, c *cert.Certificate) bool {
	if c == nil {
		return false
	}
	h := creds.CertFor(c.Version())
	return h != nil && (h == c || h.Fingerprint() == c.Fingerprint())
}

// SetFirewall applies new firewall rules (reload): new flows follow them at once, tracked
// flows they no longer allow are cut, and flows still allowed carry on.
func (n *Node) SetFirewall(cfg firewall.Config) error {
	return n.fw.Load().Reload(cfg)
}

func (n *Node) firewallOptions() firewall.Options {
	return firewall.Options{Now: n.now, Logger: n.log, LocalAddrs: n.ownIPs, LocalSubnets: n.ownNets}
}

// PeerInfo describes one tunnel, for status output and tests.
type PeerInfo struct {
	Name         string
	VpnIP        netip.Addr
	Groups       []string
	Remote       netip.AddrPort
	RelayedVia   netip.Addr // valid when the tunnel runs through a relay
	LocalIndex   uint32
	RemoteIndex  uint32
	Initiator    bool
	Created      time.Time
	LastRecv     time.Time
	PacketsIn    uint64
	PacketsOut   uint64
	BytesIn      uint64
	BytesOut     uint64
	CertNotAfter time.Time
	Fingerprint  string
	// CertVersion is the version of our certificate on the tunnel, PeerCertVersion the peer's.
	CertVersion, PeerCertVersion cert.Version
}

// Peers lists the established tunnels.
func (n *Node) Peers() []PeerInfo {
	var out []PeerInfo
	for _, t := range n.hosts.all() {
		out = append(out, t.info())
	}
	return out
}

func (t *tunnel) info() PeerInfo {
	var via netip.Addr
	if r := t.relay.Load(); r != nil {
		via = r.hop
	}
	var lv cert.Version
	if t.localCert != nil {
		lv = t.localCert.Version()
	}
	return PeerInfo{RelayedVia: via, CertVersion: lv, PeerCertVersion: t.peer.Version(),
		Name: t.peer.Details.Name, VpnIP: t.vpnIP, Groups: t.peer.Details.Groups,
		Remote: t.remoteAddr(), LocalIndex: t.localIndex, RemoteIndex: t.remoteIndex,
		Initiator: t.initiator, Created: t.created, LastRecv: time.Unix(0, t.lastRecv.Load()),
		PacketsIn: t.packetsIn.Load(), PacketsOut: t.packetsOut.Load(),
		BytesIn: t.bytesIn.Load(), BytesOut: t.bytesOut.Load(),
		CertNotAfter: t.peer.Details.NotAfter, Fingerprint: t.fingerprint(),
	}
}

// Tunnel returns the tunnel info for a peer's VPN IP (the one naming the tunnel, as Peers
// lists it).
func (n *Node) Tunnel(vpn netip.Addr) (PeerInfo, bool) {
	if t := n.hosts.byVPNIP(vpn); t != nil && t.vpnIP == vpn {
		return t.info(), true
	}
	return PeerInfo{}, false
}

// Connect starts a handshake to vpn if there is no tunnel (as traffic would).
func (n *Node) Connect(vpn netip.Addr) {
	if n.hosts.byVPNIP(vpn) == nil {
		n.hs.trigger(vpn, nil)
	}
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	return out
}
