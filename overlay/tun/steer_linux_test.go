package tun_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay/tun"
	"github.com/meshnode/meshnode/overlay/tun/tuntest"
)

// The kernel steers packets of up to tun.SmallPacketMax bytes to the priority queue and
// everything larger to the data queue, whatever the flow, with and without offloads.
func TestPriorityQueueTakesSmallPackets(t *testing.T) {
	for _, offload := range []bool{false, true} {
		name := "plain"
		if offload {
			name = "offload"
		}
		t.Run(name, func(t *testing.T) {
			ns := netns(t)
			d := open(t, ns, tun.Options{Name: "mesh0", Addr: vpnAddr, PriorityQueue: true, Offload: offload})
			if err := d.PriorityQueueErr(); err != nil {
				t.Fatalf("steering program refused: %v", err)
			}
			prio := d.PriorityQueue()
			if prio == nil {
				t.Fatal("no priority queue")
			}
			if n := len(d.Queues()); n != 1 {
				t.Fatalf("%d data queues, want 1 (the priority queue is not one of them)", n)
			}
			if link := ip(t, "-n", ns, "-d", "link", "show", "mesh0"); !strings.Contains(link, "multi_queue") {
				t.Errorf("device is not multi-queue:\n%s", link)
			}
			type arrival struct {
				prio bool
				pkt  []byte
			}
			ch := make(chan arrival, 1024)
			for i, q := range []tun.Device{d.Queues()[0], prio} {
				go func() {
					bufs, sizes := [][]byte{make([]byte, 65535)}, []int{0}
					for {
						if _, err := q.Read(bufs, sizes); err != nil {
							return
						}
						ch <- arrival{i == 1, append([]byte(nil), bufs[0][:sizes[0]]...)}
					}
				}()
			}
			const flows = 16
			var conns []*net.UDPConn
			inNetns(t, ns, func() {
				for range flows {
					c, err := net.ListenUDP("udp4", nil)
					if err != nil {
						t.Error(err)
						return
					}
					conns = append(conns, c)
				}
			})
			dst := netip.MustParseAddrPort("10.42.5.5:7")
			// 28 bytes of headers: 228 bytes of payload is exactly SmallPacketMax.
			small, large := make([]byte, tun.SmallPacketMax-28), make([]byte, tun.SmallPacketMax-27)
			for _, c := range conns {
				defer c.Close()
				for _, b := range [][]byte{small, large} {
					if _, err := c.WriteToUDPAddrPort(b, dst); err != nil {
						t.Fatal(err)
					}
				}
			}
			seen := map[bool]int{}
			deadline := time.After(5 * time.Second)
			for seen[true]+seen[false] < 2*flows {
				select {
				case a := <-ch:
					p, err := tuntest.Parse(a.pkt)
					if err != nil || p.Proto != tuntest.ProtoUDP || p.DstPort != 7 {
						continue
					}
					isSmall := len(a.pkt) <= tun.SmallPacketMax
					if a.prio != isSmall {
						t.Errorf("a %d-byte packet arrived on the %s queue", len(a.pkt), map[bool]string{true: "priority", false: "data"}[a.prio])
					}
					seen[isSmall]++
				case <-deadline:
					t.Fatalf("saw %v of %d small and %d large", seen, flows, flows)
				}
			}
			// Writes on the priority queue reach the kernel: an echo to our own address
			// comes back (a small packet, so on the priority queue).
			if _, err := prio.Write([][]byte{tuntest.IPv4ICMPEcho(peerIP, vpnAddr.Addr(), 9, 9, nil)}); err != nil {
				t.Fatal(err)
			}
			for {
				select {
				case a := <-ch:
					if p, err := tuntest.Parse(a.pkt); err == nil && p.ICMPType == tuntest.ICMPEchoReply && p.ICMPID == 9 {
						if !a.prio {
							t.Error("echo reply on the data queue")
						}
						return
					}
				case <-time.After(5 * time.Second):
					t.Fatal("no echo reply to a packet written on the priority queue")
				}
			}
		})
	}
}
