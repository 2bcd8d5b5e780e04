package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// netlink is a NETLINK_ROUTE socket for the two requests ioctls cannot make well: adding an
// address with its prefix, and adding routes. Each request waits for the kernel's ack.
type netlink struct {
	fd  int
	seq uint32
	buf []byte
}

func openNetlink() (*netlink, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &netlink{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (n *netlink) close() { unix.Close(n.fd) }

// request sends one message and returns the errno of the kernel's ack.
func (n *netlink) request(typ uint16, body []byte) error {
	return n.requestFlags(typ, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body)
}

// requestFlags is request with the modifier flags of the message (create, replace, ...).
func (n *netlink) requestFlags(typ, flags uint16, body []byte) error {
	n.seq++
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(msg[4:6], typ)
	ne.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	ne.PutUint32(msg[8:12], n.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(n.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	for {
		nr, _, err := unix.Recvfrom(n.fd, n.buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for b := n.buf[:nr]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(ne.Uint32(b[0:4]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return fmt.Errorf("netlink: malformed reply")
			}
			if ne.Uint16(b[4:6]) == unix.NLMSG_ERROR && ne.Uint32(b[8:12]) == n.seq {
				if l < unix.SizeofNlMsghdr+4 {
					return fmt.Errorf("netlink: short ack")
				}
				if errno := -int32(ne.Uint32(b[16:20])); errno != 0 {
					return syscall.Errno(errno)
				}
				return nil
			}
			b = b[min(nlAlign(l), len(b)):]
		}
	}
}

func nlAlign(l int) int { return (l + 3) &^ 3 }

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for range nlAlign(l) - l {
		b = append(b, 0)
	}
	return b
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// addAddr assigns p (our address and the mask of the network behind the device) to the
// link; the kernel then routes p's network through it.
func (n *netlink) addAddr(index uint32, p netip.Prefix) error {
	ip := p.Addr().Unmap()
	body := []byte{family(ip), uint8(p.Bits()), 0, unix.RT_SCOPE_UNIVERSE}
	body = binary.NativeEndian.AppendUint32(body, index)
	if ip.Is6() {
		body[2] = unix.IFA_F_NODAD // usable at once, nothing else is on the link
	}
	body = appendAttr(body, unix.IFA_LOCAL, ip.AsSlice())
	body = appendAttr(body, unix.IFA_ADDRESS, ip.AsSlice())
	if err := n.request(unix.RTM_NEWADDR, body); err != nil {
		return fmt.Errorf("add address %v: %w", p, err)
	}
	return nil
}

// addRoute routes dst through the link, in the main table.
func (n *netlink) addRoute(index uint32, dst netip.Prefix) error {
	return n.route(unix.RTM_NEWROUTE, index, Route{Dst: dst})
}

// route adds (RTM_NEWROUTE) or deletes (RTM_DELROUTE) r through the link. A route carries
// its MTU as a route metric, so the kernel sizes packets for that destination by it.
func (n *netlink) route(typ uint16, index uint32, r Route) error {
	dst := r.Dst.Masked()
	body := []byte{
		family(dst.Addr()), uint8(dst.Bits()), 0, 0,
		unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_LINK, unix.RTN_UNICAST,
		0, 0, 0, 0, // flags
	}
	body = appendAttr(body, unix.RTA_DST, dst.Addr().AsSlice())
	body = appendAttr(body, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, index))
	if r.Metric > 0 {
		body = appendAttr(body, unix.RTA_PRIORITY, binary.NativeEndian.AppendUint32(nil, uint32(r.Metric)))
	}
	if r.MTU > 0 && typ == unix.RTM_NEWROUTE {
		mtu := appendAttr(nil, unix.RTAX_MTU, binary.NativeEndian.AppendUint32(nil, uint32(r.MTU)))
		body = appendAttr(body, unix.RTA_METRICS, mtu)
	}
	op, flags := "add", uint16(unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	if typ == unix.RTM_DELROUTE {
		op, flags = "delete", 0
	}
	if err := n.requestFlags(typ, flags, body); err != nil {
		return fmt.Errorf("%s route %v: %w", op, dst, err)
	}
	return nil
}
