package overlay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshnode/meshnode/overlay/header"
)

// meshnode extensions ride inside Nebula's encrypted Test messages, so they need no new
// message type on the wire. A request is a Test request whose payload starts with extMagic;
// a meshnode peer answers with a Test reply carrying the same id and the op with its high bit
// set.
//
// Nebula 1.6.1 does not echo a Test request: it writes its reply header over the buffer the
// request was decrypted into and seals that buffer's start as the reply. A payload of up to
// 16 bytes comes back as the first bytes of Nebula's own header (never extMagic); a longer
// one makes the seal overlap its input and panics the whole nebula daemon ("crypto/cipher:
// invalid buffer overlap", seen against the real 1.6.1 binary; later Nebula releases fixed
// it and echo). So a request longer than nebulaSafeTest bytes goes only to a peer that has
// already answered as meshnode on this tunnel; extCall first proves that with a 9-byte hello.
// A reply that is neither an answer nor empty, or an echo of the request (a later Nebula,
// or a meshnode without that op), means the peer does not speak the extension.
//
// Layout: "MNX1" | op (1 byte) | request id (4 bytes, big endian) | body.
const (
	extMagic     = "MNX1"
	extHeaderLen = len(extMagic) + 1 + 4
	extAnswerBit = 0x80
	// extMaxBody keeps an extension message, sealed and framed, inside one 1280-byte
	// underlay datagram, so it is never fragmented; handlers chunk larger answers.
	extMaxBody = 1150
	// nebulaSafeTest is the longest Test payload a Nebula 1.6 peer survives (see above).
	nebulaSafeTest = 16
)

// Extension ops. Queries are below extAnswerBit.
const (
	extOpHello          byte = 0 // no body; answered with an empty body: "I am meshnode"
	extOpFirewallQuery  byte = 1
	extOpBlocklistQuery byte = 2
	// extOpBlocklistNotify (no body; 9 bytes, safe for Nebula 1.6) is a lighthouse telling
	// its peers it holds a newer blocklist; they ask for it (op 2). Sent without waiting.
	extOpBlocklistNotify byte = 3
	// extOpNameQuery asks a lighthouse for the VPN IP of a host name (names.go).
	extOpNameQuery byte = 4
)

// Retransmission of a query: extensions ride on UDP, and an empty Test reply (what a Nebula
// might answer) only counts against the peer once every try went unanswered.
const (
	extRetry = 500 * time.Millisecond
	extTries = 3
)

// Answers per tunnel: handlers run on the receive path, so a peer flooding queries gets at
// most extRate answers a second (after a burst of extBurst); the rest are not answered.
const (
	extRate  = 10
	extBurst = 20
)

// ErrExtUnsupported means the peer did not answer an extension request the way meshnode
// does: it runs Nebula, or a meshnode that does not know this op.
var ErrExtUnsupported = errors.New("the peer does not support this meshnode query (it may be a Nebula host)")

// What a tunnel's peer is known to be, for extension requests (tunnel.extPeer).
const (
	extPeerUnknown int32 = iota
	extPeerMeshnode
	extPeerForeign // answered a request with something other than an answer or an echo
)

// extHandler answers an extension query from an authenticated peer. It runs on the receive
// path, so it must not block; it appends its answer body to out and returns it (at most
// extMaxBody bytes; longer answers are refused), or returns nil to send nothing.
type extHandler func(t *tunnel, body, out []byte) []byte

type extAnswer struct {
	body        []byte
	unsupported bool
}

type extWaiter struct {
	peer  netip.Addr
	c     chan extAnswer
	empty int // empty Test replies from the peer while waiting (ambiguous: a ping's answer?)
}

// extState holds the registered handlers and the callers waiting for answers.
type extState struct {
	mu       sync.Mutex
	handlers map[byte]extHandler
	waiters  map[uint32]*extWaiter
	nextID   uint32
	pending  atomic.Int32 // len(waiters), read without the lock on every Test reply

	// asNebula makes tests' nodes answer Test requests as a Nebula peer would (nebulaMode*);
	// nebulaPanics counts the requests that would have crashed a Nebula 1.6 daemon.
	asNebula     atomic.Int32
	nebulaPanics atomic.Int32
}

// Nebula behaviours a test node can play (extState.asNebula).
const (
	nebulaModeOff   int32 = iota
	nebulaMode161         // 1.6.1: header bytes for up to 16 bytes, a crash beyond
	nebulaModeEmpty       // an empty reply
	nebulaModeEcho        // later releases: the request echoed
)

// handle registers the handler for a query op; nodes register theirs while being built.
func (e *extState) handle(op byte, h extHandler) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.handlers == nil {
		e.handlers = map[byte]extHandler{}
	}
	e.handlers[op] = h
}

func (e *extState) handler(op byte) extHandler {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.handlers[op]
}

func parseExt(pt []byte) (op byte, id uint32, body []byte, ok bool) {
	if len(pt) < extHeaderLen || string(pt[:len(extMagic)]) != extMagic {
		return 0, 0, nil, false
	}
	return pt[4], binary.BigEndian.Uint32(pt[5:9]), pt[extHeaderLen:], true
}

func appendExt(out []byte, op byte, id uint32) []byte {
	out = append(out, extMagic...)
	out = append(out, op)
	return binary.BigEndian.AppendUint32(out, id)
}

// extLimiter is a token bucket for one tunnel's extension answers.
type extLimiter struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func (l *extLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = extBurst
	} else if d := now.Sub(l.last); d > 0 {
		l.tokens = min(extBurst, l.tokens+d.Seconds()*extRate)
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// handleTestRequest answers a Test request: an extension query goes to its handler; anything
// else (liveness probes, pings, unknown ops) is echoed, which tells a meshnode asker that
// this op is not supported.
func (n *Node) handleTestRequest(t *tunnel, pt []byte) {
	if m := n.ext.asNebula.Load(); m != nebulaModeOff {
		n.answerAsNebula(t, pt, m)
		return
	}
	op, id, body, ok := parseExt(pt)
	if !ok || op&extAnswerBit != 0 {
		n.sendEncrypted(t, header.Test, header.SubtypeTestReply, pt)
		return
	}
	h := n.ext.handler(op)
	if h == nil && op != extOpHello {
		n.sendEncrypted(t, header.Test, header.SubtypeTestReply, pt)
		return
	}
	if !t.extLimit.allow(n.now()) {
		n.log.Debug("extension query over the rate limit; not answered", "vpn_ip", t.vpnIP, "op", op)
		return
	}
	out := appendExt(make([]byte, 0, extHeaderLen+256), op|extAnswerBit, id)
	if h != nil {
		if out = h(t, body, out); out == nil {
			return
		}
	}
	if len(out)-extHeaderLen > extMaxBody {
		n.log.Warn("extension answer too large; not sent", "op", op, "bytes", len(out)-extHeaderLen)
		return
	}
	n.sendEncrypted(t, header.Test, header.SubtypeTestReply, out)
}

// answerAsNebula is what a Nebula peer sends back for a Test request, for tests.
func (n *Node) answerAsNebula(t *tunnel, pt []byte, mode int32) {
	switch mode {
	case nebulaMode161:
		if len(pt) > nebulaSafeTest {
			n.ext.nebulaPanics.Add(1) // the real daemon dies here
			return
		}
		var hdr [header.Len]byte
		header.Encode(hdr[:], header.Test, header.SubtypeTestReply, t.remoteIndex, t.sendCounter.Load()+1)
		n.sendEncrypted(t, header.Test, header.SubtypeTestReply, hdr[:len(pt)])
	case nebulaModeEmpty:
		n.sendEncrypted(t, header.Test, header.SubtypeTestReply, nil)
	default:
		n.sendEncrypted(t, header.Test, header.SubtypeTestReply, pt)
	}
}

// handleTestReply wakes pingers and, for extension answers, the caller waiting on the id.
// An answer only counts when it comes from the peer the request was sent to.
func (n *Node) handleTestReply(t *tunnel, pt []byte) {
	n.pings.answer(t.vpnIP)
	if n.ext.pending.Load() == 0 {
		return
	}
	op, id, body, ok := parseExt(pt)
	if !ok {
		n.foreignReply(t, len(pt) > 0)
		return
	}
	n.ext.mu.Lock()
	w, found := n.ext.waiters[id]
	if found && w.peer == t.vpnIP {
		n.ext.remove(id)
	}
	n.ext.mu.Unlock()
	if !found || w.peer != t.vpnIP {
		return
	}
	a := extAnswer{unsupported: op&extAnswerBit == 0}
	if !a.unsupported {
		t.extPeer.Store(extPeerMeshnode)
		a.body = append([]byte(nil), body...)
	}
	w.c <- a // buffered, and the waiter was removed: never blocks
}

// foreignReply handles a Test reply without the extension header while requests to its peer
// wait. We only ever send empty or extension payloads, and meshnode echoes what it does not
// answer, so a non-empty one is Nebula 1.6's reply to a request: the peer is not meshnode.
// An empty one may answer a concurrent ping, and is only counted.
func (n *Node) foreignReply(t *tunnel, nonEmpty bool) {
	n.ext.mu.Lock()
	defer n.ext.mu.Unlock()
	for id, w := range n.ext.waiters {
		if w.peer != t.vpnIP {
			continue
		}
		if !nonEmpty {
			w.empty++
			continue
		}
		t.extPeer.Store(extPeerForeign)
		n.ext.remove(id)
		w.c <- extAnswer{unsupported: true}
	}
}

// remove forgets a waiter; the caller holds e.mu.
func (e *extState) remove(id uint32) {
	if _, ok := e.waiters[id]; ok {
		delete(e.waiters, id)
		e.pending.Add(-1)
	}
}

// extCall sends one extension query to peer (bringing the tunnel up if needed) and waits for
// its answer body. A peer that does not speak the extension gets ErrExtUnsupported.
func (n *Node) extCall(ctx context.Context, peer netip.Addr, op byte, body []byte) ([]byte, error) {
	if len(body) > extMaxBody {
		return nil, fmt.Errorf("extension query of %d bytes is too large", len(body))
	}
	t, err := n.waitTunnel(ctx, peer)
	if err != nil {
		return nil, err
	}
	if extHeaderLen+len(body) > nebulaSafeTest {
		// Too long for a Nebula 1.6 peer to survive: the peer must prove it is meshnode first.
		switch t.extPeer.Load() {
		case extPeerForeign:
			return nil, ErrExtUnsupported
		case extPeerUnknown:
			if _, err := n.extRoundTrip(ctx, t, extOpHello, nil); err != nil {
				return nil, err
			}
		}
	}
	return n.extRoundTrip(ctx, t, op, body)
}

// extRoundTrip sends a request over t, retransmitting it extTries times, and waits for the
// answer. When only empty replies came back for every try, the peer answers Test messages
// but not this request: ErrExtUnsupported.
func (n *Node) extRoundTrip(ctx context.Context, t *tunnel, op byte, body []byte) ([]byte, error) {
	if t.extPeer.Load() == extPeerForeign {
		return nil, ErrExtUnsupported
	}
	w := &extWaiter{peer: t.vpnIP, c: make(chan extAnswer, 1)}
	n.ext.mu.Lock()
	if n.ext.waiters == nil {
		n.ext.waiters = map[uint32]*extWaiter{}
	}
	n.ext.nextID++
	id := n.ext.nextID
	n.ext.waiters[id] = w
	n.ext.pending.Add(1)
	n.ext.mu.Unlock()
	defer func() {
		n.ext.mu.Lock()
		n.ext.remove(id)
		n.ext.mu.Unlock()
	}()
	msg := append(appendExt(make([]byte, 0, extHeaderLen+len(body)), op, id), body...)
	n.sendEncrypted(t, header.Test, header.SubtypeTestRequest, msg)
	tick := time.NewTicker(extRetry)
	defer tick.Stop()
	for tries := 1; ; {
		select {
		case a := <-w.c:
			if a.unsupported {
				return nil, ErrExtUnsupported
			}
			return a.body, nil
		case <-tick.C:
			if tries < extTries {
				tries++
				n.sendEncrypted(t, header.Test, header.SubtypeTestRequest, msg)
				continue
			}
			n.ext.mu.Lock()
			empty := w.empty
			n.ext.mu.Unlock()
			if empty > 0 {
				// Meshnode never answers a request with nothing: every try got an empty reply.
				t.extPeer.Store(extPeerForeign)
				return nil, ErrExtUnsupported
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("no answer from %s: %w", t.vpnIP, ctx.Err())
		}
	}
}

// waitTunnel returns the tunnel to vpn, starting a handshake and waiting for it if needed.
func (n *Node) waitTunnel(ctx context.Context, vpn netip.Addr) (*tunnel, error) {
	if vpn == n.vpnIP {
		return nil, fmt.Errorf("%s is this host", vpn)
	}
	if t := n.hosts.byVPNIP(vpn); t != nil {
		return t, nil
	}
	n.hs.trigger(vpn, nil)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w %s: %v", ErrNoTunnel, vpn, ctx.Err())
		case <-tick.C:
			if t := n.hosts.byVPNIP(vpn); t != nil {
				return t, nil
			}
		}
	}
}
