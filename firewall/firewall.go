package firewall

import (
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options are the firewall's collaborators and facts about this node.
type Options struct {
	// Now is the clock conntrack expiry is measured with; nil means time.Now.
	Now func() time.Time
	// Logger receives configuration warnings; nil discards them. Verdicts never log.
	Logger *slog.Logger
	// LocalAddrs and LocalSubnets are our own certificate's IPs and subnets: our side of every
	// packet (destination inbound, source outbound) must be one of them, as Nebula checks.
	// When both are empty the check is skipped and the caller must make it.
	LocalAddrs   []netip.Addr
	LocalSubnets []netip.Prefix
	// MaxFlows caps the conntrack table (flows plus fragmented datagrams in flight); 0 means
	// DefaultMaxFlows. When it is full, packets that would open a new flow are dropped with
	// ReasonConntrackFull, as the kernel's conntrack does.
	MaxFlows int
}

// ruleSet is one immutable generation of compiled config.
type ruleSet struct {
	gen       uint64
	in, out   *table
	inAction  Action
	outAction Action
	timeouts  timeouts

	groupIDs   map[string]int // every group the rules name, numbered
	groupWords int
}

// Firewall judges packets. It is safe for concurrent use: verdicts from many goroutines and a
// Reload at any time.
type Firewall struct {
	now          func() time.Time
	log          *slog.Logger
	localAddrs   []netip.Addr
	localSubnets []netip.Prefix

	rules    atomic.Pointer[ruleSet]
	reloadMu sync.Mutex // serialises Reload so generations increase in order
	ct       *conntrack
}

// New validates cfg and builds a firewall from it. The error lists every problem, each naming
// its key path (`firewall.inbound[2].port: invalid port "80-" ...`), and wraps ErrInvalidConfig.
func New(cfg Config, opts Options) (*Firewall, error) {
	f := &Firewall{
		now:          opts.Now,
		log:          opts.Logger,
		localAddrs:   slices.Clone(opts.LocalAddrs),
		localSubnets: masked(opts.LocalSubnets),
		ct:           newConntrack(opts.MaxFlows),
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	rs, err := f.compile(cfg, 1)
	if err != nil {
		return nil, err
	}
	f.rules.Store(rs)
	return f, nil
}

func (f *Firewall) compile(cfg Config, gen uint64) (*ruleSet, error) {
	var errs []error
	localAny := cfg.DefaultLocalCIDRAny != nil && *cfg.DefaultLocalCIDRAny
	in := compileRules("inbound", cfg.Inbound, localAny, f.log.Warn, &errs)
	out := compileRules("outbound", cfg.Outbound, localAny, f.log.Warn, &errs)
	ids, words := assignGroups(in, out)
	rs := &ruleSet{
		gen:        gen,
		in:         newTable(in),
		out:        newTable(out),
		groupIDs:   ids,
		groupWords: words,
		inAction:   parseAction("inbound_action", cfg.InboundAction, &errs),
		outAction:  parseAction("outbound_action", cfg.OutboundAction, &errs),
		timeouts:   parseTimeouts(cfg.Conntrack, &errs),
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// Without errors every rule compiled, so positions in the tables are config indexes.
	rs.in.text, rs.out.text = ruleTexts(cfg.Inbound), ruleTexts(cfg.Outbound)
	return rs, nil
}

// Reload swaps in new rules, actions and timeouts. New flows are judged by the new rules at
// once; each existing conntrack entry is re-checked against them the next time a packet uses
// it, and cut if they no longer allow it. On error the old config stays in force.
func (f *Firewall) Reload(cfg Config) error {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	rs, err := f.compile(cfg, f.rules.Load().gen+1)
	if err != nil {
		return err
	}
	f.rules.Store(rs)
	return nil
}

// Conntrack reports how many flows and fragmented datagrams are tracked, for a gauge.
func (f *Firewall) Conntrack() int { return f.ct.len() }

// Expire removes every expired conntrack entry. Verdicts expire entries as they go, so calling
// this is optional; it only returns memory sooner.
func (f *Firewall) Expire() { f.ct.sweep(f.now().UnixNano()) }

// Verdict parses pkt and judges it. peer is the tunnel's identity; dir says whether the packet
// leaves a tunnel (Inbound) or enters one (Outbound). It does not allocate.
func (f *Firewall) Verdict(pkt []byte, dir Direction, peer *Peer) Verdict {
	return f.VerdictAt(pkt, dir, peer, f.now())
}

// VerdictAt is Verdict at a time the caller read from the firewall's clock (Options.Now):
// the data path reads it once per batch of packets rather than once per packet.
func (f *Firewall) VerdictAt(pkt []byte, dir Direction, peer *Peer, now time.Time) Verdict {
	var p Packet
	p.Parse(pkt)
	return f.verdict(&p, dir, peer, now.UnixNano())
}

// VerdictPacket judges a packet the caller already parsed (a failed parse is dropped with its
// reason).
func (f *Firewall) VerdictPacket(p *Packet, dir Direction, peer *Peer) Verdict {
	return f.verdict(p, dir, peer, f.now().UnixNano())
}

// VerdictMemo is VerdictAt (now in unix nanoseconds) for a caller that keeps a Memo for one
// direction of one tunnel: the packets of the flow it last admitted skip the conntrack table.
// m may be nil; a Memo must not be shared between goroutines.
func (f *Firewall) VerdictMemo(pkt []byte, dir Direction, peer *Peer, now int64, m *Memo) Verdict {
	var p Packet
	p.Parse(pkt)
	return f.verdictMemo(&p, dir, peer, now, m)
}

func (f *Firewall) verdict(p *Packet, dir Direction, peer *Peer, now int64) Verdict {
	return f.verdictMemo(p, dir, peer, now, nil)
}

func (f *Firewall) verdictMemo(p *Packet, dir Direction, peer *Peer, now int64, m *Memo) Verdict {
	if p.Reason != ReasonNone || p.Version == 0 {
		r := p.Reason
		if r == ReasonNone {
			r = ReasonMalformed // a Packet that never went through Parse
		}
		return Verdict{Drop, r}
	}
	if peer == nil || (dir != Inbound && dir != Outbound) {
		return Verdict{Drop, ReasonNoPeer}
	}
	rs := f.rules.Load()

	fl := flow{proto: p.Proto, icmp: p.isICMP(), frag: p.Frag == FragLater, ported: p.hasPorts(), port: p.DstPort}
	remotePort, localPort := p.SrcPort, p.DstPort
	fl.remote, fl.local = p.Src, p.Dst
	if dir == Outbound {
		remotePort, localPort = p.DstPort, p.SrcPort
		fl.remote, fl.local = p.Dst, p.Src
	}

	// The peer must own its side of the packet before anything else, conntrack included:
	// otherwise one peer could ride another's flows.
	if !peer.owns(fl.remote) {
		return Verdict{Drop, ReasonRemoteAddr}
	}
	if !f.ownsLocal(fl.local) {
		return Verdict{Drop, ReasonLocalAddr}
	}
	fl.localVPN = f.localIsVPN(fl.local)
	if fl.frag {
		fl.groups = peer.groupsIn(rs)
		return f.laterFragment(p, dir, peer, rs, &fl, now)
	}
	k := newFlowKey(fl.remote, fl.local, remotePort, localPort, p.Proto)
	memo := m != nil && p.Frag == FragNone // fragments keep their own entries: no memo
	if memo && m.hit(&k, rs, peer, dir, now) {
		return Verdict{Accept, ReasonConntrack}
	}
	fl.groups = peer.groupsIn(rs)

	timeout := rs.timeouts.other
	switch p.Proto {
	case ProtoTCP:
		timeout = rs.timeouts.tcp
	case ProtoUDP:
		timeout = rs.timeouts.udp
	}
	if e, ok := f.ct.lookup(&k, now, rs.gen, now+timeout); ok {
		if e.gen == rs.gen || f.recheck(&k, e, rs, peer, &fl, now+timeout) {
			f.trackFirst(p, dir, rs, &fl, now)
			if memo {
				m.set(&k, rs, peer, dir, now, timeout)
			}
			return Verdict{Accept, ReasonConntrack}
		}
	}

	t, action := rs.in, rs.inAction
	if dir == Outbound {
		t, action = rs.out, rs.outAction
	}
	if !t.match(&fl, peer) {
		return Verdict{action, ReasonNoRule}
	}
	if !f.ct.insert(&k, entry{expires: now + timeout, gen: rs.gen, dir: dir}, now) {
		return Verdict{Drop, ReasonConntrackFull}
	}
	f.trackFirst(p, dir, rs, &fl, now)
	if memo {
		m.set(&k, rs, peer, dir, now, timeout)
	}
	return Verdict{Accept, ReasonRule}
}

// localIsVPN reports whether a is one of our certificate's own IPs rather than an address
// in a subnet behind us (what a rule without local_cidr admits by default).
func (f *Firewall) localIsVPN(a netip.Addr) bool {
	return len(f.localAddrs) == 0 || slices.Contains(f.localAddrs, a)
}

func (f *Firewall) ownsLocal(a netip.Addr) bool {
	if len(f.localAddrs) == 0 && len(f.localSubnets) == 0 {
		return true
	}
	if slices.Contains(f.localAddrs, a) {
		return true
	}
	for _, s := range f.localSubnets {
		if s.Contains(a) {
			return true
		}
	}
	return false
}

// recheck judges a conntrack entry made under older rules against the current ones, in the
// direction that created it, and either renews it or removes it. cur is the flow of the packet
// that met the entry: it shares the entry's addresses.
func (f *Firewall) recheck(k *flowKey, e entry, rs *ruleSet, peer *Peer, cur *flow, expires int64) bool {
	fl := flow{proto: k.proto, remote: cur.remote, local: cur.local, localVPN: cur.localVPN, groups: cur.groups}
	fl.icmp = (!k.v6 && k.proto == ProtoICMP) || (k.v6 && k.proto == ProtoICMPv6)
	if k.frag {
		fl.ported, fl.port = e.ported, e.port
	} else {
		fl.ported = k.proto == ProtoTCP || k.proto == ProtoUDP
		fl.port = k.localPort // the service port is the destination of the packet that opened the flow
		if e.dir == Outbound {
			fl.port = k.remotePort
		}
	}
	t := rs.in
	if e.dir == Outbound {
		t = rs.out
	}
	if !t.match(&fl, peer) {
		f.ct.remove(k)
		return false
	}
	if k.frag {
		expires = e.expires // a datagram's window does not grow
	}
	f.ct.touch(k, expires, rs.gen)
	return true
}

// trackFirst remembers an admitted first fragment's datagram so its later fragments pass. With
// the table full the datagram goes unremembered and its later fragments meet the rules alone.
func (f *Firewall) trackFirst(p *Packet, dir Direction, rs *ruleSet, fl *flow, now int64) {
	if p.Frag != FragFirst {
		return
	}
	k := newFlowKey(fl.remote, fl.local, 0, 0, p.FragProto)
	k.frag, k.id = true, p.FragID
	f.ct.insert(&k, entry{
		expires: now + fragTimeout, gen: rs.gen, dir: dir,
		fragEnd: p.FragLen, port: fl.port, ported: fl.ported,
	}, now)
}

// laterFragment judges a fragment without ports: it belongs to a datagram whose first fragment
// was admitted, or a `port: fragment`/`port: any` rule allows it (Nebula's rule), or it drops.
func (f *Firewall) laterFragment(p *Packet, dir Direction, peer *Peer, rs *ruleSet, fl *flow, now int64) Verdict {
	k := newFlowKey(fl.remote, fl.local, 0, 0, p.FragProto)
	k.frag, k.id = true, p.FragID
	if e, ok := f.ct.lookup(&k, now, rs.gen, 0); ok {
		if p.FragOffset < e.fragEnd {
			return Verdict{Drop, ReasonFragmentOverlap}
		}
		if e.gen == rs.gen || f.recheck(&k, e, rs, peer, fl, 0) {
			return Verdict{Accept, ReasonConntrack}
		}
	}
	t := rs.in
	if dir == Outbound {
		t = rs.out
	}
	if t.match(fl, peer) {
		return Verdict{Accept, ReasonRule}
	}
	// Never reject a fragment: the reply would quote a packet without its headers.
	return Verdict{Drop, ReasonFragmentUnknownFlow}
}
