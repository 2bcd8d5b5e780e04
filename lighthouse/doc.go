// Package lighthouse holds the pure parts of Nebula's lighthouse protocol (NEBULA-WIRE §5):
// the NebulaMeta codec, the address book a lighthouse keeps, the client's merging and
// ordering of candidate addresses, Nebula's allow lists, and the small DNS responder a
// lighthouse may run (lighthouse.serve_dns).
//
// It is not the runtime: it opens no overlay sockets, sends nothing and owns no timers.
// The node (package overlay) decrypts meta messages, hands them to these types together with
// the sender's authenticated VPN IP, and sends whatever they return:
//
//   - lighthouse: Unmarshal, then Book.Update for a HostUpdateNotification (the sender's
//     VPN IP comes from its tunnel, never from the message); for a HostQuery, Limiter.Allow,
//     Book.Lookup for the reply and Book.PunchNotification for the queried host.
//   - client: HostUpdate every lighthouse.interval; Remotes.Apply for a HostQueryReply from
//     one of lighthouse.hosts; Remotes.Candidates for the handshake targets.
//   - config: ParseRemoteAllowList and ParseLocalAllowList take the yaml.Node of their keys.
//
// The DNS server is the one part that serves on a UDP socket of its own.
package lighthouse
