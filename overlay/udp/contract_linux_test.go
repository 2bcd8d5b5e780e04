package udp_test

import (
	"net/netip"
	"testing"

	"github.com/meshnode/meshnode/overlay/udp"
	"github.com/meshnode/meshnode/overlay/udp/udptest"
)

func TestSocketMeetsConnContract(t *testing.T) {
	offloads := map[string]udp.Options{
		"offloads":    {Batch: 8},
		"no GRO":      {Batch: 8, DisableGRO: true},
		"no offloads": {Batch: 8, DisableGRO: true, DisableGSO: true},
	}
	for _, lo := range []string{"127.0.0.1", "::1"} {
		for name, opts := range offloads {
			t.Run(lo+"/"+name, func(t *testing.T) {
				udptest.Contract(t, func(t *testing.T) (udp.Conn, udp.Conn) {
					open := func() udp.Conn {
						c, err := udp.Listen(netip.AddrPortFrom(netip.MustParseAddr(lo), 0), opts)
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
}
