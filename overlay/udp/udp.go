// Package udp is the overlay's underlay transport: batches of datagrams with their peer
// address. The Linux socket (Listen) moves batches with recvmmsg/sendmmsg and uses UDP
// GSO/GRO where the kernel has them; it lives beside an in-memory network (udptest) with
// loss, reorder, duplicate, partition and NAT knobs for tests. Both pass udptest.Contract.
package udp

import (
	"errors"
	"net/netip"
)

// ErrClosed is returned by ReadBatch and WriteBatch after Close.
var ErrClosed = errors.New("udp: conn closed")

// Message is one datagram. On read, Buf is the caller's buffer, N the received length and
// Addr the source; on write, Buf[:N] is sent to Addr.
type Message struct {
	Buf  []byte
	N    int
	Addr netip.AddrPort
}

// Conn is a UDP socket. ReadBatch blocks until at least one datagram arrives and returns how
// many of msgs it filled; a datagram longer than its Buf is truncated. WriteBatch sends msgs
// in order and returns how many were sent; on error, msgs[n] is the one that failed. After
// Close both return ErrClosed, and Close unblocks a waiting ReadBatch. One reader and one
// writer may use a Conn at once.
type Conn interface {
	ReadBatch(msgs []Message) (int, error)
	WriteBatch(msgs []Message) (int, error)
	LocalAddr() netip.AddrPort
	Close() error
}
