package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshnode/meshnode/firewall"
	"github.com/meshnode/meshnode/lighthouse"
)

// Config is a node's YAML configuration. The keys are Nebula's (up to 1.11), so a Nebula
// config works unchanged; sections of our own sit beside them. Unknown keys are errors, never
// ignored. Nebula keys meshnode accepts but does not act on have no field here: they are in
// the Nebula key table (keys.go), which warns about each one at load.
type Config struct {
	PKI           PKIConfig           `yaml:"pki"`
	StaticHostMap map[string]HostList `yaml:"static_host_map"`
	StaticMap     StaticMapConfig     `yaml:"static_map"`
	Lighthouse    LighthouseConfig    `yaml:"lighthouse"`
	Listen        ListenConfig        `yaml:"listen"`
	Punchy        PunchyConfig        `yaml:"punchy"`
	Cipher        string              `yaml:"cipher"`
	Tun           TunConfig           `yaml:"tun"`
	Logging       LoggingConfig       `yaml:"logging"`
	Firewall      firewall.Config     `yaml:"firewall"`
	Stats         StatsConfig         `yaml:"stats"`
	Handshakes    HandshakesConfig    `yaml:"handshakes"`
	Timers        TimersConfig        `yaml:"timers"`
	Tunnels       TunnelsConfig       `yaml:"tunnels"`
	Relay         RelayConfig         `yaml:"relay"`
	Routines      int                 `yaml:"routines"`
	Renewal       RenewalConfig       `yaml:"renewal"`
	Enroll        EnrollConfig        `yaml:"enroll"`
	Control       ControlConfig       `yaml:"control"`
	LocalRange    string              `yaml:"local_range"`
	Preferred     []string            `yaml:"preferred_ranges"`

	// path is where the config was read from, for error messages and relative paths.
	path string
	// listenRoutines: routines came from Nebula's deprecated listen.routines.
	listenRoutines bool
	// Warnings collects non-fatal problems found while loading (unsupported keys in use).
	Warnings []string `yaml:"-"`
}

// PKIConfig holds the node's identity and trust anchors. Each of CA, Cert and Key is a file
// path or inline PEM (a value containing "-----BEGIN" is PEM), as in Nebula.
type PKIConfig struct {
	CA                string   `yaml:"ca"`
	Cert              string   `yaml:"cert"`
	Key               string   `yaml:"key"`
	Blocklist         []string `yaml:"blocklist"`
	Blacklist         []string `yaml:"blacklist"` // Nebula's deprecated alias
	DisconnectInvalid *bool    `yaml:"disconnect_invalid"`
	// InitiatingVersion is the certificate version handshakes start with when pki.cert holds
	// a v1 and a v2 certificate (Nebula 1.10+); 0 means v1 if a v1 certificate is held.
	InitiatingVersion int `yaml:"initiating_version"`
}

// StaticMapConfig is how names in static_host_map are resolved (Nebula 1.8's keys).
type StaticMapConfig struct {
	Network       string        `yaml:"network"`        // ip4 (default), ip6 or ip (both)
	LookupTimeout time.Duration `yaml:"lookup_timeout"` // per name; default 250ms
}

// HostList is one or more "host:port" underlay addresses; YAML may give a string or a list.
type HostList []string

// UnmarshalYAML accepts a single string as well as a list.
func (h *HostList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*h = HostList{n.Value}
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*h = l
	return nil
}

// LighthouseConfig is Nebula's lighthouse section: the lighthouses to report to and query,
// or (am_lighthouse) this node's role as one.
type LighthouseConfig struct {
	AmLighthouse      bool      `yaml:"am_lighthouse"`
	ServeDNS          bool      `yaml:"serve_dns"`
	DNS               DNSConfig `yaml:"dns"`
	Interval          int       `yaml:"interval"`
	Hosts             []string  `yaml:"hosts"`
	RemoteAllowList   yaml.Node `yaml:"remote_allow_list"`
	RemoteAllowRanges yaml.Node `yaml:"remote_allow_ranges"`
	LocalAllowList    yaml.Node `yaml:"local_allow_list"`
	AdvertiseAddrs    []string  `yaml:"advertise_addrs"`
}

// DNSConfig is where a lighthouse serves DNS (lighthouse.serve_dns).
type DNSConfig struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
}

// ListenConfig is the underlay socket.
type ListenConfig struct {
	Host          string `yaml:"host"`
	Port          int    `yaml:"port"`
	Batch         int    `yaml:"batch"`
	ReadBuffer    int    `yaml:"read_buffer"`
	WriteBuffer   int    `yaml:"write_buffer"`
	SendRecvError string `yaml:"send_recv_error"`
	// AcceptRecvError is whose recv_error messages we act on: always, never or private.
	AcceptRecvError string `yaml:"accept_recv_error"`
	// SoMark tags our outgoing datagrams (SO_MARK) for policy routing; 0 sets none.
	SoMark int64 `yaml:"so_mark"`
	// Routines is Nebula's deprecated form of the top-level routines, used when that is unset.
	Routines int `yaml:"routines"`
}

// PunchyConfig is Nebula's NAT punching section (parsed; punching needs lighthouses).
type PunchyConfig struct {
	Punch   bool          `yaml:"punch"`
	Respond bool          `yaml:"respond"`
	Delay   time.Duration `yaml:"delay"`
	// RespondDelay is the wait before punchy.respond's handshake back (default 5s).
	RespondDelay time.Duration `yaml:"respond_delay"`
}

// TunConfig describes the TUN device.
type TunConfig struct {
	Disabled           bool          `yaml:"disabled"`
	Dev                string        `yaml:"dev"`
	DropLocalBroadcast bool          `yaml:"drop_local_broadcast"`
	DropMulticast      bool          `yaml:"drop_multicast"`
	TxQueue            int           `yaml:"tx_queue"`
	MTU                int           `yaml:"mtu"`
	Routes             []TunRoute    `yaml:"routes"`        // parts of the overlay with their own MTU
	UnsafeRoutes       []UnsafeRoute `yaml:"unsafe_routes"` // networks behind gateways (routes.go)
	// UseSystemRouteTable is Nebula's alternative to unsafe_routes (gateways read from the
	// kernel's routes); refused, so a config that relies on it does not half work.
	UseSystemRouteTable bool  `yaml:"use_system_route_table"`
	Offload             *bool `yaml:"offload"` // TSO/checksum offloads; default true
	// PriorityQueue gives small packets a lane of their own (cmd/meshnode); default true.
	PriorityQueue *bool `yaml:"priority_queue"`
}

// LoggingConfig selects log level and format.
type LoggingConfig struct {
	Level            string `yaml:"level"`
	Format           string `yaml:"format"`
	DisableTimestamp bool   `yaml:"disable_timestamp"`
}

// StatsConfig enables the Prometheus endpoint. Nebula's other stats keys (graphite's,
// namespace, ...) are accepted and ignored through the key table.
type StatsConfig struct {
	Type   string `yaml:"type"`
	Listen string `yaml:"listen"`
	Path   string `yaml:"path"`
}

// HandshakesConfig tunes handshake retries and the queue of packets waiting for a tunnel.
type HandshakesConfig struct {
	TryInterval   time.Duration `yaml:"try_interval"`
	Retries       int           `yaml:"retries"`
	TriggerBuffer int           `yaml:"trigger_buffer"`
	// Our additions: bounds on handshake state kept for unauthenticated senders.
	MaxPending    int     `yaml:"max_pending"`
	PerSourceRate float64 `yaml:"per_source_rate"`
	// MaxClockSkew is how far ahead of our clock a msg1's Time may be.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// Msg1Rate is how many msg1s a second, from all sources together, the responder may
	// verify and answer: it bounds the CPU a handshake flood can take. 0 (the default) is
	// automatic: a share of the cores over the measured cost of a msg1 (hsqueue.go).
	Msg1Rate int `yaml:"msg1_rate"`
}

// TimersConfig are Nebula's liveness timers.
type TimersConfig struct {
	ConnectionAliveInterval time.Duration `yaml:"connection_alive_interval"`
	PendingDeletionInterval time.Duration `yaml:"pending_deletion_interval"`
}

// TunnelsConfig drops tunnels that carried no traffic for a while (Nebula 1.8+'s keys).
type TunnelsConfig struct {
	DropInactive      bool          `yaml:"drop_inactive"`
	InactivityTimeout time.Duration `yaml:"inactivity_timeout"`
}

// RelayConfig is Nebula's relay section.
type RelayConfig struct {
	AmRelay   bool     `yaml:"am_relay"`
	Relays    []string `yaml:"relays"`
	UseRelays *bool    `yaml:"use_relays"`
}

// RenewalConfig is our own section: where the CA service is and when to renew. `meshnode
// enroll` writes it; with url empty the node never renews (certs made by hand).
type RenewalConfig struct {
	URL string `yaml:"url"` // CA service, e.g. https://ca.example:8443
	Pin string `yaml:"pin"` // hex SHA-256 of the service's TLS certificate (DER)
	// ServiceKey is the service's X25519 public key (hex) that renewal requests prove
	// possession of our key to.
	ServiceKey string `yaml:"service_key"`
	// At is the fraction of the cert's lifetime after which it is renewed (default 2/3).
	At float64 `yaml:"at"`
	// Jitter spreads renewals of many hosts (default 5% of the lifetime, at most 10 min).
	Jitter time.Duration `yaml:"jitter"`
	// BlocklistInterval is how often the signed blocklist is fetched (default 60 s).
	BlocklistInterval time.Duration `yaml:"blocklist_interval"`
	// BlocklistPush keeps a long-poll open to the CA service so a revocation arrives at
	// once rather than at the next interval fetch (default true; the fetch stays as fallback).
	BlocklistPush *bool `yaml:"blocklist_push"`
	// StateFile keeps the renewal counter (default: pki.key + ".renewal").
	StateFile string `yaml:"state_file"`
}

// EnrollConfig is our own section: a first start from an enrollment token. While the pki
// files do not exist, the daemon enrolls with the token before it starts, as `meshnode
// enroll` does; once they exist the section is ignored (the token is spent by then).
type EnrollConfig struct {
	Token string `yaml:"token"` // as printed by `mesh-cert invite`
	// TokenFile holds the token instead (e.g. written by `mesh-cert invite -out`), so it
	// need not sit in the config. Exactly one of Token and TokenFile.
	TokenFile string `yaml:"token_file"`
	// Timeout bounds the wait for the CA service, retries included (default 5 min).
	Timeout time.Duration `yaml:"timeout"`
}

// Enabled reports whether the section asks for enrollment.
func (e EnrollConfig) Enabled() bool { return e.Token != "" || e.TokenFile != "" }

// ControlConfig is our own section: the daemon's local control socket, used by
// `meshnode status | ping | list | reload`.
type ControlConfig struct {
	Path     string `yaml:"path"`     // default /run/meshnode/meshnode.sock
	Disabled bool   `yaml:"disabled"` // no control socket at all
	// Mode is the socket's permission bits as an octal string (default "0600": root only).
	Mode string `yaml:"mode"`
}

// SocketMode parses control.mode (validated at load).
func (c ControlConfig) SocketMode() os.FileMode {
	m, err := strconv.ParseUint(c.Mode, 8, 32)
	if err != nil || c.Mode == "" {
		return DefaultControlMode
	}
	return os.FileMode(m)
}

// Defaults, in one place, with Nebula 1.6's values where it has them.
const (
	DefaultMTU                     = 1300
	DefaultTryInterval             = 100 * time.Millisecond
	DefaultRetries                 = 10
	DefaultTriggerBuffer           = 64
	DefaultMaxPending              = 4096
	DefaultPerSourceRate           = 20 // handshake msg1 per second per source address
	DefaultMaxClockSkew            = 15 * time.Minute
	DefaultConnectionAliveInterval = 5 * time.Second
	DefaultPendingDeletionInterval = 10 * time.Second
	DefaultInactivityTimeout       = 10 * time.Minute
	DefaultEnrollTimeout           = 5 * time.Minute
	DefaultBatch                   = 64
	DefaultSocketBuffer            = 4 << 20
	DefaultPunchRespondDelay       = 5 * time.Second
	DefaultStaticLookupTimeout     = 250 * time.Millisecond
)

// LoadConfig reads and validates a config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(b, path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ParseConfig decodes and validates YAML. name labels errors (usually the file path).
func ParseConfig(b []byte, name string) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := &Config{path: name}
	// Keys are checked on the tree, not by the decoder: the Nebula key table accepts keys
	// Config has no field for, and an unknown key gets a suggestion.
	warnings, errs := scanKeys(name, &root)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if root.Kind != 0 {
		if err := root.Decode(c); err != nil {
			return nil, explainYAMLError(name, &root, err)
		}
	}
	c.Warnings = warnings
	c.applyDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

var yamlLineRE = regexp.MustCompile(`line (\d+): (.*)`)
var unknownFieldRE = regexp.MustCompile(`field (\S+) not found in type`)

// explainYAMLError turns yaml.v3's type-oriented messages into ones naming the file, line and
// key path the user wrote ("node.yml:7: pki.cartt: unknown key").
func explainYAMLError(name string, root *yaml.Node, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %w", name, err)
	}
	paths := map[int]string{}
	indexKeyPaths(root, "", paths)
	var msgs []string
	for _, e := range te.Errors {
		m := yamlLineRE.FindStringSubmatch(e)
		if m == nil {
			msgs = append(msgs, fmt.Sprintf("%s: %s", name, e))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		detail := m[2]
		if u := unknownFieldRE.FindStringSubmatch(detail); u != nil {
			detail = fmt.Sprintf("unknown key %q", u[1])
		}
		if p, ok := paths[line]; ok {
			msgs = append(msgs, fmt.Sprintf("%s:%d: %s: %s", name, line, p, detail))
		} else {
			msgs = append(msgs, fmt.Sprintf("%s:%d: %s", name, line, detail))
		}
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// indexKeyPaths records, for each line holding a mapping key or sequence item, its dotted path.
func indexKeyPaths(n *yaml.Node, prefix string, out map[int]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexKeyPaths(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			out[k.Line] = p
			if _, seen := out[v.Line]; !seen {
				out[v.Line] = p
			}
			indexKeyPaths(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			if _, seen := out[c.Line]; !seen {
				out[c.Line] = p
			}
			indexKeyPaths(c, p, out)
		}
	}
}

func (c *Config) applyDefaults() {
	if c.Tun.MTU == 0 {
		c.Tun.MTU = DefaultMTU
	}
	if c.Tun.Dev == "" {
		c.Tun.Dev = "mesh0"
	}
	if c.Tun.Offload == nil {
		on := true
		c.Tun.Offload = &on
	}
	if c.Tun.PriorityQueue == nil {
		on := true
		c.Tun.PriorityQueue = &on
	}
	if c.Handshakes.TryInterval == 0 {
		c.Handshakes.TryInterval = DefaultTryInterval
	}
	if c.Handshakes.Retries == 0 {
		c.Handshakes.Retries = DefaultRetries
	}
	if c.Handshakes.TriggerBuffer == 0 {
		c.Handshakes.TriggerBuffer = DefaultTriggerBuffer
	}
	if c.Handshakes.MaxPending == 0 {
		c.Handshakes.MaxPending = DefaultMaxPending
	}
	if c.Handshakes.PerSourceRate == 0 {
		c.Handshakes.PerSourceRate = DefaultPerSourceRate
	}
	if c.Handshakes.MaxClockSkew == 0 {
		c.Handshakes.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.Timers.ConnectionAliveInterval == 0 {
		c.Timers.ConnectionAliveInterval = DefaultConnectionAliveInterval
	}
	if c.Timers.PendingDeletionInterval == 0 {
		c.Timers.PendingDeletionInterval = DefaultPendingDeletionInterval
	}
	if c.Tunnels.InactivityTimeout == 0 {
		c.Tunnels.InactivityTimeout = DefaultInactivityTimeout
	}
	if c.Listen.Host == "" {
		c.Listen.Host = "0.0.0.0"
	}
	if c.Listen.Batch == 0 {
		c.Listen.Batch = DefaultBatch
	}
	c.Listen.SendRecvError = recvErrorSetting(c.Listen.SendRecvError)
	c.Listen.AcceptRecvError = recvErrorSetting(c.Listen.AcceptRecvError)
	if c.Punchy.RespondDelay == 0 {
		c.Punchy.RespondDelay = DefaultPunchRespondDelay
	}
	if c.StaticMap.Network == "" {
		c.StaticMap.Network = "ip4"
	}
	if c.StaticMap.LookupTimeout == 0 {
		c.StaticMap.LookupTimeout = DefaultStaticLookupTimeout
	}
	if c.Logging.Level == "" {
		c.Logging.Level = "info"
	}
	if c.Logging.Format == "" {
		c.Logging.Format = "text"
	}
	if c.Lighthouse.DNS.Host == "" {
		c.Lighthouse.DNS.Host = "0.0.0.0"
	}
	if c.Lighthouse.DNS.Port == 0 {
		c.Lighthouse.DNS.Port = 53
	}
	if c.Stats.Path == "" {
		c.Stats.Path = "/metrics"
	}
	if c.Renewal.At == 0 {
		c.Renewal.At = 2.0 / 3.0
	}
	if c.Renewal.BlocklistInterval == 0 {
		c.Renewal.BlocklistInterval = time.Minute
	}
	if c.Renewal.BlocklistPush == nil {
		t := true
		c.Renewal.BlocklistPush = &t
	}
	if c.Enroll.Timeout == 0 {
		c.Enroll.Timeout = DefaultEnrollTimeout
	}
	if c.Routines == 0 {
		// Nebula: the top-level key wins; listen.routines counts only without it.
		c.Routines = max(c.Listen.Routines, 1)
		c.listenRoutines = true
	}
	if c.PKI.DisconnectInvalid == nil {
		// Unlike Nebula 1.6 we cut tunnels of certs that became invalid by default
		// (SECURITY-NOTES: blocklisted hosts kept their tunnels).
		t := true
		c.PKI.DisconnectInvalid = &t
	}
}

// validate reports every problem it finds, each with its key path.
func (c *Config) validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.PKI.CA == "" {
		bad("pki.ca", "required (path to the CA certificate bundle, or inline PEM)")
	}
	if c.PKI.Cert == "" {
		bad("pki.cert", "required (path to this host's certificate, or inline PEM)")
	}
	if c.PKI.Key == "" {
		bad("pki.key", "required (path to this host's private key, or inline PEM)")
	}
	if v := c.PKI.InitiatingVersion; v != 0 && v != 1 && v != 2 {
		bad("pki.initiating_version", "%d is not a certificate version (1 or 2)", v)
	}
	for i, fp := range c.Blocklist() {
		if len(fp) != 64 || strings.Trim(strings.ToLower(fp), "0123456789abcdef") != "" {
			bad(fmt.Sprintf("pki.blocklist[%d]", i), "%q is not a certificate fingerprint (64 hex digits)", fp)
		}
	}
	if c.Cipher != "" && c.Cipher != "aes" && c.Cipher != "chachapoly" {
		bad("cipher", "%q is not supported (use aes or chachapoly)", c.Cipher)
	}
	if c.Listen.Port < 0 || c.Listen.Port > 65535 {
		bad("listen.port", "%d is out of range 0-65535", c.Listen.Port)
	}
	if _, err := netip.ParseAddr(c.Listen.Host); err != nil && c.Listen.Host != "[::]" {
		if ips, lerr := net.LookupIP(c.Listen.Host); lerr != nil || len(ips) == 0 {
			bad("listen.host", "%q is not an IP address", c.Listen.Host)
		}
	}
	for key, v := range map[string]string{"listen.send_recv_error": c.Listen.SendRecvError, "listen.accept_recv_error": c.Listen.AcceptRecvError} {
		switch v {
		case "always", "never", "private":
		default:
			bad(key, "%q must be always, never or private", v)
		}
	}
	if c.Listen.SoMark < 0 || c.Listen.SoMark > 1<<32-1 {
		bad("listen.so_mark", "%d is out of range 0-4294967295", c.Listen.SoMark)
	}
	if c.Listen.Routines < 0 || c.Listen.Routines > 64 {
		bad("listen.routines", "%d is out of range 1-64", c.Listen.Routines)
	}
	switch {
	case c.Listen.Routines != 0 && c.listenRoutines:
		c.Warnings = append(c.Warnings, "listen.routines is deprecated, as in Nebula: use the top-level routines")
	case c.Listen.Routines != 0:
		c.Warnings = append(c.Warnings, "listen.routines has no effect in meshnode when routines is set (as in Nebula); ignored")
	}
	if c.Punchy.RespondDelay < 0 {
		bad("punchy.respond_delay", "%s is negative", c.Punchy.RespondDelay)
	}
	switch c.StaticMap.Network {
	case "ip4", "ip6", "ip":
	default:
		bad("static_map.network", "%q must be ip4, ip6 or ip", c.StaticMap.Network)
	}
	if c.StaticMap.LookupTimeout < 0 {
		bad("static_map.lookup_timeout", "%s is negative", c.StaticMap.LookupTimeout)
	}
	if c.Tun.MTU < 576 || c.Tun.MTU > 9000 {
		bad("tun.mtu", "%d is out of range 576-9000", c.Tun.MTU)
	}
	if c.Tun.UseSystemRouteTable {
		bad("tun.use_system_route_table", "not supported by meshnode; list the networks and their gateways in tun.unsafe_routes")
	}
	if _, err := parseRoutes(&c.Tun, netip.Prefix{}, netip.Addr{}); err != nil {
		errs = append(errs, err) // checked against our network again when the node starts
	}
	switch strings.ToLower(c.Logging.Level) {
	case "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic":
	default:
		bad("logging.level", "%q must be trace, debug, info, warning or error", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		bad("logging.format", "%q must be text or json", c.Logging.Format)
	}
	switch c.Stats.Type {
	case "", "prometheus":
		if c.Stats.Type == "prometheus" && c.Stats.Listen == "" {
			bad("stats.listen", "required when stats.type is prometheus (e.g. 127.0.0.1:8080)")
		}
	case "graphite":
		// Not sending metrics is the safe side: warn, as for the other ignored keys.
		c.Warnings = append(c.Warnings, "stats.type: graphite has no effect in meshnode (graphite is not supported: no metrics are sent; use prometheus); ignored")
	default:
		bad("stats.type", "%q must be prometheus", c.Stats.Type)
	}
	for vpn, addrs := range c.StaticHostMap {
		key := fmt.Sprintf("static_host_map[%q]", vpn)
		if _, err := netip.ParseAddr(vpn); err != nil {
			bad(key, "%q is not an IP address", vpn)
		}
		if len(addrs) == 0 {
			bad(key, "needs at least one host:port")
		}
		for _, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				bad(key, "%q is not host:port", a)
			}
		}
	}
	if c.Lighthouse.AmLighthouse && c.Listen.Port == 0 {
		c.Warnings = append(c.Warnings, "lighthouse.am_lighthouse with listen.port 0: hosts cannot be told a fixed port for this lighthouse")
	}
	if c.Lighthouse.ServeDNS && !c.Lighthouse.AmLighthouse {
		c.Warnings = append(c.Warnings, "lighthouse.serve_dns: only a lighthouse (am_lighthouse: true) serves DNS; ignored")
	}
	if c.Lighthouse.DNS.Port < 0 || c.Lighthouse.DNS.Port > 65535 {
		bad("lighthouse.dns.port", "%d is out of range 0-65535", c.Lighthouse.DNS.Port)
	}
	for i, h := range c.Lighthouse.Hosts {
		if _, ok := c.StaticHostMap[h]; !ok {
			bad(fmt.Sprintf("lighthouse.hosts[%d]", i), "%s has no static_host_map entry", h)
		}
	}
	if c.Handshakes.Retries < 1 || c.Handshakes.Retries > 100 {
		bad("handshakes.retries", "%d is out of range 1-100", c.Handshakes.Retries)
	}
	if c.Handshakes.TryInterval < time.Millisecond {
		bad("handshakes.try_interval", "%s is too short", c.Handshakes.TryInterval)
	}
	if c.Handshakes.Msg1Rate < 0 || c.Handshakes.Msg1Rate > 1000000 {
		bad("handshakes.msg1_rate", "%d is out of range 0-1000000 (0: automatic)", c.Handshakes.Msg1Rate)
	}
	if c.Handshakes.MaxClockSkew < time.Second {
		bad("handshakes.max_clock_skew", "%s is too short (peers' clocks are never that close; 15m is the default)", c.Handshakes.MaxClockSkew)
	}
	if c.Renewal.At <= 0 || c.Renewal.At >= 1 {
		bad("renewal.at", "%v must be a fraction between 0 and 1 (e.g. 0.66)", c.Renewal.At)
	}
	if c.Renewal.BlocklistInterval < time.Second {
		// Every host asks its lighthouses this often, with or without renewal.url.
		bad("renewal.blocklist_interval", "%s is too short (at least 1s)", c.Renewal.BlocklistInterval)
	}
	if c.Enroll.Token != "" && c.Enroll.TokenFile != "" {
		bad("enroll", "set token or token_file, not both")
	}
	if c.Enroll.Timeout < 0 {
		bad("enroll.timeout", "%s is negative", c.Enroll.Timeout)
	}
	if c.Enroll.Enabled() {
		for _, kv := range [][2]string{{"pki.ca", c.PKI.CA}, {"pki.cert", c.PKI.Cert}, {"pki.key", c.PKI.Key}} {
			if strings.Contains(kv[1], "-----BEGIN") {
				bad(kv[0], "the enroll section writes this file: give a path, not inline PEM")
			}
		}
	}
	if c.Renewal.URL != "" && c.Renewal.Pin == "" {
		bad("renewal.pin", "required with renewal.url (the CA service's TLS fingerprint)")
	}
	if c.Control.Mode != "" {
		if m, err := strconv.ParseUint(c.Control.Mode, 8, 32); err != nil || m > 0o777 {
			bad("control.mode", "%q is not octal permission bits (e.g. \"0600\")", c.Control.Mode)
		}
	}
	if c.Routines < 1 || c.Routines > 64 {
		bad("routines", "%d is out of range 1-64", c.Routines)
	}
	for i, p := range c.PreferredRanges() {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad(fmt.Sprintf("preferred_ranges[%d]", i), "%q is not a CIDR", p)
		}
	}
	if _, err := lighthouse.ParseRemoteAllowList("lighthouse.remote_allow_list", &c.Lighthouse.RemoteAllowList,
		"lighthouse.remote_allow_ranges", &c.Lighthouse.RemoteAllowRanges); err != nil {
		errs = append(errs, err) // so -test catches what New would refuse
	}
	if _, err := lighthouse.ParseLocalAllowList("lighthouse.local_allow_list", &c.Lighthouse.LocalAllowList); err != nil {
		errs = append(errs, err)
	}
	if _, err := firewall.New(c.Firewall, firewall.Options{}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// recvErrorSetting reads send_recv_error and accept_recv_error: Nebula also takes a boolean
// (true is always, false never); empty is the default, always.
func recvErrorSetting(v string) string {
	switch strings.ToLower(v) {
	case "", "true", "yes", "on", "y":
		return "always"
	case "false", "no", "off", "n":
		return "never"
	}
	return v
}

// Blocklist merges pki.blocklist with the deprecated pki.blacklist.
func (c *Config) Blocklist() []string {
	return append(append([]string(nil), c.PKI.Blocklist...), c.PKI.Blacklist...)
}

// PreferredRanges merges preferred_ranges with the legacy local_range.
func (c *Config) PreferredRanges() []string {
	r := append([]string(nil), c.Preferred...)
	if c.LocalRange != "" {
		r = append(r, c.LocalRange)
	}
	return r
}

// Path is the file the config came from.
func (c *Config) Path() string { return c.path }

// ReadPEMSetting returns inline PEM as is, or the contents of the file a setting names.
func ReadPEMSetting(key, v string) ([]byte, error) {
	if strings.Contains(v, "-----BEGIN") {
		return []byte(v), nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return b, nil
}
