package overlay

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/meshnode/meshnode/internal/prom"
	"github.com/meshnode/meshnode/internal/prom/promtest"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/meshnode/meshnode/cert/certtest"
	"github.com/meshnode/meshnode/overlay/header"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

// pathPacket is the inner packet size of the data-path benchmarks, the same as the AEAD
// benchmarks in handshake so the two read side by side.
const pathPacket = 1400

// pathPair is two running nodes with a tunnel between them, for driving one direction of the
// data path by hand: a seals with encryptInside, b opens with handleOutside.
type pathPair struct {
	a, b   *Node
	aFromB netip.AddrPort // a's address as b's tunnel sees it
	inner  []byte         // an IPv4/UDP packet a -> b of pathPacket bytes
}

func newPathPair(tb testing.TB, cipherName string) *pathPair {
	tb.Helper()
	ca := certtest.NewCA(tb, "path-bench")
	net := udptest.NewNetwork(1)
	vpn := []netip.Addr{netip.MustParseAddr("10.42.0.1"), netip.MustParseAddr("10.42.0.2")}
	under := []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:4242"), netip.MustParseAddrPort("198.18.0.2:4242")}
	var nodes [2]*Node
	for i := range 2 {
		name := fmt.Sprintf("host%d", i+1)
		h := ca.NewHost(tb, name, vpn[i].String()+"/16")
		y := fmt.Sprintf("pki:\n  ca: %q\n  cert: %q\n  key: %q\n", ca.PEM, h.PEM, h.KeyPEM)
		y += fmt.Sprintf("static_host_map:\n  %q: [%q]\n", vpn[1-i].String(), under[1-i].String())
		y += "handshakes:\n  try_interval: 20ms\n"
		y += "tun:\n  mtu: 1500\n"
		y += "cipher: " + cipherName + "\n"
		y += "firewall:\n  outbound: [{port: any, proto: any, host: any}]\n  inbound: [{port: any, proto: any, host: any}]\n"
		cfg, err := ParseConfig([]byte(y), name+".yml")
		if err != nil {
			tb.Fatal(err)
		}
		pki, err := LoadPKI(cfg, time.Now())
		if err != nil {
			tb.Fatal(err)
		}
		conn, err := net.Listen(under[i])
		if err != nil {
			tb.Fatal(err)
		}
		n, err := New(cfg, pki, Options{Device: tuntest.NewDevice(name, 1500), Conn: conn, Tick: 5 * time.Millisecond})
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = n.Run(ctx) }()
		tb.Cleanup(func() { cancel(); <-done })
		nodes[i] = n
	}
	p := &pathPair{a: nodes[0], b: nodes[1]}
	p.a.Connect(vpn[1])
	deadline := time.Now().Add(10 * time.Second)
	for p.a.hosts.byVPNIP(vpn[1]) == nil || p.b.hosts.byVPNIP(vpn[0]) == nil {
		if time.Now().After(deadline) {
			tb.Fatal("no tunnel within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.aFromB = p.b.hosts.byVPNIP(vpn[0]).remoteAddr()
	p.inner = tuntest.IPv4UDP(netip.AddrPortFrom(vpn[0], 5000), netip.AddrPortFrom(vpn[1], 6000),
		make([]byte, pathPacket-28))
	return p
}

// seal runs a's send path on a copy of the inner packet in buf (which needs header and tag
// room) and returns the datagram.
func (p *pathPair) seal(tb testing.TB, buf []byte, now int64) []byte {
	copy(buf[header.Len:], p.inner)
	m, ok := p.a.encryptInside(buf, len(p.inner), now)
	if !ok {
		tb.Fatal("encryptInside refused the packet")
	}
	return m.Buf[:m.N]
}

// pathBatch is how many packets share one clock reading in the benchmarks: the data path
// reads the clock once per batch (listen.batch, 64 by default), not per packet.
const pathBatch = 64

// BenchmarkDataPath is the per-packet cost of each direction of the data path (route or
// index lookup, replay window, firewall with a conntrack hit, counters, header, AEAD) next to
// the bare AEAD on the same 1400 bytes. System calls are not included.
func BenchmarkDataPath(b *testing.B) {
	for _, c := range []string{"aes", "chachapoly"} {
		b.Run(c, func(b *testing.B) {
			p := newPathPair(b, c)
			b.Run("encrypt", func(b *testing.B) {
				buf := make([]byte, header.Len+pathPacket+tagLen)
				copy(buf[header.Len:], p.inner)
				b.SetBytes(pathPacket)
				b.ReportAllocs()
				var now int64
				for i := 0; b.Loop(); i++ {
					if i%pathBatch == 0 {
						now = time.Now().UnixNano()
					}
					// Sealing in place garbles the inner headers the firewall reads: restore them.
					copy(buf[header.Len:header.Len+28], p.inner)
					if _, ok := p.a.encryptInside(buf, pathPacket, now); !ok {
						b.Fatal("refused")
					}
				}
			})
			b.Run("decrypt", func(b *testing.B) {
				// Every datagram has a fresh counter (the replay window): seal them ahead in
				// slots, outside the timer. Each is copied before opening, as in the bare case.
				const slots = 1024
				sealed := make([][]byte, slots)
				for i := range sealed {
					sealed[i] = make([]byte, header.Len+pathPacket+tagLen)
				}
				work := make([]byte, header.Len+pathPacket+tagLen)
				b.SetBytes(pathPacket)
				b.ReportAllocs()
				i := slots
				var now time.Time
				for b.Loop() {
					if i%pathBatch == 0 {
						now = time.Now()
					}
					if i == slots {
						b.StopTimer()
						now := time.Now().UnixNano()
						for j := range sealed {
							p.seal(b, sealed[j], now)
						}
						i = 0
						b.StartTimer()
					}
					copy(work, sealed[i])
					i++
					if p.b.handleOutside(work, p.aFromB, now) == nil {
						b.Fatal("not delivered")
					}
				}
			})
			key := make([]byte, 32)
			var bare cipher.AEAD
			if c == "aes" {
				blk, _ := aes.NewCipher(key)
				bare, _ = cipher.NewGCM(blk)
			} else {
				bare, _ = chacha20poly1305.New(key)
			}
			nonce, hdr := make([]byte, 12), make([]byte, header.Len)
			b.Run("bare-seal", func(b *testing.B) {
				buf := make([]byte, pathPacket+tagLen)
				b.SetBytes(pathPacket)
				b.ReportAllocs()
				for b.Loop() {
					bare.Seal(buf[:0], nonce, buf[:pathPacket], hdr)
				}
			})
			b.Run("bare-open", func(b *testing.B) {
				ct := bare.Seal(nil, nonce, make([]byte, pathPacket), hdr)
				work := make([]byte, len(ct))
				b.SetBytes(pathPacket)
				b.ReportAllocs()
				for b.Loop() {
					copy(work, ct)
					if _, err := bare.Open(work[:0], nonce, work, hdr); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// The steady state of both directions allocates nothing per packet.
func TestDataPathDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	for _, c := range []string{"aes", "chachapoly"} {
		p := newPathPair(t, c)
		buf := make([]byte, header.Len+pathPacket+tagLen)
		p.seal(t, buf, time.Now().UnixNano()) // the first packet of a flow fills conntrack
		allocs := testing.AllocsPerRun(200, func() {
			d := p.seal(t, buf, time.Now().UnixNano())
			if p.b.handleOutside(d, p.aFromB, time.Now()) == nil {
				t.Fatal("not delivered")
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per packet (seal and open), want 0", c, allocs)
		}
	}
}

// meshnode_packets_total and meshnode_bytes_total are summed from the tunnels at scrape time
// and keep the counts of tunnels that are gone.
func TestTrafficCountersSurviveTheTunnel(t *testing.T) {
	p := newPathPair(t, "aes")
	reg := prom.NewRegistry()
	reg.MustRegister(p.a.m.traffic)
	buf := make([]byte, header.Len+pathPacket+tagLen)
	const k = 5
	for range k {
		p.seal(t, buf, time.Now().UnixNano())
	}
	want := fmt.Sprintf(`
# HELP meshnode_packets_total Tunneled IP packets by direction (in = from peers).
# TYPE meshnode_packets_total counter
meshnode_packets_total{direction="in"} 0
meshnode_packets_total{direction="out"} %d
`, k)
	if err := promtest.Compare(reg, want, "meshnode_packets_total"); err != nil {
		t.Fatal(err)
	}
	tun := p.a.hosts.byVPNIP(p.b.vpnIP)
	p.a.removeTunnel(tun)
	if got := p.a.hosts.traffic(); got.packetsOut != k || got.bytesOut != k*pathPacket {
		t.Fatalf("after the tunnel went: %+v, want %d packets and %d bytes out", got, k, k*pathPacket)
	}
}
