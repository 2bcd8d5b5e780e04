package overlay

// The signed blocklist (revocation) inside the node: the node keeps the newest list that
// verifies against its CA pool, blocks its fingerprints and cuts the tunnels of revoked
// peers at once. Lists come from the CA service (cmd/meshnode fetches them and calls
// ApplyBlocklist) and from lighthouses, which answer the blocklist query (extOpBlocklistQuery)
// with the newest list they hold, so revocation keeps spreading while the CA service is
// down. A lighthouse that applies a newer list tells its peers (extOpBlocklistNotify), so
// they ask at once rather than at their next interval. A relay needs no trust: every
// receiver checks the CA's signature itself.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/meshnode/meshnode/internal/prom"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/overlay/header"
)

// Where a blocklist came from (ApplyBlocklist's source, a label of
// meshnode_blocklist_applied_total).
const (
	BlocklistFromCA    = "ca"    // fetched from the CA service
	BlocklistFromRelay = "relay" // relayed by a lighthouse
	BlocklistFromFile  = "file"  // saved by an earlier run
)

// Why a blocklist was refused (the reason label of meshnode_blocklist_refused_total).
const (
	BlocklistRefusedInvalid   = "invalid"   // does not verify against our CA pool (forged, other CA)
	BlocklistRefusedOlder     = "older"     // a lower version than the one we hold
	BlocklistRefusedMalformed = "malformed" // a relayed answer or list that does not decode
)

// Wire format of the blocklist query, version 1.
//
// Request body: version (1) | have (8): the list version the asker holds, 0 for none |
// want (8): the version being fetched, 0 for "your newest" | offset (4) into its encoding.
//
// Answer body: version (1) | status (1) and, with blStatusOK: list version (8) | total
// length of the binary encoding (4, cert.MarshalBinary) | offset (4) | the bytes from offset,
// blChunk of them except in the last chunk.
//
// The asker starts with want 0 and offset 0; a lighthouse with nothing newer than have says
// blStatusNotNewer in 2 bytes. Otherwise the asker fetches the rest chunk by chunk naming
// the version it started; if the lighthouse has moved on meanwhile it answers blStatusGone
// and the asker starts over.
const (
	blQueryVersion = 1
	blQueryLen     = 1 + 8 + 8 + 4
	blAnswerHead   = 1 + 1 + 8 + 4 + 4
	blChunk        = extMaxBody - blAnswerHead

	blStatusOK       = 0
	blStatusNotNewer = 1
	blStatusGone     = 2
	blStatusBad      = 3

	// blFetchTimeout bounds one fetch from one lighthouse (all chunks), blCallTimeout one
	// chunk (three tries, extRetry apart, and room for a rate-limited answer); blRestarts
	// bounds the restarts when the lighthouse's list changes mid-fetch.
	blFetchTimeout = 2 * time.Minute
	blCallTimeout  = 5 * time.Second
	blRestarts     = 3
)

var errBLAnswer = errors.New("garbled blocklist answer")

// blocklistState is the newest verified list and what is known about lists offered.
type blocklistState struct {
	mu    sync.Mutex
	list  *cert.SignedBlocklist
	enc   []byte // list's binary encoding, served to askers
	saved func(*cert.SignedBlocklist, string)

	kick    chan struct{} // ask the lighthouses now (a lighthouse tunnel came up)
	applied *prom.CounterVec
	refused *prom.CounterVec
	version *prom.Func
}

func newBlocklistState(n *Node, reg prom.Registerer) *blocklistState {
	b := &blocklistState{
		kick: make(chan struct{}, 1),
		applied: prom.NewCounterVec(prom.CounterOpts{
			Name: "meshnode_blocklist_applied_total",
			Help: "Signed blocklists applied (each newer than the one before), by source: ca, relay or file.",
		}, []string{"source"}),
		refused: prom.NewCounterVec(prom.CounterOpts{
			Name: "meshnode_blocklist_refused_total",
			Help: "Signed blocklists refused, by reason: invalid (does not verify), older, malformed.",
		}, []string{"reason"}),
	}
	b.version = prom.NewGaugeFunc(prom.GaugeOpts{
		Name: "meshnode_blocklist_version",
		Help: "Version of the signed blocklist in force (0 when none).",
	}, func() float64 { return float64(n.BlocklistVersion()) })
	for _, s := range []string{BlocklistFromCA, BlocklistFromRelay, BlocklistFromFile} {
		b.applied.WithLabelValues(s)
	}
	for _, r := range []string{BlocklistRefusedInvalid, BlocklistRefusedOlder, BlocklistRefusedMalformed} {
		b.refused.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(b.applied, b.refused, b.version)
	}
	return b
}

func counterValue(c *prom.Counter) uint64 {
	return uint64(c.Value())
}

// BlocklistRefused is how many offered blocklists were refused for reason.
func (n *Node) BlocklistRefused(reason string) uint64 {
	return counterValue(n.bl.refused.WithLabelValues(reason))
}

// BlocklistApplied is how many blocklists from source were applied.
func (n *Node) BlocklistApplied(source string) uint64 {
	return counterValue(n.bl.applied.WithLabelValues(source))
}

// OnBlocklist registers fn, called with every list ApplyBlocklist applied and its source,
// so the daemon can save it across restarts. Calls may overlap and arrive out of version
// order; fn must keep the newest.
func (n *Node) OnBlocklist(fn func(*cert.SignedBlocklist, string)) {
	n.bl.mu.Lock()
	defer n.bl.mu.Unlock()
	n.bl.saved = fn
}

// Blocklist is the signed blocklist in force, or nil.
func (n *Node) Blocklist() *cert.SignedBlocklist {
	n.bl.mu.Lock()
	defer n.bl.mu.Unlock()
	return n.bl.list
}

// BlocklistVersion is the version of the list in force, 0 when none.
func (n *Node) BlocklistVersion() uint64 {
	if b := n.Blocklist(); b != nil {
		return b.Version
	}
	return 0
}

// ApplyBlocklist is the one way a signed blocklist takes effect, wherever it came from. It
// verifies b against the node's CA pool and keeps it only if its version is strictly newer
// than the list in force; then it blocks every fingerprint in the pool (new handshakes are
// refused), closes the tunnels of peers it revokes, and hands it to the OnBlocklist hook.
// It reports whether b was applied; an invalid or older list is refused and counted.
func (n *Node) ApplyBlocklist(b *cert.SignedBlocklist, source string) (bool, error) {
	// Our own copy: the list is kept and served, and must not change under us.
	b = &cert.SignedBlocklist{Version: b.Version, Issued: b.Issued, CA: b.CA,
		Fingerprints: slices.Clone(b.Fingerprints), Signature: slices.Clone(b.Signature)}
	p := n.pki.Load()
	if err := cert.VerifyBlocklist(b, p.Pool); err != nil {
		n.bl.refused.WithLabelValues(BlocklistRefusedInvalid).Inc()
		n.log.Warn("blocklist refused", "source", source, "version", b.Version, "err", err)
		return false, err
	}
	n.bl.mu.Lock()
	if cur := n.bl.list; cur != nil && b.Version <= cur.Version {
		n.bl.mu.Unlock()
		if b.Version < cur.Version {
			n.bl.refused.WithLabelValues(BlocklistRefusedOlder).Inc()
			n.log.Info("older blocklist ignored", "source", source, "version", b.Version, "have", cur.Version)
		}
		return false, nil
	}
	enc, err := b.MarshalBinary()
	if err != nil { // cannot happen for a list that verified
		n.bl.mu.Unlock()
		n.bl.refused.WithLabelValues(BlocklistRefusedMalformed).Inc()
		return false, err
	}
	n.bl.list, n.bl.enc = b, enc
	// The pool in force now: SetPKI swaps pools under n.bl.mu, so none misses this list.
	p = n.pki.Load()
	for _, fp := range b.Fingerprints {
		p.Pool.Block(fp)
	}
	saved := n.bl.saved
	n.bl.mu.Unlock()
	n.bl.applied.WithLabelValues(source).Inc()
	n.log.Info("blocklist applied", "source", source, "version", b.Version, "entries", len(b.Fingerprints))
	own := p.Creds.Cert.Fingerprint()
	for _, fp := range b.Fingerprints {
		if fp == own {
			n.log.Error("this host's certificate is revoked: peers will refuse it", "fingerprint", own[:16])
		}
	}
	n.closeRevoked(p.Pool)
	if n.lh.am {
		n.notifyBlocklist()
	}
	// Outside the lock: the hook may take the daemon's own locks, which are held while
	// SetPKI (and so Blocklist) runs. Two hooks may then run out of order; the hook keeps
	// the newest.
	if saved != nil {
		saved(b, source)
	}
	return true, nil
}

// closeRevoked closes at once the tunnels whose peer certificate (or its CA) pool blocks,
// as the liveness check would at the tunnel's next timer visit when pki.disconnect_invalid
// is on; revocation does not depend on that setting.
func (n *Node) closeRevoked(pool *cert.Pool) {
	// Only the blocklist changed: two lookups per tunnel, no signature check (an Ed25519
	// verify per tunnel took seconds on a lighthouse of 100,000 hosts).
	for _, t := range n.hosts.all() {
		if pool.IsBlocked(t.fingerprint()) || pool.IsBlocked(t.peer.Details.Issuer) {
			n.closeInvalid(t, cert.ErrBlocked)
		}
	}
}

// swapPKI swaps p in with the list in force applied to its pool, under n.bl.mu so that a
// list being applied meanwhile lands in whichever pool ends up in force.
func (n *Node) swapPKI(p *PKI) (old *PKI) {
	n.bl.mu.Lock()
	defer n.bl.mu.Unlock()
	if b := n.bl.list; b != nil {
		for _, fp := range b.Fingerprints {
			p.Pool.Block(fp)
		}
	}
	return n.pki.Swap(p)
}

// answerBlocklistQuery is a lighthouse's extOpBlocklistQuery handler.
func (n *Node) answerBlocklistQuery(_ *tunnel, body, out []byte) []byte {
	out = append(out, blQueryVersion)
	if len(body) < 1 || body[0] != blQueryVersion || len(body) != blQueryLen {
		return append(out, blStatusBad)
	}
	have := binary.BigEndian.Uint64(body[1:])
	want := binary.BigEndian.Uint64(body[9:])
	off := binary.BigEndian.Uint32(body[17:])
	n.bl.mu.Lock()
	list, enc := n.bl.list, n.bl.enc
	n.bl.mu.Unlock()
	switch {
	case want == 0 && off != 0:
		return append(out, blStatusBad)
	case want == 0 && (list == nil || list.Version <= have):
		return append(out, blStatusNotNewer)
	case want != 0 && (list == nil || list.Version != want):
		return append(out, blStatusGone)
	case uint64(off) >= uint64(len(enc)) || off%blChunk != 0:
		return append(out, blStatusBad)
	}
	end := min(int(off)+blChunk, len(enc))
	out = append(out, blStatusOK)
	out = binary.BigEndian.AppendUint64(out, list.Version)
	out = binary.BigEndian.AppendUint32(out, uint32(len(enc)))
	out = binary.BigEndian.AppendUint32(out, off)
	return append(out, enc[off:end]...)
}

func appendBLQuery(out []byte, have, want uint64, off uint32) []byte {
	out = append(out, blQueryVersion)
	out = binary.BigEndian.AppendUint64(out, have)
	out = binary.BigEndian.AppendUint64(out, want)
	return binary.BigEndian.AppendUint32(out, off)
}

// blAnswer is a parsed answer body.
type blAnswer struct {
	status  byte
	version uint64
	total   uint32
	off     uint32
	chunk   []byte
}

// parseBLAnswer reads an answer body from the network; it never panics, and refuses any
// chunk that is not exactly the piece of a bounded encoding its offset names.
func parseBLAnswer(b []byte) (blAnswer, error) {
	var a blAnswer
	if len(b) < 2 || b[0] != blQueryVersion {
		return a, errBLAnswer
	}
	a.status = b[1]
	switch a.status {
	case blStatusNotNewer, blStatusGone, blStatusBad:
		if len(b) != 2 {
			return blAnswer{}, errBLAnswer
		}
		return a, nil
	case blStatusOK:
	default:
		return blAnswer{}, errBLAnswer
	}
	if len(b) < blAnswerHead {
		return blAnswer{}, errBLAnswer
	}
	a.version = binary.BigEndian.Uint64(b[2:])
	a.total = binary.BigEndian.Uint32(b[10:])
	a.off = binary.BigEndian.Uint32(b[14:])
	a.chunk = b[blAnswerHead:]
	if a.version == 0 || a.total == 0 || int(a.total) > cert.MaxBlocklistBinary ||
		a.off >= a.total || a.off%blChunk != 0 || len(a.chunk) != int(min(a.total-a.off, blChunk)) {
		return blAnswer{}, errBLAnswer
	}
	return a, nil
}

// blCall is one blocklist query to lh.
func (n *Node) blCall(ctx context.Context, lh netip.Addr, have, want uint64, off uint32) (blAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, blCallTimeout)
	defer cancel()
	body, err := n.extCall(ctx, lh, extOpBlocklistQuery, appendBLQuery(nil, have, want, off))
	if err != nil {
		return blAnswer{}, err
	}
	return parseBLAnswer(body)
}

// fetchBlocklist asks one lighthouse for a list newer than ours and returns it decoded
// (not yet verified), or nil when it has nothing newer.
func (n *Node) fetchBlocklist(ctx context.Context, lh netip.Addr) (*cert.SignedBlocklist, error) {
	have := n.BlocklistVersion()
	for range blRestarts {
		a, err := n.blCall(ctx, lh, have, 0, 0)
		if err != nil {
			return nil, err
		}
		switch {
		case a.status == blStatusNotNewer:
			return nil, nil
		case a.status != blStatusOK || a.off != 0 || a.version <= have:
			return nil, errBLAnswer
		}
		enc := make([]byte, 0, a.total)
		enc = append(enc, a.chunk...)
		version, total := a.version, a.total
		for uint32(len(enc)) < total {
			if a, err = n.blCall(ctx, lh, have, version, uint32(len(enc))); err != nil {
				return nil, err
			}
			if a.status == blStatusGone {
				break // the lighthouse moved on to a newer list: start over
			}
			if a.status != blStatusOK || a.version != version || a.total != total || a.off != uint32(len(enc)) {
				return nil, errBLAnswer
			}
			enc = append(enc, a.chunk...)
		}
		if uint32(len(enc)) < total {
			continue
		}
		b, err := cert.UnmarshalBlocklist(enc)
		if err != nil {
			return nil, err
		}
		if b.Version != version {
			return nil, fmt.Errorf("%w: the list says version %d, the answer %d", cert.ErrBlocklistInvalid, b.Version, version)
		}
		return b, nil
	}
	return nil, errors.New("the lighthouse's blocklist kept changing while it was fetched")
}

// askLighthouses fetches a newer list from each lighthouse we have a tunnel to (the
// lighthouse client keeps those up; a down one must not stall the others) and applies it.
// A lighthouse that runs Nebula (or an older meshnode) just has none to give.
func (n *Node) askLighthouses(ctx context.Context) {
	for _, lh := range n.lh.c().hosts {
		if ctx.Err() != nil {
			return
		}
		if n.hosts.byVPNIP(lh) == nil {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, blFetchTimeout)
		b, err := n.fetchBlocklist(fctx, lh)
		cancel()
		switch {
		case errors.Is(err, ErrExtUnsupported):
			n.log.Debug("lighthouse does not relay blocklists", "lighthouse", lh)
		case errors.Is(err, errBLAnswer) || errors.Is(err, cert.ErrBlocklistInvalid):
			n.bl.refused.WithLabelValues(BlocklistRefusedMalformed).Inc()
			n.log.Warn("garbled blocklist from lighthouse", "lighthouse", lh, "err", err)
		case err != nil:
			n.log.Debug("cannot ask lighthouse for the blocklist", "lighthouse", lh, "err", err)
		case b != nil:
			_, _ = n.ApplyBlocklist(b, BlocklistFromRelay) // refusals are logged and counted there
		}
	}
}

// blocklistLoop asks the lighthouses every renewal.blocklist_interval, and as soon as a
// tunnel to one comes up.
func (n *Node) blocklistLoop(ctx context.Context) {
	tick := time.NewTicker(n.cfg.Renewal.BlocklistInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.done:
			return
		case <-tick.C:
		case <-n.bl.kick:
		}
		n.askLighthouses(ctx)
	}
}

// notifyBlocklist tells every peer of a lighthouse that a newer list is here, so a revocation
// reaches hosts cut off from the CA service at once rather than at their next ask. A lost
// notice costs only that wait; a Nebula peer answers the 9-byte request harmlessly.
func (n *Node) notifyBlocklist() {
	msg := appendExt(nil, extOpBlocklistNotify, 0)
	for _, t := range n.hosts.all() {
		n.sendEncrypted(t, header.Test, header.SubtypeTestRequest, msg)
	}
}

// answerBlocklistNotify is the extOpBlocklistNotify handler of a node that is not a
// lighthouse: a notice from one of its lighthouses makes it ask now; others are ignored.
func (n *Node) answerBlocklistNotify(t *tunnel, _, _ []byte) []byte {
	if n.lh.c().isLH[t.vpnIP] {
		n.lighthouseUp()
	}
	return nil // the lighthouse waits for no answer
}

// lighthouseUp asks for the blocklist soon after a tunnel to a lighthouse forms.
func (n *Node) lighthouseUp() {
	select {
	case n.bl.kick <- struct{}{}:
	default:
	}
}
