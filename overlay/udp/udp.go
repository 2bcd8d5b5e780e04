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

// Message is one datagram. On read, Buf is the caller's buffer (its length bounds the
// datagram), N the received length, Addr the source and Data the datagram's N bytes: either
// Buf[:N] or, from a socket that reads into memory of its own (the Linux socket with
// UDP_GRO), a view of that memory, saving a copy. Data is valid until the next ReadBatch and
// may be changed in place. On write, Buf[:N] is sent to Addr and Data is not used.
type Message struct {
	Buf  []byte
	N    int
	Addr netip.AddrPort
	Data []byte
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
