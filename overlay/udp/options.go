package udp

// DefaultBatch is how many datagrams one recvmmsg/sendmmsg moves when Options.Batch is 0;
// Nebula's listen.batch default.
const DefaultBatch = 64

// Options tune the Linux socket. The zero value gives kernel-default buffers and batches of
// DefaultBatch.
type Options struct {
	// ReadBuffer and WriteBuffer are socket buffer sizes in bytes (listen.read_buffer,
	// listen.write_buffer); 0 keeps the kernel default. As root they are forced past
	// net.core.rmem_max/wmem_max (SO_RCVBUFFORCE), otherwise capped by them.
	ReadBuffer, WriteBuffer int
	// Batch is the most datagrams one system call moves (listen.batch).
	Batch int
	// ReusePort sets SO_REUSEPORT, so several sockets (one per reader) can share a port.
	ReusePort bool
	// DisableGSO turns off UDP segmentation offload on send, which is otherwise used when
	// the kernel supports it (Linux 4.18+). The datagrams on the wire are the same.
	DisableGSO bool
	// DisableGRO turns off UDP receive coalescing (UDP_GRO, Linux 5.0+), which otherwise
	// lets one read return many datagrams of a sender's burst at the cost of 1 MiB of
	// buffers per socket and one copy per datagram.
	DisableGRO bool
	// Mark is SO_MARK for every datagram we send (listen.so_mark), for policy routing; 0
	// sets none. Setting it needs CAP_NET_ADMIN, and Listen fails without: datagrams that
	// miss their routing rule could take a path the admin meant to keep them off.
	Mark uint32
}
