// Package fleet is a load generator for lighthouses and hosts at fleet scale (issue 18):
// many simulated hosts, each with its own certificate, VPN address and underlay address and
// port, each doing a real Noise IX handshake (the handshake package) with one target daemon,
// then speaking the lighthouse protocol (the lighthouse package) over the tunnel: its
// HostUpdateNotification, answers to the target's Test requests, and timed HostQuery
// round trips. The target may be meshnode or any Nebula: only the wire protocol is used.
//
// It is a measuring instrument, not a node: no TUN, no firewall, no replay window, no
// re-handshakes. Every simulated host shares a few UDP sockets bound to the wildcard
// address; a host sends from its own 127.x.y.z address (IP_PKTINFO) and its packets come
// back to the socket by port, and to the host by the index in the header. So the whole
// fleet lives on one loopback device, which the caller puts in a network namespace of its
// own (scripts/fleet.sh, e2e/fleet_test.go).
//
// Certificates for the fleet are made once and cached on disk (Load), so every target is
// measured against the same hosts.
package fleet
