package overlay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Host names live only in certificates, and a host sees the certificates of its own peers.
// A lighthouse holds a tunnel to every host that reports to it, so it knows their names (its
// DNS answers from them, node.go resolveName). `meshnode ping db1` before any tunnel to db1
// exists asks the lighthouses the same question over the tunnel it already has to them, as
// an extension query (ext.go): the name in, the VPN IP out (4 or 16 bytes), or an empty
// answer for a name it does not know. This needs no DNS listener (serve_dns is optional and
// usually bound where only some hosts reach it) and is authenticated by the tunnel.

// maxNameLen is the longest name asked for: DNS's limit, far above any certificate's name.
const maxNameLen = 253

// ErrNameUnknown means no lighthouse knows a host of that name.
var ErrNameUnknown = errors.New("no lighthouse knows a host of that name")

// answerNameQuery is a lighthouse's extOpNameQuery handler.
func (n *Node) answerNameQuery(_ *tunnel, body, out []byte) []byte {
	if len(body) == 0 || len(body) > maxNameLen {
		return out
	}
	ip, ok := n.resolveName(strings.ToLower(string(body)))
	if !ok {
		return out
	}
	return append(out, ip.AsSlice()...)
}

// LookupName asks every lighthouse at once for the VPN IP of the host named name and returns
// the first answer. ErrNameUnknown when every lighthouse that answered knows no such host;
// another error when none could be asked (no tunnel to any, or all run Nebula).
func (n *Node) LookupName(ctx context.Context, name string) (netip.Addr, netip.Addr, error) {
	lhs := n.lh.c().hosts
	if len(lhs) == 0 {
		return netip.Addr{}, netip.Addr{}, errors.New("no lighthouses configured")
	}
	if len(name) == 0 || len(name) > maxNameLen {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("%q is not a host name", name)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		lh, ip netip.Addr
		err    error
	}
	answers := make(chan answer, len(lhs))
	for _, lh := range lhs {
		go func() {
			body, err := n.extCall(ctx, lh, extOpNameQuery, []byte(name))
			a := answer{lh: lh, err: err}
			if err == nil {
				if ip, ok := netip.AddrFromSlice(body); ok {
					a.ip = ip.Unmap()
				} else if len(body) != 0 {
					a.err = fmt.Errorf("an answer of %d bytes, not an address", len(body))
				}
			}
			answers <- a
		}()
	}
	var errs []error
	unknown := 0
	for range lhs {
		a := <-answers
		switch {
		case a.err != nil:
			errs = append(errs, fmt.Errorf("lighthouse %s: %w", a.lh, a.err))
		case a.ip.IsValid():
			return a.ip, a.lh, nil
		default:
			unknown++
		}
	}
	if unknown > 0 {
		return netip.Addr{}, netip.Addr{}, ErrNameUnknown
	}
	return netip.Addr{}, netip.Addr{}, errors.Join(errs...)
}
