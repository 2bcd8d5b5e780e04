// Package firewall is meshnode's group-based stateful firewall: it decides, for one inner IP
// packet, the peer identity the overlay proved in the handshake, and a direction, whether the
// packet may pass.
//
// It is pure: no sockets, no goroutines, no global state. The node runtime parses nothing
// itself; it calls [Firewall.Verdict] on every packet in both directions, counts the returned
// [Reason] and, for [Reject], asks [RejectPacket] for the reply to send back.
//
// # Semantics (Nebula 1.6 compatible)
//
// The firewall is default deny in both directions: with no outbound rules nothing leaves, with
// no inbound rules nothing arrives, except packets of flows that conntrack already admitted in
// the other direction. A rule matches when
//
//	port AND proto AND (ca_name OR ca_sha, when either is set) AND (host OR group(s) OR cidr) AND local_cidr
//
// where a rule with none of host, group(s), cidr (it must then name a CA or a local_cidr)
// matches every peer of that CA or to that local address, and `host: any`,
// `group: any` or `cidr: any` also match everyone. `groups` requires every listed group.
// The port of a rule is compared with the destination port of the packet in both directions
// (the local port inbound, the remote port outbound). ICMP has no port: icmp rules ignore
// their port (as later Nebula releases do, with a warning), and rules for proto any with a
// specific port never match ICMP.
//
// Where this package deliberately differs from Nebula 1.6.1:
//   - the peer's address (packet source inbound, destination outbound) must be one of the
//     peer's certificate IPs or inside one of its subnets, checked before conntrack, not after;
//   - a port range starting at 0 ("0-100") means ports 0..100, not "any";
//   - `cidr: 0.0.0.0/8` means that prefix, not "any" (Nebula treats any prefix holding 0.0.0.0
//     as any);
//   - firewall.conntrack.max_connections is accepted and ignored, as in Nebula 1.6;
//   - inbound_action/outbound_action (drop or reject), local_cidr and default_local_cidr_any
//     come from later Nebula releases and are accepted too. As in Nebula 1.10, a rule without
//     local_cidr matches only when our side of the packet is one of our certificate's own IPs
//     (not an address in a subnet we route for), unless default_local_cidr_any is true; then
//     it matches any local address we own. Nebula 1.6.1 knows neither key and lets every rule
//     match traffic to its subnets.
//
// # Fragments
//
// A first fragment carries the transport header and is judged like a whole packet; it must hold
// the complete transport header (and, for IPv6, the whole header chain), or it is dropped. When
// it is admitted, its datagram (addresses, protocol, fragment id) is remembered for 30 s, and the
// later fragments of that datagram pass without a port. A later fragment of a datagram nobody
// admitted passes only a `port: fragment` or `port: any` rule (Nebula's rule), and is otherwise
// dropped as fragment_unknown_flow. A later fragment that would overwrite bytes the admitted first
// fragment already carried (or, for TCP, offset 8, RFC 1858) is dropped as fragment_overlap.
//
// # Conntrack
//
// Flows are keyed from the local side: (remote addr, local addr, remote port, local port,
// proto); ICMP is keyed by (remote, local, proto) alone, as Nebula does, so any ICMP from the
// peer answers an admitted ICMP flow. Entries live tcp_timeout (12m), udp_timeout (3m) or
// default_timeout (10m) after the last packet, measured with the injected clock. Expired
// entries are removed when met, and each shard is swept at most every 5 s when a flow is added
// (or all at once by [Firewall.Expire]). The table holds at most [Options.MaxFlows] entries
// (default [DefaultMaxFlows]); when full, packets that would open a new flow are dropped as
// conntrack_full while tracked flows carry on. After [Firewall.Reload], an entry is re-checked
// against the new rules the next time it is used: flows the new rules still allow continue,
// the others are cut.
//
// # Parsing
//
// [Packet.Parse] classifies IPv4 (options, fragments) and IPv6 (a bounded walk of hop-by-hop,
// routing, fragment, destination options and AH headers; ESP and unknown next headers are final)
// and TCP, UDP, ICMP and ICMPv6. It fails closed: what it cannot fully classify is reported
// with a Reason and the packet is dropped, never accepted. Beyond the protocols' own rules it
// refuses a hop-by-hop header anywhere but first, a second fragment or routing header, a
// routing header other than a spent type 0 (it would send the packet past the address the
// rules saw), jumbograms, and IPv4, IPv6 and TCP options whose lengths do not add up. An ESP
// or unknown next header ends the walk and is the packet's protocol, so only `proto: any`
// rules can match it.
package firewall
