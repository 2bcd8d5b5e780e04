package lighthouse

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// ErrNotReply is returned by Remotes.Apply for anything but a HostQueryReply.
var ErrNotReply = errors.New("lighthouse: not a HostQueryReply")

// RemotesOptions are the client's filters for addresses lighthouses hand out. The zero value
// keeps 10 per family and allows everything usable.
type RemotesOptions struct {
	// OwnVPNNet: IPv4 addresses inside it are overlay addresses and dropped.
	OwnVPNNet netip.Prefix
	// RemoteAllowList is lighthouse.remote_allow_list (+ remote_allow_ranges).
	RemoteAllowList *RemoteAllowList
	// MaxPerFamily caps each lighthouse's IPv4 and IPv6 contribution (0: 10).
	MaxPerFamily int
	// AllowLoopback keeps loopback addresses (a mesh on one machine).
	AllowLoopback bool
}

// Remotes is one host's candidate underlay addresses on the client: the static_host_map
// entries, which are never replaced, and one contribution per lighthouse, which that
// lighthouse's next reply replaces. It is safe for concurrent use.
type Remotes struct {
	vpn    netip.Addr
	filter addrFilter
	static []netip.AddrPort

	mu   sync.Mutex
	byLH map[netip.Addr]contribution
}

type contribution struct {
	v4, v6 []netip.AddrPort
	relays []netip.Addr
}

// NewRemotes returns the candidates for host vpn, starting with its static_host_map entries.
func NewRemotes(vpn netip.Addr, static []netip.AddrPort, opts RemotesOptions) *Remotes {
	if opts.MaxPerFamily <= 0 {
		opts.MaxPerFamily = DefaultMaxPerFamily
	}
	st := make([]netip.AddrPort, 0, len(static))
	for _, ap := range static {
		st = append(st, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return &Remotes{
		vpn:    vpn.Unmap(),
		filter: addrFilter{opts.OwnVPNNet, opts.RemoteAllowList, opts.MaxPerFamily, opts.AllowLoopback},
		static: st,
		byLH:   make(map[netip.Addr]contribution),
	}
}

// Apply replaces lighthouse's contribution with the addresses and relays of its reply m.
// The caller must already have checked that the sender is one of lighthouse.hosts; Apply
// checks that the reply is about this host.
func (r *Remotes) Apply(lighthouse netip.Addr, m *Meta) error {
	if m.Type != HostQueryReply {
		return fmt.Errorf("%w: %v", ErrNotReply, m.Type)
	}
	if m.VpnIP.Unmap() != r.vpn {
		return fmt.Errorf("%w: reply about %v applied to %v", ErrWrongHost, m.VpnIP, r.vpn)
	}
	v4, v6 := r.filter.apply(r.vpn, [2][]netip.AddrPort{m.V4, m.V6}, nil, nil)
	c := contribution{v4: v4, v6: v6,
		relays: filterRelays(nil, r.vpn, m.Relays, r.filter.ownNet, r.filter.max)}
	r.mu.Lock()
	r.byLH[lighthouse.Unmap()] = c
	r.mu.Unlock()
	return nil
}

// ForgetLighthouse drops what lighthouse contributed.
func (r *Remotes) ForgetLighthouse(lighthouse netip.Addr) {
	r.mu.Lock()
	delete(r.byLH, lighthouse.Unmap())
	r.mu.Unlock()
}

// Candidates returns every known address, static ones included, deduplicated and in the
// order handshakes should try them (SortCandidates).
func (r *Remotes) Candidates(preferred []netip.Prefix) []netip.AddrPort {
	r.mu.Lock()
	all := slices.Clone(r.static)
	for _, c := range r.byLH {
		all = append(all, c.v4...)
		all = append(all, c.v6...)
	}
	r.mu.Unlock()
	return SortCandidates(all, preferred)
}

// Relays returns the relays the host advertised through any lighthouse, deduplicated and
// sorted.
func (r *Remotes) Relays() []netip.Addr {
	r.mu.Lock()
	var out []netip.Addr
	for _, c := range r.byLH {
		out = append(out, c.relays...)
	}
	r.mu.Unlock()
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// Static returns the static_host_map entries.
func (r *Remotes) Static() []netip.AddrPort { return slices.Clone(r.static) }

// SortCandidates returns addrs deduplicated and ordered as Nebula orders handshake targets
// (NEBULA-WIRE §5.8): addresses inside a preferred range first; then IPv6 before IPv4;
// among IPv4, public before private; then by IP, then by port. Mapped IPv4 addresses count
// as IPv4. addrs is not modified.
func SortCandidates(addrs []netip.AddrPort, preferred []netip.Prefix) []netip.AddrPort {
	out := make([]netip.AddrPort, len(addrs))
	for i, ap := range addrs {
		out[i] = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	isPreferred := func(a netip.Addr) bool {
		for _, p := range preferred {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	// rank: lower sorts first.
	rank := func(a netip.Addr) int {
		r := 0
		if !isPreferred(a) {
			r += 4
		}
		if a.Is4() {
			r += 2
			if a.IsPrivate() {
				r++
			}
		}
		return r
	}
	slices.SortFunc(out, func(x, y netip.AddrPort) int {
		if d := rank(x.Addr()) - rank(y.Addr()); d != 0 {
			return d
		}
		return x.Compare(y)
	})
	return slices.Compact(out)
}

// Interface is a local network interface and its addresses, as the runtime enumerates them.
type Interface struct {
	Name  string
	Addrs []netip.Addr
}

// LocalAddrs returns the addresses of the interfaces local_allow_list's `interfaces` rules
// allow (the CIDR rules are applied by HostUpdate).
func LocalAddrs(ifs []Interface, allow *AllowList) []netip.Addr {
	var out []netip.Addr
	for _, i := range ifs {
		if allow.AllowName(i.Name) {
			out = append(out, i.Addrs...)
		}
	}
	return out
}

// HostUpdate builds the HostUpdateNotification a client sends each lighthouse (NEBULA-WIRE
// §5.3): first the advertise_addrs (port 0 replaced by port, those inside ownNet dropped),
// then each local address that is not loopback or link-local, passes allow
// (local_allow_list) and, for IPv4, is outside ownNet, with port; then relays. port is the
// port actually bound. Duplicates are dropped and each family is capped at 10, all a 1.6
// lighthouse looks at.
func HostUpdate(own netip.Addr, advertise []netip.AddrPort, local []netip.Addr, port uint16, ownNet netip.Prefix, allow *AllowList, relays []netip.Addr) *Meta {
	m := &Meta{Type: HostUpdateNotification, VpnIP: own.Unmap()}
	seen := make(map[netip.AddrPort]bool)
	add := func(ap netip.AddrPort) {
		a := ap.Addr()
		if a.Is4() && ownNet.IsValid() && ownNet.Contains(a) || seen[ap] {
			return
		}
		list := &m.V6
		if a.Is4() {
			list = &m.V4
		}
		if len(*list) >= DefaultMaxPerFamily {
			return
		}
		seen[ap] = true
		*list = append(*list, ap)
	}
	for _, ap := range advertise {
		a := ap.Addr().Unmap()
		if !a.IsValid() || a.IsUnspecified() {
			continue
		}
		p := ap.Port()
		if p == 0 {
			p = port
		}
		add(netip.AddrPortFrom(a, p))
	}
	for _, a := range local {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || !allow.Allow(a) {
			continue
		}
		add(netip.AddrPortFrom(a.WithZone(""), port))
	}
	if len(relays) > 0 {
		m.Relays = slices.Clone(relays)
	}
	return m
}
