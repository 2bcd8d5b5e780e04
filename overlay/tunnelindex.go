package overlay

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
)

// tunnelIndex maps keys (local indexes, VPN addresses) to tunnels for the host map. Reads
// take no lock, as the data path looks up a tunnel per packet; writes are serialized by
// the caller (hostMap.mu). It replaces a sync.Map, whose nodes cost a lighthouse about
// 160 bytes per entry (issue 18: bytes per host); here an entry is a 16- or 32-byte
// object and an 8-byte slot at most three quarters full.
//
// Open addressing with linear probing over a power-of-two slot array. An entry's key never
// changes; a replaced tunnel is swapped inside the entry, a deleted entry becomes the
// table's tombstone. A write that would fill more than three quarters of the slots
// (tombstones included) builds a new array sized for the live entries and publishes it:
// a reader still on the old array sees the entries as they were when it started.
type tunnelIndex[K comparable, H indexHasher[K]] struct {
	tab atomic.Pointer[indexTable[K]]
	// live and used (live plus tombstones) count the current table's slots; writers only.
	live, used int
}

type indexTable[K comparable] struct {
	slots []atomic.Pointer[indexEntry[K]]
	mask  uint64
	seed  uint64
	dead  *indexEntry[K] // this table's tombstone
}

type indexEntry[K comparable] struct {
	key K
	t   atomic.Pointer[tunnel]
}

// indexHasher hashes a key with a table's seed.
type indexHasher[K comparable] interface {
	hash(k K, seed uint64) uint64
}

type hashUint32 struct{}

func (hashUint32) hash(k uint32, seed uint64) uint64 { return mix64(uint64(k), seed) }

type hashAddr struct{}

func (hashAddr) hash(a netip.Addr, seed uint64) uint64 {
	b := a.As16()
	z := uint64(0)
	if a.Is4() {
		z = 1 // an IPv4 address and its IPv4-mapped IPv6 form are different keys
	}
	return mix64(binary.LittleEndian.Uint64(b[:8])^z, mix64(binary.LittleEndian.Uint64(b[8:]), seed))
}

// mix64 is a 64x64->128 multiply folded (wyhash's mixer).
func mix64(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a^0xa0761d6478bd642f, b^0xe7037ed1a0b428db)
	return hi ^ lo
}

// load returns the tunnel stored under k, or nil.
func (x *tunnelIndex[K, H]) load(k K) *tunnel {
	tab := x.tab.Load()
	if tab == nil {
		return nil
	}
	var h H
	for i := h.hash(k, tab.seed) & tab.mask; ; i = (i + 1) & tab.mask {
		e := tab.slots[i].Load()
		if e == nil {
			return nil
		}
		if e != tab.dead && e.key == k {
			return e.t.Load()
		}
	}
}

// find is the slot holding k in tab, or -1 and the first reusable slot on k's path.
func (x *tunnelIndex[K, H]) find(tab *indexTable[K], k K) (at, free int) {
	var h H
	free = -1
	for i := h.hash(k, tab.seed) & tab.mask; ; i = (i + 1) & tab.mask {
		switch e := tab.slots[i].Load(); {
		case e == nil:
			if free < 0 {
				free = int(i)
			}
			return -1, free
		case e == tab.dead:
			if free < 0 {
				free = int(i)
			}
		case e.key == k:
			return int(i), free
		}
	}
}

// store makes k find t. The caller holds the writers' lock.
func (x *tunnelIndex[K, H]) store(k K, t *tunnel) {
	tab := x.tab.Load()
	if tab != nil {
		if at, _ := x.find(tab, k); at >= 0 {
			tab.slots[at].Load().t.Store(t)
			return
		}
	}
	if tab == nil || 4*(x.used+1) > 3*len(tab.slots) {
		tab = x.rebuild(x.live + 1)
	}
	_, free := x.find(tab, k)
	if tab.slots[free].Load() == nil {
		x.used++
	}
	e := &indexEntry[K]{key: k}
	e.t.Store(t)
	tab.slots[free].Store(e)
	x.live++
}

// compareAndDelete removes k if it finds t, and says whether it did. The caller holds
// the writers' lock.
func (x *tunnelIndex[K, H]) compareAndDelete(k K, t *tunnel) bool {
	tab := x.tab.Load()
	if tab == nil {
		return false
	}
	at, _ := x.find(tab, k)
	if at < 0 || tab.slots[at].Load().t.Load() != t {
		return false
	}
	tab.slots[at].Store(tab.dead)
	x.live--
	if x.live == 0 {
		// Nothing left: start over, so a table a storm grew is not kept.
		x.tab.Store(nil)
		x.used = 0
	}
	return true
}

// rebuild publishes a table for n live entries (at most three eighths full), with the
// current entries and no tombstones, and returns it.
func (x *tunnelIndex[K, H]) rebuild(n int) *indexTable[K] {
	size := 16
	for 8*n > 3*size {
		size *= 2
	}
	tab := &indexTable[K]{
		slots: make([]atomic.Pointer[indexEntry[K]], size),
		mask:  uint64(size - 1),
		seed:  rand.Uint64(),
		dead:  new(indexEntry[K]),
	}
	var h H
	x.used = 0
	if old := x.tab.Load(); old != nil {
		for i := range old.slots {
			e := old.slots[i].Load()
			if e == nil || e == old.dead {
				continue
			}
			j := h.hash(e.key, tab.seed) & tab.mask
			for tab.slots[j].Load() != nil {
				j = (j + 1) & tab.mask
			}
			tab.slots[j].Store(e)
			x.used++
		}
	}
	x.tab.Store(tab)
	return tab
}

// rangeAll calls f for each entry until f returns false. Without the writers' lock it sees
// each entry as it is when visited.
func (x *tunnelIndex[K, H]) rangeAll(f func(k K, t *tunnel) bool) {
	tab := x.tab.Load()
	if tab == nil {
		return
	}
	for i := range tab.slots {
		e := tab.slots[i].Load()
		if e == nil || e == tab.dead {
			continue
		}
		if t := e.t.Load(); t != nil && !f(e.key, t) {
			return
		}
	}
}
