package overlay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/meshnode/meshnode/overlay/header"
)

// meshnode extensions ride inside Nebula's encrypted Test messages, so they need no new
// message type on the wire. A request is a Test request whose payload starts with extMagic;
// a meshnode peer answers with a Test reply carrying the same id and the op with its high bit
// set. Nebula 1.6 answers every Test request by echoing its payload, so an echo (a reply
// whose op lacks the high bit) tells the asker the peer does not speak the extension, and
// the extra bytes cost Nebula nothing: it treats them as a liveness probe.
//
// Layout: "MNX1" | op (1 byte) | request id (4 bytes, big endian) | body.
const (
	extMagic     = "MNX1"
	extHeaderLen = len(extMagic) + 1 + 4
	extAnswerBit = 0x80
	// extMaxBody keeps an extension message, sealed and framed, inside one 1280-byte
	// underlay datagram, so it is never fragmented; handlers chunk larger answers.
	extMaxBody = 1150
)

// Extension ops. Queries are below extAnswerBit.
const (
	extOpFirewallQuery  byte = 1
	extOpBlocklistQuery byte = 2
)

// ErrExtUnsupported means the peer answered an extension request the way Nebula does, by
// echoing it: it is not meshnode, or a meshnode that does not know this op.
var ErrExtUnsupported = errors.New("the peer does not support this meshnode query (it may be a Nebula host)")

// extHandler answers an extension query from an authenticated peer. It runs on the receive
// path, so it must not block; it appends its answer body to out and returns it (at most
// extMaxBody bytes; longer answers are refused).
type extHandler func(t *tunnel, body, out []byte) []byte

type extAnswer struct {
	body        []byte
	unsupported bool
}

type extWaiter struct {
	peer netip.Addr
	c    chan extAnswer
}

// extState holds the registered handlers and the callers waiting for answers.
type extState struct {
	mu       sync.Mutex
	handlers map[byte]extHandler
	waiters  map[uint32]extWaiter
	nextID   uint32
}

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

// handleTestRequest answers a Test request: an extension query goes to its handler; anything
// else (liveness probes, pings, unknown ops) is echoed as Nebula does.
func (n *Node) handleTestRequest(t *tunnel, pt []byte) {
	op, id, body, ok := parseExt(pt)
	if !ok || op&extAnswerBit != 0 {
		n.sendEncrypted(t, header.Test, header.SubtypeTestReply, pt)
		return
	}
	h := n.ext.handler(op)
	if h == nil {
		n.sendEncrypted(t, header.Test, header.SubtypeTestReply, pt)
		return
	}
	out := appendExt(make([]byte, 0, extHeaderLen+256), op|extAnswerBit, id)
	out = h(t, body, out)
	if len(out)-extHeaderLen > extMaxBody {
		n.log.Warn("extension answer too large; not sent", "op", op, "bytes", len(out)-extHeaderLen)
		return
	}
	n.sendEncrypted(t, header.Test, header.SubtypeTestReply, out)
}

// handleTestReply wakes pingers and, for extension answers, the caller waiting on the id.
// An answer only counts when it comes from the peer the request was sent to.
func (n *Node) handleTestReply(t *tunnel, pt []byte) {
	n.pings.answer(t.vpnIP)
	op, id, body, ok := parseExt(pt)
	if !ok {
		return
	}
	n.ext.mu.Lock()
	w, found := n.ext.waiters[id]
	if found && w.peer == t.vpnIP {
		delete(n.ext.waiters, id)
	}
	n.ext.mu.Unlock()
	if !found || w.peer != t.vpnIP {
		return
	}
	a := extAnswer{unsupported: op&extAnswerBit == 0}
	if !a.unsupported {
		a.body = append([]byte(nil), body...)
	}
	w.c <- a // buffered, and the waiter was removed: never blocks
}

// extCall sends one extension query to peer (bringing the tunnel up if needed) and waits for
// its answer body. A peer that echoes the query gets ErrExtUnsupported.
func (n *Node) extCall(ctx context.Context, peer netip.Addr, op byte, body []byte) ([]byte, error) {
	if len(body) > extMaxBody {
		return nil, fmt.Errorf("extension query of %d bytes is too large", len(body))
	}
	t, err := n.waitTunnel(ctx, peer)
	if err != nil {
		return nil, err
	}
	c := make(chan extAnswer, 1)
	n.ext.mu.Lock()
	if n.ext.waiters == nil {
		n.ext.waiters = map[uint32]extWaiter{}
	}
	n.ext.nextID++
	id := n.ext.nextID
	n.ext.waiters[id] = extWaiter{peer: peer, c: c}
	n.ext.mu.Unlock()
	defer func() {
		n.ext.mu.Lock()
		delete(n.ext.waiters, id)
		n.ext.mu.Unlock()
	}()
	msg := append(appendExt(make([]byte, 0, extHeaderLen+len(body)), op, id), body...)
	n.sendEncrypted(t, header.Test, header.SubtypeTestRequest, msg)
	select {
	case a := <-c:
		if a.unsupported {
			return nil, ErrExtUnsupported
		}
		return a.body, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer from %s: %w", peer, ctx.Err())
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
