package lighthouse

import (
	"container/heap"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxPerFamily is how many reported IPv4 (and IPv6, and relay) entries a 1.6
// lighthouse keeps per host (MaxRemotes).
const DefaultMaxPerFamily = 10

// Errors from Book.Update.
var (
	// ErrWrongHost: the update names a VPN IP other than the sender's. Only the host holding
	// a VPN IP may say where it is.
	ErrWrongHost = errors.New("lighthouse: update for another host's VPN IP")
	// ErrNotUpdate: the message is not a HostUpdateNotification.
	ErrNotUpdate = errors.New("lighthouse: not a HostUpdateNotification")
)

// BookOptions configure a Book. The zero value is usable.
type BookOptions struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxPerFamily caps the reported IPv4, IPv6 and relay lists of each host (0: 10).
	MaxPerFamily int
	// RemoteAllowList filters reported addresses (nil allows all).
	RemoteAllowList *RemoteAllowList
	// OwnVPNNet is the lighthouse's overlay network; reported IPv4 addresses inside it are
	// dropped since they can only be overlay addresses, never a path to the host.
	OwnVPNNet netip.Prefix
	// TTL forgets a host not updated within it; 0 never expires (Nebula 1.6 forgets a host
	// only when its tunnel closes, which the runtime reports with Forget). A lighthouse
	// cannot know its clients' lighthouse.interval (10 s by default, 60 s in Nebula's example
	// config), so a TTL should be at least three times the largest interval in use.
	TTL time.Duration
	// AllowLoopback keeps reported loopback addresses, for meshes that live on one machine
	// (the runtime sets it when it listens on a loopback address).
	AllowLoopback bool
}

// Book is the address book a lighthouse keeps: per VPN IP, the address the host's tunnel
// comes from ("learned") and the lists the host reported itself. It is safe for concurrent use.
type Book struct {
	opts BookOptions
	// m maps VPN IP to *bookEntry. Entries are immutable once stored, so lookups (the hot,
	// parallel part) take no lock and an update swaps in a new entry.
	m sync.Map
	n atomic.Int64

	// expiry holds one record per host, ordered by when the host was last known to be
	// updated; Expire pops only the records whose TTL ran out and requeues the ones whose
	// host reported since, so a sweep costs what is due, not a walk over the book.
	mu     sync.Mutex
	expiry expiryHeap
}

type bookEntry struct {
	learned netip.AddrPort // invalid when unknown
	v4, v6  []netip.AddrPort
	relays  []netip.Addr
	updated atomic.Int64 // unix ns; an update that changes nothing refreshes it in place
	rec     *expiryRec   // the host's record in Book.expiry, shared by its successive entries
}

// expiryRec is a host's place in Book.expiry. A record an entry no longer points at (the
// host was forgotten and came back with a new one) is dropped when it comes up.
type expiryRec struct {
	vpn netip.Addr
	at  int64 // unix ns: the update time it was queued with; guarded by Book.mu
}

type expiryHeap []*expiryRec

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(*expiryRec)) }
func (h *expiryHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return r
}

// NewBook returns an empty book.
func NewBook(opts BookOptions) *Book {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxPerFamily <= 0 {
		opts.MaxPerFamily = DefaultMaxPerFamily
	}
	return &Book{opts: opts}
}

// Usable reports whether an underlay address is worth dialling: a unicast, non-loopback,
// non-link-local address with a port. Hosts must not be able to point others at their own
// loopback or at multicast (reflection), and link-local needs a zone the wire cannot carry.
func Usable(ap netip.AddrPort) bool { return usable(ap, false) }

func usable(ap netip.AddrPort, loopback bool) bool {
	a := ap.Addr().Unmap()
	return a.IsValid() && ap.Port() != 0 && a.Zone() == "" &&
		!a.IsUnspecified() && (loopback || !a.IsLoopback()) && !a.IsMulticast() &&
		!a.IsLinkLocalUnicast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// addrFilter is what both a lighthouse and a client apply to addresses another host claims.
type addrFilter struct {
	ownNet   netip.Prefix
	allow    *RemoteAllowList
	max      int
	loopback bool
}

// apply unmaps every address before it is classified and checked, so an IPv4 rule of the
// allow list also judges ::ffff:a.b.c.d (Nebula #1786), and returns the usable v4 and v6
// lists, each capped at max.
func (f addrFilter) apply(vpn netip.Addr, lists [2][]netip.AddrPort, v4, v6 []netip.AddrPort) ([]netip.AddrPort, []netip.AddrPort) {
	for _, l := range lists {
		for _, ap := range l {
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			a := ap.Addr()
			if !usable(ap, f.loopback) || !f.allow.Allow(vpn, a) {
				continue
			}
			if a.Is4() {
				if f.ownNet.IsValid() && f.ownNet.Contains(a) || len(v4) >= f.max {
					continue
				}
				v4 = append(v4, ap)
			} else if len(v6) < f.max {
				v6 = append(v6, ap)
			}
		}
	}
	return v4, v6
}

// filterRelays keeps IPv4 VPN IPs other than the host itself (and, when the network is
// known, inside it), capped at max.
func filterRelays(out []netip.Addr, self netip.Addr, relays []netip.Addr, ownNet netip.Prefix, max int) []netip.Addr {
	for _, r := range relays {
		r = r.Unmap()
		if !r.Is4() || r.IsUnspecified() || r == self || (ownNet.IsValid() && !ownNet.Contains(r)) {
			continue
		}
		if len(out) == max {
			break
		}
		out = append(out, r)
	}
	return out
}

// Update applies a HostUpdateNotification m received over the tunnel with senderVPN, whose
// packets arrive from learned. It replaces what that host reported before. It refuses an
// update whose VpnIP is not the sender's own (ErrWrongHost) and any other message type.
// learned is kept as observed: it is where the host's packets really come from, so no allow
// list or usability filter applies to it.
func (b *Book) Update(senderVPN netip.Addr, learned netip.AddrPort, m *Meta) error {
	if m.Type != HostUpdateNotification {
		return fmt.Errorf("%w: %v", ErrNotUpdate, m.Type)
	}
	senderVPN = senderVPN.Unmap()
	// Nebula 1.10+ leaves the host out of an update sent on a v2 tunnel: it is the sender.
	// A host that is named must be the sender.
	if claim := m.VpnIP.Unmap(); claim.IsValid() && !claim.IsUnspecified() && claim != senderVPN {
		return fmt.Errorf("%w: %v claims %v", ErrWrongHost, senderVPN, m.VpnIP)
	}
	f := addrFilter{b.opts.OwnVPNNet, b.opts.RemoteAllowList, b.opts.MaxPerFamily, b.opts.AllowLoopback}
	// Filtered into buffers on the stack first: a host reports the same addresses every
	// interval (10 s for Nebula's default), and an update that changes nothing only
	// refreshes the entry's time, making no garbage (issue 18: 100,000 hosts are 10,000
	// updates a second).
	var buf4, buf6 [DefaultMaxPerFamily]netip.AddrPort
	var bufRelays [DefaultMaxPerFamily]netip.Addr
	v4, v6 := f.apply(senderVPN, [2][]netip.AddrPort{m.V4, m.V6}, buf4[:0], buf6[:0])
	relays := filterRelays(bufRelays[:0], senderVPN, m.Relays, b.opts.OwnVPNNet, b.opts.MaxPerFamily)
	var learnedAt netip.AddrPort
	if learned.Addr().IsValid() && learned.Port() != 0 {
		learnedAt = netip.AddrPortFrom(learned.Addr().Unmap(), learned.Port())
	}
	now := b.opts.Now().UnixNano()
	if v, ok := b.m.Load(senderVPN); ok {
		old := v.(*bookEntry)
		if old.learned == learnedAt && slices.Equal(old.v4, v4) && slices.Equal(old.v6, v6) && slices.Equal(old.relays, relays) {
			// Under mu, which Expire holds from its check to its delete, so the sweep never
			// drops an entry refreshed in between; an entry gone meanwhile (expired or
			// forgotten) is stored anew below.
			b.mu.Lock()
			if cur, ok := b.m.Load(senderVPN); ok && cur == v {
				old.updated.Store(now)
				b.mu.Unlock()
				return nil
			}
			b.mu.Unlock()
		}
	}
	e := &bookEntry{
		learned: learnedAt,
		v4:      cloneOrNil(v4),
		v6:      cloneOrNil(v6),
		relays:  cloneOrNil(relays),
	}
	e.updated.Store(now)
	if b.opts.TTL > 0 {
		if old, ok := b.m.Load(senderVPN); ok {
			e.rec = old.(*bookEntry).rec
		}
		if e.rec == nil {
			e.rec = &expiryRec{vpn: senderVPN, at: now}
			b.mu.Lock()
			heap.Push(&b.expiry, e.rec)
			b.mu.Unlock()
		}
	}
	if _, loaded := b.m.Swap(senderVPN, e); !loaded {
		b.n.Add(1)
	}
	return nil
}

// cloneOrNil copies s to the heap, nil when empty.
func cloneOrNil[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

func (b *Book) expired(e *bookEntry, now time.Time) bool {
	return b.opts.TTL > 0 && now.UnixNano()-e.updated.Load() > int64(b.opts.TTL)
}

// get returns a live entry.
func (b *Book) get(vpn netip.Addr) *bookEntry {
	v, ok := b.m.Load(vpn.Unmap())
	if !ok {
		return nil
	}
	e := v.(*bookEntry)
	if b.expired(e, b.opts.Now()) {
		return nil
	}
	return e
}

// fill writes a host's addresses into m the way a 1.6 lighthouse answers: the learned address
// first, then the reported ones, duplicates kept; then the relays.
func (e *bookEntry) fill(m *Meta) {
	// The lists are reused: a caller that answers many queries with one Meta allocates
	// nothing once they have grown (issue 18: a lighthouse's garbage per query).
	m.V4, m.V6, m.Relays = m.V4[:0], m.V6[:0], m.Relays[:0]
	if l := e.learned; l.Addr().Is4() {
		m.V4 = append(m.V4, l)
	} else if l.Addr().IsValid() {
		m.V6 = append(m.V6, l)
	}
	m.V4 = append(m.V4, e.v4...)
	m.V6 = append(m.V6, e.v6...)
	m.Relays = append(m.Relays, e.relays...)
}

// Lookup returns the HostQueryReply for a query about vpn, or false when the host is unknown
// (a 1.6 lighthouse then sends nothing).
func (b *Book) Lookup(vpn netip.Addr) (*Meta, bool) {
	m := new(Meta)
	return m, b.LookupInto(vpn, m)
}

// LookupInto is Lookup into m, reusing m's address lists; m is left alone when the host
// is unknown.
func (b *Book) LookupInto(vpn netip.Addr, m *Meta) bool {
	return b.fillInto(vpn, HostQueryReply, m)
}

// PunchNotification returns the HostPunchNotification a lighthouse sends to the queried host
// after answering querier, so the queried host punches towards the querier; false when the
// querier is unknown.
func (b *Book) PunchNotification(querier netip.Addr) (*Meta, bool) {
	m := new(Meta)
	return m, b.PunchNotificationInto(querier, m)
}

// PunchNotificationInto is PunchNotification into m, reusing m's address lists.
func (b *Book) PunchNotificationInto(querier netip.Addr, m *Meta) bool {
	return b.fillInto(querier, HostPunchNotification, m)
}

func (b *Book) fillInto(vpn netip.Addr, typ MetaType, m *Meta) bool {
	e := b.get(vpn)
	if e == nil {
		return false
	}
	v4, v6, relays := m.V4, m.V6, m.Relays
	*m = Meta{Type: typ, VpnIP: vpn.Unmap(), V4: v4, V6: v6, Relays: relays}
	e.fill(m)
	return true
}

// Forget drops vpn, e.g. when its tunnel closes.
func (b *Book) Forget(vpn netip.Addr) {
	if _, loaded := b.m.LoadAndDelete(vpn.Unmap()); loaded {
		b.n.Add(-1)
	}
}

// Expire drops every host not updated within the TTL and returns how many it dropped. It
// looks only at the hosts whose last known update is more than the TTL ago.
func (b *Book) Expire() int {
	if b.opts.TTL <= 0 {
		return 0
	}
	now := b.opts.Now()
	ttl := int64(b.opts.TTL)
	n := 0
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.expiry) > 0 && now.UnixNano()-b.expiry[0].at > ttl {
		r := b.expiry[0]
		v, ok := b.m.Load(r.vpn)
		switch {
		case !ok || v.(*bookEntry).rec != r:
			heap.Pop(&b.expiry) // forgotten; a later entry has its own record
		case !b.expired(v.(*bookEntry), now):
			r.at = v.(*bookEntry).updated.Load() // reported since: due a TTL after that
			heap.Fix(&b.expiry, 0)
		default:
			heap.Pop(&b.expiry)
			// CompareAndDelete: an update racing with the sweep keeps its fresh entry
			// (and this record, which it shares: queue it again).
			if b.m.CompareAndDelete(r.vpn, v) {
				b.n.Add(-1)
				n++
			} else {
				heap.Push(&b.expiry, r)
			}
		}
	}
	return n
}

// Len is the number of hosts in the book, expired or not yet swept.
func (b *Book) Len() int { return int(b.n.Load()) }
