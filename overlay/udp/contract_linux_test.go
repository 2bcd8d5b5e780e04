package udp_test

import (
	"net/netip"
	"testing"

	"github.com/meshnode/meshnode/overlay/udp"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

func TestSocketMeetsConnContract(t *testing.T) {
	for _, lo := range []string{"127.0.0.1", "::1"} {
		t.Run(lo, func(t *testing.T) {
			udptest.Contract(t, func(t *testing.T) (udp.Conn, udp.Conn) {
				open := func() udp.Conn {
					c, err := udp.Listen(netip.AddrPortFrom(netip.MustParseAddr(lo), 0), udp.Options{Batch: 8})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
					return c
				}
				return open(), open()
			})
		})
	}
}
