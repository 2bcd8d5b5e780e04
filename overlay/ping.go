package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/meshnode/meshnode/overlay/header"
)

// ErrNoTunnel is returned by Ping when no tunnel to the peer could be established in time.
var ErrNoTunnel = errors.New("no tunnel to the peer")

// pingWaiters are callers of Ping waiting for a Test reply from a peer. Any reply from the
// peer answers them: Nebula 1.6 does not echo the request payload (see ext.go), so it cannot
// be matched.
type pingWaiters struct {
	mu sync.Mutex
	m  map[netip.Addr][]chan struct{}
}

func (p *pingWaiters) add(vpn netip.Addr) chan struct{} {
	c := make(chan struct{})
	p.mu.Lock()
	if p.m == nil {
		p.m = map[netip.Addr][]chan struct{}{}
	}
	p.m[vpn] = append(p.m[vpn], c)
	p.mu.Unlock()
	return c
}

func (p *pingWaiters) remove(vpn netip.Addr, c chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.m[vpn]
	for i, x := range l {
		if x == c {
			p.m[vpn] = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(p.m[vpn]) == 0 {
		delete(p.m, vpn)
	}
}

func (p *pingWaiters) answer(vpn netip.Addr) {
	p.mu.Lock()
	l := p.m[vpn]
	delete(p.m, vpn)
	p.mu.Unlock()
	for _, c := range l {
		close(c)
	}
}

// Ping measures the round trip of a Test message through the tunnel to vpn, first
// establishing the tunnel if needed (as traffic would). It proves the peer's daemon holds
// the tunnel, independently of either side's firewall.
func (n *Node) Ping(ctx context.Context, vpn netip.Addr) (time.Duration, error) {
	t, err := n.waitTunnel(ctx, vpn)
	if err != nil {
		return 0, err
	}
	c := n.pings.add(vpn)
	defer n.pings.remove(vpn, c)
	start := time.Now()
	n.sendEncrypted(t, header.Test, header.SubtypeTestRequest, nil)
	select {
	case <-c:
		return time.Since(start), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("no reply from %s: %w", vpn, ctx.Err())
	}
}
