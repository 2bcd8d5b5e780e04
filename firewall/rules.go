package firewall

import (
	"net/netip"
	"slices"
	"strings"
)

// portIndex holds the rules of one protocol class, indexed so that a lookup touches only the
// rules whose port can match.
type portIndex struct {
	exact    map[uint16][]int32 // single ports
	ranges   []int32
	any      []int32
	fragment []int32
}

// table is one direction's compiled rules.
type table struct {
	rules   []compiledRule
	text    []string // each rule as configured (Rule.String), for Check's explanations
	classes [numClasses]portIndex
}

func newTable(rules []compiledRule) *table {
	t := &table{rules: rules}
	for i := range t.classes {
		t.classes[i].exact = map[uint16][]int32{}
	}
	for i, r := range rules {
		idx := &t.classes[r.class]
		switch {
		case r.portLo == portAny:
			idx.any = append(idx.any, int32(i))
		case r.portLo == portFragment:
			idx.fragment = append(idx.fragment, int32(i))
		case r.portLo == r.portHi:
			idx.exact[uint16(r.portLo)] = append(idx.exact[uint16(r.portLo)], int32(i))
		default:
			idx.ranges = append(idx.ranges, int32(i))
		}
	}
	return t
}

// flow is what a rule is matched against: one packet, or a conntrack entry being re-checked.
type flow struct {
	proto  uint8
	icmp   bool // ICMP of the packet's IP version
	frag   bool // a later fragment: no port
	ported bool // TCP or UDP with a port
	port   uint16
	remote netip.Addr
	local  netip.Addr
	// localVPN: local is one of our certificate IPs, not an address behind us (vpnOnly rules).
	localVPN bool
	groups   []uint64 // the peer's group bits in the rule set being matched
}

// match reports whether any rule allows f from peer, whose group bits for this rule set are
// in f.groups.
func (t *table) match(f *flow, peer *Peer) bool {
	if t.matchClass(&t.classes[classAny], f, peer) {
		return true
	}
	switch {
	case f.icmp:
		return t.matchClass(&t.classes[classICMP], f, peer)
	case f.proto == ProtoTCP:
		return t.matchClass(&t.classes[classTCP], f, peer)
	case f.proto == ProtoUDP:
		return t.matchClass(&t.classes[classUDP], f, peer)
	}
	return false
}

func (t *table) matchClass(idx *portIndex, f *flow, peer *Peer) bool {
	if t.matchList(idx.any, f, peer) {
		return true
	}
	if f.frag {
		return t.matchList(idx.fragment, f, peer)
	}
	if !f.ported {
		return false // ICMP or another protocol: only port-any rules apply
	}
	if t.matchList(idx.exact[f.port], f, peer) {
		return true
	}
	for _, i := range idx.ranges {
		r := &t.rules[i]
		if int32(f.port) >= r.portLo && int32(f.port) <= r.portHi && r.matchPeer(f, peer) {
			return true
		}
	}
	return false
}

func (t *table) matchList(list []int32, f *flow, peer *Peer) bool {
	for _, i := range list {
		if t.rules[i].matchPeer(f, peer) {
			return true
		}
	}
	return false
}

// matchPeer checks everything but port and proto:
// (ca_name OR ca_sha) AND (host OR groups OR cidr) AND local_cidr.
func (r *compiledRule) matchPeer(f *flow, peer *Peer) bool {
	if r.local.IsValid() && !r.local.Contains(f.local) {
		return false
	}
	if r.vpnOnly && !f.localVPN {
		return false
	}
	if r.caFilter {
		byName := r.caName != "" && r.caName == peer.CAName
		bySha := r.caSha != "" && strings.EqualFold(r.caSha, peer.CAFingerprint)
		if !byName && !bySha {
			return false
		}
	}
	if r.anyPeer {
		return true
	}
	if r.host != "" && r.host == peer.Name {
		return true
	}
	if r.groupMask != nil && hasAll(f.groups, r.groupMask) {
		return true
	}
	return r.cidr.IsValid() && r.cidr.Contains(f.remote)
}

// maskWord is one non-zero word of a rule's group mask: rules name few groups, so a sparse
// mask stays a word or two however many groups the whole config names.
type maskWord struct {
	idx  int
	bits uint64
}

func hasAll(have []uint64, want []maskWord) bool {
	for _, w := range want {
		if have[w.idx]&w.bits != w.bits {
			return false
		}
	}
	return true
}

// assignGroups numbers every group the rules name and gives each rule its mask.
func assignGroups(tables ...[]compiledRule) (ids map[string]int, words int) {
	ids = map[string]int{}
	for _, rules := range tables {
		for _, r := range rules {
			for _, g := range r.groups {
				if _, ok := ids[g]; !ok {
					ids[g] = len(ids)
				}
			}
		}
	}
	words = (len(ids) + 63) / 64
	for _, rules := range tables {
		for i := range rules {
			r := &rules[i]
			if len(r.groups) == 0 {
				continue
			}
			for _, g := range r.groups {
				idx, bit := ids[g]/64, uint64(1)<<(ids[g]%64)
				j := slices.IndexFunc(r.groupMask, func(w maskWord) bool { return w.idx == idx })
				if j < 0 {
					r.groupMask = append(r.groupMask, maskWord{idx: idx})
					j = len(r.groupMask) - 1
				}
				r.groupMask[j].bits |= bit
			}
		}
	}
	return ids, words
}
