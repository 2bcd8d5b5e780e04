package overlay

// The control socket: a local unix socket on which `meshnode status | ping | check | list | reload`
// ask the running daemon questions. One JSON request per line, answered by JSON lines; every
// line but the last carries "more": true (ping streams one line per probe).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// DefaultControlPath is where the daemon listens unless told otherwise.
const DefaultControlPath = "/run/meshnode/meshnode.sock"

// DefaultControlMode keeps the socket root-only (the daemon runs as root).
const DefaultControlMode os.FileMode = 0o600

// Limits of the control protocol: requests are tiny, pings are bounded.
const (
	controlMaxLine     = 64 << 10
	controlReadTimeout = 10 * time.Second
	controlMaxConns    = 16
	controlMaxCount    = 1000
	controlMaxTimeout  = time.Minute
)

// ErrControlUnavailable means nothing answers on the control socket (the daemon is not
// running, or listens elsewhere).
var ErrControlUnavailable = errors.New("control socket unavailable")

// ControlOptions configure the daemon's control socket.
type ControlOptions struct {
	Path string      // unix socket path; DefaultControlPath when empty
	Mode os.FileMode // permissions of the socket; DefaultControlMode when 0
	// Reload re-reads the config and applies it (the daemon's SIGHUP handler), returning a
	// description of what changed. Nil means reload is not offered.
	Reload  func() ([]string, error)
	Version string
	Logger  *slog.Logger
}

// ControlRequest is one line sent by a client.
type ControlRequest struct {
	Cmd    string `json:"cmd"`              // status, ping, check, list, reload
	Target string `json:"target,omitempty"` // ping, check: VPN IP or host name
	// Traffic is what check asks about: tcp/PORT, udp/PORT or icmp.
	Traffic string `json:"traffic,omitempty"`
	Count   int    `json:"count,omitempty"` // ping: probes (default 3)
	// Ping timing in milliseconds: between probes (default 1000) and per probe (default
	// 2000; the first probe also gets time for a handshake).
	IntervalMS int `json:"interval_ms,omitempty"`
	TimeoutMS  int `json:"timeout_ms,omitempty"`
	// RTT asks status to measure each tunnel's round trip (one Test message per peer).
	RTT bool `json:"rtt,omitempty"`
}

// ControlResponse is one line sent by the daemon. Exactly one of the payloads is set on a
// successful final line; Error is set when the request failed.
type ControlResponse struct {
	More   bool           `json:"more,omitempty"`
	Error  string         `json:"error,omitempty"`
	Note   string         `json:"note,omitempty"` // progress for people (a handshake under way)
	Status *ControlStatus `json:"status,omitempty"`
	Probe  *PingProbe     `json:"probe,omitempty"`
	Ping   *PingSummary   `json:"ping,omitempty"`
	Hosts  []KnownHost    `json:"hosts,omitempty"`
	Reload *ReloadResult  `json:"reload,omitempty"`
	Check  *FirewallCheck `json:"check,omitempty"`
}

// ControlStatus is this host and its tunnels.
type ControlStatus struct {
	Name         string            `json:"name"`
	VpnIP        netip.Addr        `json:"vpn_ip"`
	Network      netip.Prefix      `json:"network"`
	Groups       []string          `json:"groups"`
	CertNotAfter time.Time         `json:"cert_not_after"`
	Fingerprint  string            `json:"fingerprint"`
	Lighthouse   bool              `json:"am_lighthouse"`
	Version      string            `json:"version,omitempty"`
	Started      time.Time         `json:"started"`
	Peers        []PeerStatus      `json:"peers"`
	Drops        map[string]uint64 `json:"drops"` // every reason with a non-zero count, plus the firewall's
	Routes       []RouteStatus     `json:"routes,omitempty"`
}

// RouteStatus is one entry of tun.unsafe_routes or tun.routes as status shows it: for an
// unsafe route its gateways, and the one traffic leaves through now (flows hash over every
// gateway with a tunnel; "" while none has one).
type RouteStatus struct {
	Route    netip.Prefix    `json:"route"`
	Unsafe   bool            `json:"unsafe"`
	MTU      int             `json:"mtu,omitempty"`
	Metric   int             `json:"metric,omitempty"`
	Install  bool            `json:"install"`
	Active   string          `json:"active,omitempty"`
	Gateways []GatewayStatus `json:"gateways,omitempty"`
}

// GatewayStatus is one gateway of an unsafe route. CarriesRoute is known only once a
// tunnel shows the gateway's certificate.
type GatewayStatus struct {
	Gateway      netip.Addr `json:"gateway"`
	Weight       int        `json:"weight"`
	Tunnel       bool       `json:"tunnel"`
	CarriesRoute *bool      `json:"carries_route,omitempty"`
}

// PeerStatus is one tunnel as status shows it.
type PeerStatus struct {
	Name         string         `json:"name"`
	VpnIP        netip.Addr     `json:"vpn_ip"`
	Groups       []string       `json:"groups"`
	Remote       netip.AddrPort `json:"remote"`
	Path         string         `json:"path"`                  // "direct" or "relayed"
	RelayedVia   string         `json:"relayed_via,omitempty"` // the relay's VPN IP
	RelayName    string         `json:"relay_name,omitempty"`  // the relay's certificate name
	Initiator    bool           `json:"initiator"`
	Handshake    time.Time      `json:"last_handshake"`
	LastRecv     time.Time      `json:"last_packet"`
	PacketsIn    uint64         `json:"packets_in"`
	PacketsOut   uint64         `json:"packets_out"`
	BytesIn      uint64         `json:"bytes_in"`
	BytesOut     uint64         `json:"bytes_out"`
	CertNotAfter time.Time      `json:"cert_not_after"`
	Fingerprint  string         `json:"fingerprint"`
	// CertVersion is the version of the certificate we showed on this tunnel,
	// PeerCertVersion the peer's (1 or 2).
	CertVersion     int `json:"cert_version"`
	PeerCertVersion int `json:"peer_cert_version"`
	// RTTMS is the round trip measured for this status (status -rtt); 0 when not asked
	// for, -1 when the peer did not answer in time.
	RTTMS float64 `json:"rtt_ms,omitempty"`
}

// PingProbe is the outcome of one probe.
type PingProbe struct {
	Seq   int     `json:"seq"`
	RTTMS float64 `json:"rtt_ms,omitempty"`
	Error string  `json:"error,omitempty"`
}

// PingSummary ends a ping.
type PingSummary struct {
	Target   netip.Addr `json:"target"`
	Name     string     `json:"name,omitempty"`
	Sent     int        `json:"sent"`
	Received int        `json:"received"`
	MinMS    float64    `json:"min_ms,omitempty"`
	AvgMS    float64    `json:"avg_ms,omitempty"`
	MaxMS    float64    `json:"max_ms,omitempty"`
	// Drops by our own firewall while the ping ran were already counted before; these are
	// the totals so far, so a user can see whether their traffic is what gets dropped.
	FirewallInbound  uint64 `json:"firewall_inbound_drops"`
	FirewallOutbound uint64 `json:"firewall_outbound_drops"`
}

// KnownHost is a host this node knows of, from any source.
type KnownHost struct {
	VpnIP   netip.Addr       `json:"vpn_ip"`
	Name    string           `json:"name,omitempty"`    // from the cert, when there is a tunnel
	Network netip.Prefix     `json:"network"`           // the network of its cert IP (ours when unknown)
	Groups  []string         `json:"groups,omitempty"`  // from the cert, when there is a tunnel
	Sources []string         `json:"sources"`           // self, tunnel, static, lighthouse
	Remotes []netip.AddrPort `json:"remotes,omitempty"` // tunnel address first, then static ones
}

// ReloadResult says what a reload changed.
type ReloadResult struct {
	Changes []string `json:"changes"`
}

// ControlServer serves the control socket of one node.
type ControlServer struct {
	n       *Node
	opts    ControlOptions
	ln      *net.UnixListener
	started time.Time

	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// ListenControl opens the control socket for n. A stale socket left by a dead daemon is
// replaced; a socket another daemon still answers on is an error, as is any other file at
// the path. The socket gets its permissions before it appears under its name.
func ListenControl(n *Node, opts ControlOptions) (*ControlServer, error) {
	if opts.Path == "" {
		opts.Path = DefaultControlPath
	}
	if opts.Mode == 0 {
		opts.Mode = DefaultControlMode
	}
	if opts.Logger == nil {
		opts.Logger = n.log
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if fi, err := os.Lstat(opts.Path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", opts.Path)
		}
		if c, err := net.DialTimeout("unix", opts.Path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another daemon is listening on it", opts.Path)
		}
		if err := os.Remove(opts.Path); err != nil {
			return nil, fmt.Errorf("control socket %s: removing a stale socket: %w", opts.Path, err)
		}
	}
	// Bind under a temporary name, set the mode, then rename: no window in which the socket
	// exists with the umask's permissions.
	tmp := fmt.Sprintf("%s.%d.tmp", opts.Path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, opts.Mode); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Rename(tmp, opts.Path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &ControlServer{n: n, opts: opts, ln: ln, started: time.Now(), sem: make(chan struct{}, controlMaxConns)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Path is the socket's path.
func (s *ControlServer) Path() string { return s.opts.Path }

// Serve accepts clients until Close (or ctx ends), then waits for the ones being served.
func (s *ControlServer) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("control socket: %w", err)
		}
		select {
		case s.sem <- struct{}{}:
		default:
			writeResponse(c, ControlResponse{Error: "too many control connections"})
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			defer c.Close()
			s.serveConn(c)
		}()
	}
}

// Close stops accepting, cancels requests in progress and removes the socket.
func (s *ControlServer) Close() {
	s.once.Do(func() {
		s.cancel()
		s.ln.Close()
		// Remove the path only if it is still our socket (a newer daemon may have taken it).
		if fi, err := os.Lstat(s.opts.Path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.DialTimeout("unix", s.opts.Path, 100*time.Millisecond); err == nil {
				c.Close()
			} else {
				os.Remove(s.opts.Path)
			}
		}
	})
}

func (s *ControlServer) serveConn(c *net.UnixConn) {
	_ = c.SetReadDeadline(time.Now().Add(controlReadTimeout))
	r := bufio.NewReaderSize(io.LimitReader(c, controlMaxLine), 4096)
	line, err := r.ReadBytes('\n')
	if err != nil && (len(line) == 0 || !errors.Is(err, io.EOF)) {
		writeResponse(c, ControlResponse{Error: "bad request: want one JSON object on one line"})
		return
	}
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		writeResponse(c, ControlResponse{Error: fmt.Sprintf("bad request: %v", err)})
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	// A client that hangs up cancels what it asked for (a long ping).
	ctx, cancel := context.WithCancel(s.ctx)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		var b [1]byte
		_, _ = c.Read(b[:])
		cancel()
	}()
	defer func() {
		cancel()
		c.Close()
		<-readerDone
	}()
	s.handle(ctx, req, func(resp ControlResponse) error { return writeResponse(c, resp) })
}

func writeResponse(w io.Writer, resp ControlResponse) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func (s *ControlServer) handle(ctx context.Context, req ControlRequest, send func(ControlResponse) error) {
	switch req.Cmd {
	case "status":
		st := s.n.ControlStatus()
		st.Version, st.Started = s.opts.Version, s.started
		if req.RTT {
			s.measureRTT(ctx, st.Peers)
		}
		send(ControlResponse{Status: &st})
	case "list":
		send(ControlResponse{Hosts: s.n.KnownHosts()})
	case "ping":
		s.ping(ctx, req, send)
	case "check":
		s.check(ctx, req, send)
	case "reload":
		if s.opts.Reload == nil {
			send(ControlResponse{Error: "reload is not available on this daemon"})
			return
		}
		changes, err := s.opts.Reload()
		if err != nil {
			send(ControlResponse{Error: err.Error()})
			return
		}
		send(ControlResponse{Reload: &ReloadResult{Changes: changes}})
	default:
		send(ControlResponse{Error: fmt.Sprintf("unknown command %q (want status, ping, check, list or reload)", req.Cmd)})
	}
}

func (s *ControlServer) ping(ctx context.Context, req ControlRequest, send func(ControlResponse) error) {
	vpn, name, ok := s.resolve(ctx, req, send)
	if !ok {
		return
	}
	if !s.n.vpnNet.Contains(vpn) {
		// Only overlay hosts answer our probe; a LAN host behind a gateway runs no meshnode.
		msg := fmt.Sprintf("%s is outside the overlay network %s: meshnode ping probes overlay hosts; use the system ping for it", vpn, s.n.vpnNet)
		if gw, ok := s.n.RouteFor(vpn); ok {
			msg += fmt.Sprintf(", or meshnode ping %s for its gateway", gw)
		}
		send(ControlResponse{Error: msg})
		return
	}
	count := req.Count
	if count <= 0 {
		count = 3
	}
	count = min(count, controlMaxCount)
	interval := clampMS(req.IntervalMS, time.Second)
	timeout := clampMS(req.TimeoutMS, 2*time.Second)
	sum := PingSummary{Target: vpn, Name: name}
	var total time.Duration
	for seq := 1; seq <= count; seq++ {
		if seq > 1 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(interval):
			}
		}
		d := timeout
		if seq == 1 {
			// Room for a handshake: every retry of the handshake manager, at least 5 s.
			d = max(d, 5*time.Second)
		}
		pctx, cancel := context.WithTimeout(ctx, d)
		rtt, err := s.n.Ping(pctx, vpn)
		cancel()
		if ctx.Err() != nil {
			return
		}
		sum.Sent++
		p := PingProbe{Seq: seq}
		if err != nil {
			p.Error = err.Error()
		} else {
			sum.Received++
			p.RTTMS = ms(rtt)
			total += rtt
			if sum.MinMS == 0 || p.RTTMS < sum.MinMS {
				sum.MinMS = p.RTTMS
			}
			sum.MaxMS = max(sum.MaxMS, p.RTTMS)
		}
		if err := send(ControlResponse{More: true, Probe: &p}); err != nil {
			return
		}
	}
	if sum.Received > 0 {
		sum.AvgMS = ms(total / time.Duration(sum.Received))
	}
	if p, ok := s.n.Tunnel(vpn); ok && sum.Name == "" {
		sum.Name = p.Name // the tunnel the first probe made names the host
	}
	sum.FirewallInbound = s.n.Dropped(dropFirewallIn)
	sum.FirewallOutbound = s.n.Dropped(dropFirewallOut)
	send(ControlResponse{Ping: &sum})
}

// nameLookupTimeout bounds asking the lighthouses for a name (ping or check of a host we
// hold no tunnel to); their tunnels normally exist, so an answer takes one round trip.
const nameLookupTimeout = 5 * time.Second

// nameRetryFor is how long a name every lighthouse calls unknown is asked again: a host
// that has just started reports to the lighthouses within moments, and a ping typed (or
// pasted) right after starting it should not fail for that.
const nameRetryFor = 2 * time.Second

// lookupName asks the lighthouses for name, again every 250 ms for nameRetryFor while all
// of them answer that they do not know it.
func (s *ControlServer) lookupName(ctx context.Context, name string) (netip.Addr, netip.Addr, error) {
	lctx, cancel := context.WithTimeout(ctx, nameLookupTimeout)
	defer cancel()
	retryUntil := time.Now().Add(nameRetryFor)
	for {
		ip, lh, err := s.n.LookupName(lctx, name)
		if !errors.Is(err, ErrNameUnknown) || time.Now().After(retryUntil) {
			return ip, lh, err
		}
		select {
		case <-lctx.Done():
			return ip, lh, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// resolve finds the target of a ping or check (a name no peer of ours carries is asked of
// the lighthouses) and, when there is no tunnel to it yet, tells the client a handshake is
// under way.
func (s *ControlServer) resolve(ctx context.Context, req ControlRequest, send func(ControlResponse) error) (netip.Addr, string, bool) {
	vpn, name, err := s.n.ResolveHost(req.Target)
	var unknown *unknownNameError
	if errors.As(err, &unknown) && len(s.n.lh.c().hosts) > 0 {
		name = unknown.name
		ip, lh, lerr := s.lookupName(ctx, name)
		switch {
		case lerr == nil:
			vpn, err = ip, nil
			if err := send(ControlResponse{More: true, Note: fmt.Sprintf("%s is %s (says lighthouse %s)", name, ip, lh)}); err != nil {
				return netip.Addr{}, "", false
			}
		case errors.Is(lerr, ErrNameUnknown):
			err = fmt.Errorf("unknown host %s: neither a peer's certificate nor the lighthouses (%s) know that name", name, joinAddrs(s.n.lh.c().hosts))
		default:
			err = fmt.Errorf("unknown host %s: no tunnel to a host of that name, and the lighthouses could not be asked (%v); use the VPN IP", name, lerr)
		}
	}
	if err != nil {
		send(ControlResponse{Error: err.Error()})
		return netip.Addr{}, "", false
	}
	if !s.n.vpnNet.Contains(vpn) {
		return vpn, name, true // behind a gateway (check finds the gateway's tunnel)
	}
	if _, ok := s.n.Tunnel(vpn); !ok {
		how := "its static_host_map address"
		if len(s.n.staticMap()[vpn]) == 0 {
			how = "the lighthouses"
		}
		if err := send(ControlResponse{More: true, Note: fmt.Sprintf("no tunnel to %s yet: handshaking (finding it through %s)", vpn, how)}); err != nil {
			return netip.Addr{}, "", false
		}
	}
	return vpn, name, true
}

// check reports the tunnel and both firewalls' verdicts for traffic to the target.
func (s *ControlServer) check(ctx context.Context, req ControlRequest, send func(ControlResponse) error) {
	tr, err := ParseTraffic(req.Traffic)
	if err != nil {
		send(ControlResponse{Error: err.Error()})
		return
	}
	vpn, _, ok := s.resolve(ctx, req, send)
	if !ok {
		return
	}
	// Room for a handshake (as ping's first probe), then the probe and the query.
	hctx, cancel := context.WithTimeout(ctx, max(clampMS(req.TimeoutMS, 5*time.Second), 5*time.Second))
	wait := vpn
	if gw, ok := s.n.RouteFor(vpn); ok && !s.n.vpnNet.Contains(vpn) {
		wait = gw
	}
	_, err = s.n.waitTunnel(hctx, wait)
	cancel()
	if err != nil {
		send(ControlResponse{Error: fmt.Sprintf("%v: the tunnel does not come up, so nothing reaches %s; "+
			"check `meshnode status` on both hosts, static_host_map or the lighthouses, and that UDP reaches the peer's listen port", err, req.Target)})
		return
	}
	c, err := s.n.CheckFirewall(ctx, vpn, tr)
	if err != nil {
		send(ControlResponse{Error: err.Error()})
		return
	}
	send(ControlResponse{Check: c})
}

// statusRTTTimeout bounds how long status -rtt waits for the slowest peer.
const statusRTTTimeout = time.Second

// measureRTT pings every peer at once (at most 32 in flight) and fills in RTTMS.
func (s *ControlServer) measureRTT(ctx context.Context, peers []PeerStatus) {
	ctx, cancel := context.WithTimeout(ctx, statusRTTTimeout)
	defer cancel()
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range peers {
		wg.Add(1)
		sem <- struct{}{}
		go func(p *PeerStatus) {
			defer wg.Done()
			defer func() { <-sem }()
			if rtt, err := s.n.Ping(ctx, p.VpnIP); err == nil {
				p.RTTMS = max(ms(rtt), 0.001)
			} else {
				p.RTTMS = -1
			}
		}(&peers[i])
	}
	wg.Wait()
}

func clampMS(v int, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return min(time.Duration(v)*time.Millisecond, controlMaxTimeout)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ControlStatus describes this host, its tunnels and its non-zero drop counters.
func (n *Node) ControlStatus() ControlStatus {
	own := n.pki.Load().Creds.Cert
	st := ControlStatus{
		Name: own.Details.Name, VpnIP: n.vpnIP, Network: n.vpnNet, Groups: nonNil(own.Details.Groups),
		CertNotAfter: own.Details.NotAfter, Fingerprint: own.Fingerprint(),
		Lighthouse: n.cfg.Lighthouse.AmLighthouse, Peers: []PeerStatus{}, Drops: map[string]uint64{},
	}
	for _, p := range n.Peers() {
		path, via, relayName := "direct", "", ""
		if p.RelayedVia.IsValid() {
			path, via = "relayed", p.RelayedVia.String()
			if hop := n.hosts.byVPNIP(p.RelayedVia); hop != nil {
				relayName = hop.peer.Details.Name
			}
		}
		st.Peers = append(st.Peers, PeerStatus{
			Name: p.Name, VpnIP: p.VpnIP, Groups: nonNil(p.Groups), Remote: p.Remote, Path: path, RelayedVia: via, RelayName: relayName,
			Initiator: p.Initiator, Handshake: p.Created, LastRecv: lastOrZero(p.LastRecv),
			PacketsIn: p.PacketsIn, PacketsOut: p.PacketsOut, BytesIn: p.BytesIn, BytesOut: p.BytesOut,
			CertNotAfter: p.CertNotAfter, Fingerprint: p.Fingerprint,
			CertVersion: int(p.CertVersion), PeerCertVersion: int(p.PeerCertVersion),
		})
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].VpnIP.Less(st.Peers[j].VpnIP) })
	for _, r := range n.Routes() {
		rs := RouteStatus{Route: r.Route, Unsafe: r.Unsafe, MTU: r.MTU, Metric: r.Metric, Install: r.Install}
		for _, g := range r.Gateways {
			gs := GatewayStatus{Gateway: g.Gateway, Weight: g.Weight, Tunnel: g.Tunnel}
			if g.Verified {
				c := g.Carries
				gs.CarriesRoute = &c
			}
			if g.Tunnel && rs.Active == "" {
				rs.Active = g.Gateway.String()
			} else if g.Tunnel {
				rs.Active += "," + g.Gateway.String()
			}
			rs.Gateways = append(rs.Gateways, gs)
		}
		st.Routes = append(st.Routes, rs)
	}
	for _, r := range allDropReasons {
		if v := n.Dropped(r); v > 0 || r == dropFirewallIn || r == dropFirewallOut {
			st.Drops[r] = v
		}
	}
	return st
}

// lastOrZero maps "never" (the Unix epoch of a zero counter) to the zero time.
func lastOrZero(t time.Time) time.Time {
	if t.UnixNano() <= 0 {
		return time.Time{}
	}
	return t
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// KnownHosts lists this host, the peers it has tunnels to, static_host_map entries and
// lighthouses, one entry per VPN IP, sorted by network then address.
func (n *Node) KnownHosts() []KnownHost {
	byIP := map[netip.Addr]*KnownHost{}
	get := func(a netip.Addr) *KnownHost {
		h := byIP[a]
		if h == nil {
			h = &KnownHost{VpnIP: a, Network: n.guessNetwork(a)}
			byIP[a] = h
		}
		return h
	}
	own := n.pki.Load().Creds.Cert
	self := get(n.vpnIP)
	self.Name, self.Groups, self.Sources = own.Details.Name, own.Details.Groups, []string{"self"}
	for _, t := range n.hosts.all() {
		h := get(t.vpnIP)
		h.Name, h.Groups = t.peer.Details.Name, t.peer.Details.Groups
		if len(t.peer.Details.Ips) > 0 {
			h.Network = t.peer.Details.Ips[0].Masked()
		}
		h.Sources = append(h.Sources, "tunnel")
		if t.relay.Load() != nil {
			h.Sources = append(h.Sources, "relayed") // no underlay address of its own in use
		} else if a := t.remoteAddr(); a.IsValid() {
			h.Remotes = append(h.Remotes, a)
		}
	}
	for a, addrs := range n.staticMap() {
		h := get(a)
		h.Sources = append(h.Sources, "static")
		for _, ap := range addrs {
			if !slices.Contains(h.Remotes, ap) {
				h.Remotes = append(h.Remotes, ap)
			}
		}
	}
	for _, a := range n.lh.c().hosts {
		h := get(a)
		h.Sources = append(h.Sources, "lighthouse")
	}
	out := make([]KnownHost, 0, len(byIP))
	for _, h := range byIP {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Network.Addr().Compare(out[j].Network.Addr()); c != 0 {
			return c < 0
		}
		if out[i].Network.Bits() != out[j].Network.Bits() {
			return out[i].Network.Bits() < out[j].Network.Bits()
		}
		return out[i].VpnIP.Less(out[j].VpnIP)
	})
	return out
}

// guessNetwork is our own network when it holds a, else a's host prefix: without the
// host's cert we cannot know its mask.
func (n *Node) guessNetwork(a netip.Addr) netip.Prefix {
	if n.vpnNet.Contains(a) {
		return n.vpnNet
	}
	return netip.PrefixFrom(a, a.BitLen())
}

// ResolveHost turns a VPN IP or a host name into a VPN IP. Names come from the certs of
// peers we hold tunnels to; static_host_map and lighthouses only know addresses.
func (n *Node) ResolveHost(target string) (netip.Addr, string, error) {
	target = strings.TrimSpace(target)
	if target == "" {
		return netip.Addr{}, "", errors.New("no host given")
	}
	if a, err := netip.ParseAddr(target); err == nil {
		a = a.Unmap()
		if a == n.vpnIP {
			return netip.Addr{}, "", fmt.Errorf("%s is this host", a)
		}
		if gw, ok := n.RouteFor(a); ok && !n.vpnNet.Contains(a) {
			return a, "behind gateway " + gw.String(), nil
		}
		name := ""
		if p, ok := n.Tunnel(a); ok {
			name = p.Name
		}
		return a, name, nil
	}
	if strings.EqualFold(target, n.pki.Load().Creds.Cert.Details.Name) {
		return netip.Addr{}, "", fmt.Errorf("%s is this host", target)
	}
	var fold []PeerInfo
	for _, p := range n.Peers() {
		if p.Name == target {
			return p.VpnIP, p.Name, nil
		}
		if strings.EqualFold(p.Name, target) {
			fold = append(fold, p)
		}
	}
	if len(fold) == 1 {
		return fold[0].VpnIP, fold[0].Name, nil
	}
	return netip.Addr{}, "", &unknownNameError{target}
}

// unknownNameError is ResolveHost's error for a name no peer of ours carries; the control
// server then asks the lighthouses (names.go).
type unknownNameError struct{ name string }

func (e *unknownNameError) Error() string {
	return fmt.Sprintf("unknown host %s: no tunnel to a host of that name "+
		"(names come from peers' certificates; static_host_map knows only VPN IPs, so use the VPN IP)", e.name)
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// ControlClient talks to a daemon's control socket.
type ControlClient struct {
	Path    string
	Timeout time.Duration // whole-request deadline; 0 means none
}

// Do sends req and calls each for every response line, up to and including the last. An
// Error in the last line is returned as an error.
func (c ControlClient) Do(ctx context.Context, req ControlRequest, each func(ControlResponse)) error {
	path := c.Path
	if path == "" {
		path = DefaultControlPath
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%s: permission denied (the control socket is root-only: run with sudo)", path)
		}
		return fmt.Errorf("%w: %s: %v", ErrControlUnavailable, path, unwrapSyscall(err))
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if c.Timeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(c.Timeout))
	}
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("control socket %s: the daemon closed the connection early: %w", path, err)
		}
		var resp ControlResponse
		if err := json.Unmarshal(line, &resp); err != nil {
			return fmt.Errorf("control socket %s: bad response: %w", path, err)
		}
		if !resp.More && resp.Error != "" {
			return errors.New(resp.Error)
		}
		each(resp)
		if !resp.More {
			return nil
		}
	}
}

func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}
