// Package gcpolicy bounds the garbage collector's headroom when the live heap is large.
//
// With the default GOGC=100 the heap may grow to twice its live size between collections.
// A lighthouse's heap is mostly long-lived tunnel state (about 4 KB per host) that the
// collector can never free, so at 100,000 hosts that doubling alone is some 400 MB of RSS.
// Start lowers the GC percent as the live heap grows, so that the growth allowed between
// collections is Floor or a quarter of the live heap, whichever is larger: a small node
// keeps the default, a large one collects more often. The extra collections cost little
// CPU because the garbage rate of a daemon is set by its traffic, not by its size: at idle
// nothing is allocated and nothing runs.
//
// An explicit GOGC or GOMEMLIMIT in the environment is the operator's choice: Start then
// leaves the collector alone.
package gcpolicy

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

const (
	// Floor is the least growth allowed between collections: below Floor of live heap
	// the percent stays the runtime's default of 100.
	Floor = 64 << 20
	// MinPercent is the lowest percent used: a quarter of the live heap.
	MinPercent = 25
	// defaultPercent is the runtime's own default.
	defaultPercent = 100
)

// Percent is the GC percent for a live heap of live bytes: 100 up to Floor, then the
// percent that allows Floor of growth, but never below MinPercent. Rounded down to a
// multiple of 5 so small changes of the live heap do not reset it at every collection.
func Percent(live uint64) int {
	if live <= Floor {
		return defaultPercent
	}
	p := int(uint64(defaultPercent) * Floor / live)
	p -= p % 5
	return max(p, MinPercent)
}

// Policy is a running policy; Stop ends it and restores the percent it found.
type Policy struct {
	stopped atomic.Bool
	percent atomic.Int32 // the percent last set
	sample  []metrics.Sample
	initial int
}

// Start runs the policy unless the environment sets GOGC or GOMEMLIMIT (then it returns
// nil). It adjusts the percent after each collection, from the live heap that collection
// found; it has no goroutine or timer of its own.
func Start() *Policy {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	return start()
}

func start() *Policy {
	p := &Policy{sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	p.initial = debug.SetGCPercent(defaultPercent)
	p.percent.Store(defaultPercent)
	p.arm()
	return p
}

// sentinel is an object kept by nothing, so its cleanup runs after the next collection.
// (Not a tiny allocation: objects under 16 bytes without pointers may share a block with
// others and their cleanups run late or never.)
type sentinel struct {
	_ [2]*int
}

func (p *Policy) arm() {
	runtime.AddCleanup(new(sentinel), func(p *Policy) { p.afterGC() }, p)
}

func (p *Policy) afterGC() {
	if p.stopped.Load() {
		return
	}
	metrics.Read(p.sample)
	if p.sample[0].Value.Kind() == metrics.KindUint64 {
		if want := Percent(p.sample[0].Value.Uint64()); int32(want) != p.percent.Load() {
			debug.SetGCPercent(want)
			p.percent.Store(int32(want))
		}
	}
	p.arm()
}

// Percent is the GC percent the policy last set.
func (p *Policy) Percent() int { return int(p.percent.Load()) }

// Stop ends the policy and restores the percent Start found. Safe on a nil Policy.
func (p *Policy) Stop() {
	if p == nil || p.stopped.Swap(true) {
		return
	}
	debug.SetGCPercent(p.initial)
}
