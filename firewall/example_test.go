package firewall_test

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/meshnode/meshnode/firewall"
	"gopkg.in/yaml.v3"
)

func Example() {
	const src = `
inbound:
  - port: 22
    proto: tcp
    group: ssh
outbound:
  - port: any
    proto: any
    host: any
`
	var cfg firewall.Config
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		panic(err)
	}
	fw, err := firewall.New(cfg, firewall.Options{LocalAddrs: []netip.Addr{netip.MustParseAddr("10.42.0.1")}})
	if err != nil {
		panic(err)
	}
	// The overlay builds one Peer per tunnel from the certificate the handshake proved.
	peer := firewall.NewPeer("web1", []netip.Prefix{netip.MustParsePrefix("10.42.1.5/16")}, nil,
		[]string{"web", "ssh"}, "Acme", "")

	syn := func(src, dst string, sport, dport uint16) []byte {
		b := make([]byte, 40)
		b[0], b[3], b[8], b[9] = 0x45, 40, 64, 6
		copy(b[12:16], netip.MustParseAddr(src).AsSlice())
		copy(b[16:20], netip.MustParseAddr(dst).AsSlice())
		b[20], b[21], b[22], b[23] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
		b[32], b[33] = 5<<4, 0x02
		return b
	}
	fmt.Println(fw.Verdict(syn("10.42.1.5", "10.42.0.1", 40000, 22), firewall.Inbound, peer))
	fmt.Println(fw.Verdict(syn("10.42.1.5", "10.42.0.1", 40000, 80), firewall.Inbound, peer))
	fmt.Println(fw.Verdict(syn("10.42.0.1", "10.42.1.5", 50000, 80), firewall.Outbound, peer))
	fmt.Println(fw.Verdict(syn("10.42.1.5", "10.42.0.1", 80, 50000), firewall.Inbound, peer))
	// Output:
	// accept/rule
	// drop/no_rule
	// accept/rule
	// accept/conntrack
}
