package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshnode/meshnode/handshake"
	"github.com/meshnode/meshnode/lighthouse"
	"github.com/meshnode/meshnode/overlay/header"
)

// Options configure a Sim. Target and PKI are required.
type Options struct {
	Target netip.AddrPort // the daemon under test
	PKI    *PKI
	Cipher handshake.Cipher // the target's `cipher`
	// Sockets shared by the hosts (host i uses socket i mod Sockets); default 4. Each has
	// one receive goroutine, which also runs the handshake's msg 2 work.
	Sockets int
	// RetryAfter is how long a msg 1 waits for its msg 2 before it is sent again; the n-th
	// retransmission waits n times as long (Nebula's linear backoff). Default 1 s.
	RetryAfter time.Duration
	// Tries is how many times a msg 1 is sent before the host counts as failed; default 5.
	Tries int
	// Lighthouse: send a HostUpdateNotification right after the handshake (and every
	// UpdateInterval if set). Off for a plain-host target, which gets a Test request
	// instead (meshnode confirms a responder's tunnel on its first authenticated packet).
	Lighthouse     bool
	UpdateInterval time.Duration
}

// Counters of what the target sent, for the report and for tests.
type Counters struct {
	TestRequests, LighthouseMsgs, Punches, UpdateAcks, RecvErrors, CloseTunnels, Undecryptable atomic.Int64
}

// Sim is a fleet of simulated hosts and the sockets they share.
type Sim struct {
	opts  Options
	socks []*socket
	hosts []simHost
	C     Counters

	mu      sync.Mutex
	pending map[int]struct{} // hosts with a handshake in flight
	queries map[uint64]time.Time
	qstats  *queryCollector

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

const (
	hostIdle = iota
	hostPending
	hostUp
	hostFailed
)

// simHost is one simulated host. Its receive-side state (recv) is only touched by its
// socket's receive goroutine; everything else is under mu.
type simHost struct {
	mu      sync.Mutex
	state   uint8
	tries   uint8
	in      *handshake.Initiator
	msg1    []byte
	started time.Time
	sentAt  time.Time
	done    func(ok bool, d time.Duration) // the Join that started it
	remote  uint32
	send    *handshake.AEAD
	recv    atomic.Pointer[handshake.AEAD]
	counter uint64
}

// New opens the sockets and starts their receive goroutines; Close stops them.
func New(opts Options) (*Sim, error) {
	if opts.PKI == nil || !opts.Target.IsValid() {
		return nil, errors.New("fleet: Target and PKI are required")
	}
	if opts.Sockets <= 0 {
		opts.Sockets = 4
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Second
	}
	if opts.Tries <= 0 {
		opts.Tries = 5
	}
	s := &Sim{opts: opts, hosts: make([]simHost, len(opts.PKI.Hosts)), pending: map[int]struct{}{}, queries: map[uint64]time.Time{}}
	for range opts.Sockets {
		so, err := openSocket()
		if err != nil {
			s.closeSockets()
			return nil, err
		}
		s.socks = append(s.socks, so)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, so := range s.socks {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.receive(so) }()
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.retransmit(ctx) }()
	if opts.Lighthouse && opts.UpdateInterval > 0 {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.refresh(ctx) }()
	}
	return s, nil
}

// Close stops every goroutine and closes the sockets. The target's tunnels stay until it
// times them out (or the caller stops it).
func (s *Sim) Close() {
	s.cancel()
	s.closeSockets()
	s.wg.Wait()
}

func (s *Sim) closeSockets() {
	for _, so := range s.socks {
		so.conn.Close()
	}
}

// Addr is simulated host i's underlay address and port, as the target sees it.
func (s *Sim) Addr(i int) netip.AddrPort {
	return netip.AddrPortFrom(HostUnderlay(i), s.socks[i%len(s.socks)].port)
}

// Up reports whether host i has a tunnel to the target.
func (s *Sim) Up(i int) bool {
	h := &s.hosts[i]
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state == hostUp
}

func (s *Sim) sendRaw(i int, b []byte) error {
	return s.socks[i%len(s.socks)].sendFrom(b, HostUnderlay(i), s.opts.Target)
}

// start begins host i's handshake; local index i+1 names the host in the target's answers.
func (s *Sim) start(i int, done func(bool, time.Duration)) error {
	ph := s.opts.PKI.Hosts[i]
	creds, err := handshake.NewCredentials(ph.Cert, ph.Key)
	if err != nil {
		return err
	}
	in, msg1, err := handshake.Initiate(&handshake.Config{Cipher: s.opts.Cipher, Local: creds, Pool: s.opts.PKI.Pool}, uint32(i+1))
	if err != nil {
		return err
	}
	h := &s.hosts[i]
	now := time.Now()
	h.mu.Lock()
	if h.state == hostPending || h.state == hostUp {
		h.mu.Unlock()
		return fmt.Errorf("fleet: host %d already joined", i)
	}
	h.state, h.tries, h.in, h.msg1, h.started, h.sentAt, h.done = hostPending, 1, in, msg1, now, now, done
	h.mu.Unlock()
	s.mu.Lock()
	s.pending[i] = struct{}{}
	s.mu.Unlock()
	s.sendRaw(i, msg1) // a lost send is a lost packet: the retransmission covers it
	return nil
}

// finish ends host i's pending handshake; the caller holds h.mu.
func (s *Sim) finish(i int, h *simHost, ok bool) func() {
	if ok {
		h.state = hostUp
	} else {
		h.state = hostFailed
	}
	done, d := h.done, time.Since(h.started)
	h.in, h.msg1, h.done = nil, nil, nil
	return func() {
		s.mu.Lock()
		delete(s.pending, i)
		s.mu.Unlock()
		if done != nil {
			done(ok, d)
		}
	}
}

// retransmit resends msg 1 of every handshake whose answer is late, and gives up on those
// out of tries.
func (s *Sim) retransmit(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var due []int
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due = due[:0]
		s.mu.Lock()
		for i := range s.pending {
			due = append(due, i)
		}
		s.mu.Unlock()
		now := time.Now()
		for _, i := range due {
			h := &s.hosts[i]
			h.mu.Lock()
			if h.state != hostPending || now.Sub(h.sentAt) < time.Duration(h.tries)*s.opts.RetryAfter {
				h.mu.Unlock()
				continue
			}
			if int(h.tries) >= s.opts.Tries {
				after := s.finish(i, h, false)
				h.mu.Unlock()
				after()
				continue
			}
			h.tries++
			h.sentAt = now
			msg1 := h.msg1
			h.mu.Unlock()
			s.sendRaw(i, msg1)
		}
	}
}

// receive reads one socket and hands each datagram to the host its header names.
func (s *Sim) receive(so *socket) {
	buf := make([]byte, 9000)
	out := make([]byte, 0, 2048)
	var hdr header.Header
	for {
		n, _, err := so.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pkt := buf[:n]
		if hdr.Parse(pkt) != nil || hdr.RemoteIndex == 0 || int(hdr.RemoteIndex) > len(s.hosts) {
			continue
		}
		i := int(hdr.RemoteIndex) - 1
		switch hdr.Type {
		case header.Handshake:
			s.msg2(i, pkt)
		case header.RecvError:
			s.C.RecvErrors.Add(1)
		case header.CloseTunnel:
			s.C.CloseTunnels.Add(1)
		case header.Test, header.LightHouse:
			recv := s.hosts[i].recv.Load()
			if recv == nil {
				continue
			}
			pt, err := recv.Open(out[:0], pkt[:header.Len], pkt[header.Len:], hdr.Counter)
			if err != nil {
				s.C.Undecryptable.Add(1)
				continue
			}
			if hdr.Type == header.Test {
				if hdr.Subtype == header.SubtypeTestRequest {
					s.C.TestRequests.Add(1)
					s.seal(i, header.Test, header.SubtypeTestReply, pt)
				}
				continue
			}
			s.C.LighthouseMsgs.Add(1)
			s.meta(i, pt)
		}
	}
}

func (s *Sim) msg2(i int, pkt []byte) {
	h := &s.hosts[i]
	h.mu.Lock()
	if h.state != hostPending {
		h.mu.Unlock()
		return
	}
	res, err := h.in.Complete(pkt)
	if err != nil {
		if handshake.Retryable(err) {
			h.mu.Unlock()
			return
		}
		after := s.finish(i, h, false)
		h.mu.Unlock()
		after()
		return
	}
	h.remote, h.send, h.counter = res.RemoteIndex, res.Send, 2
	h.recv.Store(res.Recv)
	after := s.finish(i, h, true)
	h.mu.Unlock()
	if s.opts.Lighthouse {
		s.update(i)
	} else {
		s.seal(i, header.Test, header.SubtypeTestRequest, nil)
	}
	after()
}

// update sends host i's HostUpdateNotification: its VPN address and the one underlay
// address it has.
func (s *Sim) update(i int) {
	m := lighthouse.Meta{Type: lighthouse.HostUpdateNotification, VpnIP: HostVPN(i), V4: []netip.AddrPort{s.Addr(i)}}
	s.seal(i, header.LightHouse, 0, m.Marshal(nil))
}

// seal encrypts payload on host i's tunnel and sends it. The first data packet carries
// counter 3, after the two handshake messages, as Nebula's do.
func (s *Sim) seal(i int, t header.Type, sub uint8, payload []byte) {
	h := &s.hosts[i]
	pkt := make([]byte, header.Len, header.Len+len(payload)+16)
	h.mu.Lock()
	if h.state != hostUp {
		h.mu.Unlock()
		return
	}
	h.counter++
	header.Encode(pkt, t, sub, h.remote, h.counter)
	pkt = h.send.Seal(pkt, pkt[:header.Len], payload, h.counter)
	h.mu.Unlock()
	s.sendRaw(i, pkt)
}

func (s *Sim) meta(i int, pt []byte) {
	var m lighthouse.Meta
	if lighthouse.Unmarshal(pt, &m) != nil {
		return
	}
	switch m.Type {
	case lighthouse.HostQueryReply:
		s.queryReply(i, &m)
	case lighthouse.HostPunchNotification:
		s.C.Punches.Add(1)
	case lighthouse.HostUpdateNotificationAck:
		s.C.UpdateAcks.Add(1)
	}
}

// refresh re-sends every joined host's update once per UpdateInterval, spread evenly, as
// hosts do every lighthouse.interval (so a lighthouse that ages out entries keeps them).
func (s *Sim) refresh(ctx context.Context) {
	const tick = 100 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	per := max(1, int(int64(len(s.hosts))*int64(tick)/int64(s.opts.UpdateInterval)))
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for range per {
			if s.Up(next) {
				s.update(next)
			}
			next = (next + 1) % len(s.hosts)
		}
	}
}

// pace returns a function that sleeps until the k-th event of a stream at rate per second
// is due (rate 0: never sleeps).
func pace(rate float64) func(k int) {
	t0 := time.Now()
	return func(k int) {
		if rate <= 0 {
			return
		}
		if d := time.Until(t0.Add(time.Duration(float64(k) / rate * float64(time.Second)))); d > 0 {
			time.Sleep(d)
		}
	}
}

// JoinStats describe one Join.
type JoinStats struct {
	Hosts   int     `json:"hosts"`
	Joined  int     `json:"joined"`
	Failed  int     `json:"failed"`
	Retries int64   `json:"retries"`    // msg 1 retransmissions
	Late    int     `json:"late"`       // handshakes that needed a retransmission
	Seconds float64 `json:"seconds"`    // first msg 1 to the last answer or failure
	Rate    float64 `json:"rate"`       // joined per second
	Offered float64 `json:"offered"`    // the rate asked for, 0 for as fast as the concurrency allows
	P50ms   float64 `json:"p50_ms"`     // first msg 1 to msg 2, joined hosts
	P99ms   float64 `json:"p99_ms"`     //
	CPU     float64 `json:"cpu_s"`      // the target's CPU seconds meanwhile (filled by the caller)
	SelfCPU float64 `json:"self_cpu_s"` // the generator's own CPU seconds meanwhile (filled by the caller)
	Drops   int64   `json:"udp_drops"`  // UDP receive-buffer drops in the namespace meanwhile (filled by the caller)
	PerCPUs float64 `json:"per_cpu_s"`  // joined per target CPU second (filled by the caller)
}

// Join makes hosts [from, to) handshake with the target, at most concurrency at once and,
// with rate > 0, starting rate per second. progress (may be nil) is called with the number
// joined so far after each join, from the receive goroutines.
func (s *Sim) Join(ctx context.Context, from, to, concurrency int, rate float64, progress func(joined int)) JoinStats {
	if concurrency <= 0 {
		concurrency = 128
	}
	st := JoinStats{Hosts: to - from, Offered: rate}
	slots := make(chan struct{}, concurrency)
	lat := newLatencies(to - from)
	var mu sync.Mutex
	var wg sync.WaitGroup
	retries0 := s.retries()
	done := func(ok bool, d time.Duration) {
		mu.Lock()
		if ok {
			st.Joined++
			lat.add(d)
			if d >= s.opts.RetryAfter {
				st.Late++
			}
		} else {
			st.Failed++
		}
		n := st.Joined
		mu.Unlock()
		if ok && progress != nil {
			progress(n)
		}
		<-slots
		wg.Done()
	}
	wait := pace(rate)
	t0 := time.Now()
	for i := from; i < to && ctx.Err() == nil; i++ {
		wait(i - from)
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		if err := s.start(i, done); err != nil {
			mu.Lock()
			st.Failed++
			mu.Unlock()
			<-slots
			wg.Done()
		}
	}
	wg.Wait()
	st.Seconds = time.Since(t0).Seconds()
	st.Retries = s.retries() - retries0
	if st.Seconds > 0 {
		st.Rate = float64(st.Joined) / st.Seconds
	}
	st.P50ms, st.P99ms = lat.ms(0.50), lat.ms(0.99)
	return st
}

// retries is the number of msg 1 retransmissions so far, read from the hosts' tries.
func (s *Sim) retries() int64 {
	var n int64
	for i := range s.hosts {
		h := &s.hosts[i]
		h.mu.Lock()
		if h.tries > 1 {
			n += int64(h.tries - 1)
		}
		h.mu.Unlock()
	}
	return n
}
