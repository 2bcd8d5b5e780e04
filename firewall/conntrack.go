package firewall

import (
	"encoding/binary"
	"net/netip"
	"sync"
)

const (
	numShards = 64 // a power of two; enough that queues on two to eight cores rarely meet

	// fragTimeout is how long a first fragment opens the way for the rest of its datagram:
	// Linux gives up reassembly after 30 s (net.ipv4.ipfrag_time).
	fragTimeout = int64(30e9)

	// sweepEvery bounds how often one shard is scanned for expired entries.
	sweepEvery = int64(5e9)

	// maxRefreshSlack bounds how far behind the exact expiry (last packet + timeout) a flow's
	// recorded expiry may lag: a hit moves it only when that gains more than the slack, so a
	// busy flow writes its entry about once a second instead of on every packet.
	maxRefreshSlack = int64(1e9)

	// DefaultMaxFlows caps conntrack: about 25 MiB of table. Like the kernel's nf_conntrack,
	// a full table refuses new flows rather than grow without bound under a port spray.
	DefaultMaxFlows = 1 << 18
)

// flowKey identifies a flow from the local side, so both directions of it share one entry.
// Fragment entries (frag set) identify one datagram instead: ports are zero, id is its
// fragment id and proto the fragment's protocol. Addresses are kept as bytes so that neither
// key nor entry holds a pointer: the garbage collector never scans the table.
type flowKey struct {
	remote     [16]byte
	local      [16]byte
	v6         bool
	remotePort uint16
	localPort  uint16
	proto      uint8
	frag       bool
	id         uint32
}

// entry is what conntrack remembers about a flow.
type entry struct {
	expires int64  // unix nanoseconds
	gen     uint64 // rules generation that last allowed it
	dir     Direction
	// For fragment entries: where the first fragment ended and the port it was judged on,
	// so an overlapping piece is caught and a reload can re-check the datagram.
	fragEnd uint32
	port    uint16
	ported  bool
}

type shard struct {
	mu        sync.Mutex
	m         map[flowKey]entry
	nextSweep int64
	earliest  int64    // no entry expires before this (as of the last sweep)
	_         [32]byte // keep neighbouring shards' locks off one cache line
}

// sweep removes expired entries; the caller holds s.mu.
func (s *shard) sweep(now int64) {
	s.earliest = now + sweepEvery
	for key, e := range s.m {
		if e.expires <= now {
			delete(s.m, key)
		} else if e.expires < s.earliest {
			s.earliest = e.expires
		}
	}
	s.nextSweep = now + sweepEvery
}

// conntrack is a sharded flow table, safe for concurrent use.
type conntrack struct {
	perShard int // entries a shard may hold
	shards   [numShards]shard
}

func newConntrack(maxFlows int) *conntrack {
	if maxFlows <= 0 {
		maxFlows = DefaultMaxFlows
	}
	c := &conntrack{perShard: max(1, maxFlows/numShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[flowKey]entry)
	}
	return c
}

func newFlowKey(remote, local netip.Addr, remotePort, localPort uint16, proto uint8) flowKey {
	return flowKey{
		remote: remote.As16(), local: local.As16(), v6: !remote.Is4(),
		remotePort: remotePort, localPort: localPort, proto: proto,
	}
}

func (c *conntrack) shard(k *flowKey) *shard {
	const m = 0x9e3779b97f4a7c15
	h := binary.LittleEndian.Uint64(k.remote[:8])*m ^ binary.LittleEndian.Uint64(k.remote[8:])
	h = h*m ^ binary.LittleEndian.Uint64(k.local[8:])
	h = h*m ^ (uint64(k.remotePort)<<48 | uint64(k.localPort)<<32 | uint64(k.proto)<<24 | uint64(k.id))
	h *= m
	return &c.shards[h>>(64-6)]
}

// lookup finds the live entry for k. An expired entry is removed and reported missing. An
// entry of the current rules generation gets its expiry pushed to refresh in the same step;
// an older one is returned untouched for the caller to re-check.
func (c *conntrack) lookup(k *flowKey, now int64, gen uint64, refresh int64) (entry, bool) {
	s := c.shard(k)
	s.mu.Lock()
	e, ok := s.m[*k]
	switch {
	case !ok:
	case e.expires <= now:
		delete(s.m, *k)
		ok = false
	case e.gen == gen && refresh > e.expires+refreshSlack(refresh-now):
		e.expires = refresh
		s.m[*k] = e
	}
	s.mu.Unlock()
	return e, ok
}

// touch refreshes a live entry's expiry and generation.
func (c *conntrack) touch(k *flowKey, expires int64, gen uint64) {
	s := c.shard(k)
	s.mu.Lock()
	if e, ok := s.m[*k]; ok {
		e.expires = expires
		e.gen = gen
		s.m[*k] = e
	}
	s.mu.Unlock()
}

func (c *conntrack) remove(k *flowKey) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, *k)
	s.mu.Unlock()
}

// insert adds or replaces k, sweeping the shard of expired entries now and then so the table
// does not fill with flows that ended. It reports false when the shard is full of live flows.
func (c *conntrack) insert(k *flowKey, e entry, now int64) bool {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, exists := s.m[*k]
	full := !exists && len(s.m) >= c.perShard
	// A full shard is swept again only once something in it may have expired, so a spray of
	// new flows against a table of live ones costs a lookup each, not a scan each.
	if now >= s.nextSweep || (full && now >= s.earliest) {
		s.sweep(now)
		full = !exists && len(s.m) >= c.perShard
	}
	if full {
		return false
	}
	s.m[*k] = e
	return true
}

func (c *conntrack) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// sweep removes every expired entry.
func (c *conntrack) sweep(now int64) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.sweep(now)
		s.mu.Unlock()
	}
}

// refreshSlack is the lag allowed for a flow with this timeout: a sixteenth of it, at most
// maxRefreshSlack, so short test timeouts stay nearly exact.
func refreshSlack(timeout int64) int64 { return min(timeout/16, maxRefreshSlack) }
