package firewall

// Action is what the caller must do with a packet.
type Action uint8

const (
	// Drop discards the packet silently. It is the zero value, so a forgotten verdict fails closed.
	Drop Action = iota
	// Accept lets the packet through.
	Accept
	// Reject discards the packet and sends the reply [RejectPacket] builds, when it builds one.
	Reject
)

// String returns a stable lower-case name, usable as a metric label.
func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	default:
		return "drop"
	}
}

// Reason says why a verdict was reached. Its String is stable and meant for metric labels.
type Reason uint8

const (
	ReasonNone                Reason = iota // no reason: only in a Packet that parsed
	ReasonConntrack                         // accepted: the flow is in conntrack
	ReasonRule                              // accepted: a rule matched
	ReasonNoRule                            // no rule allows the packet
	ReasonTruncated                         // a header is cut short by the buffer or a length field
	ReasonMalformed                         // a header field is invalid (lengths, options, order)
	ReasonBadVersion                        // neither IPv4 nor IPv6
	ReasonExtHeaderLimit                    // more IPv6 extension headers than the walk allows
	ReasonRoutingHeader                     // an IPv6 routing header that is not a spent type 0
	ReasonFragmentUnknownFlow               // a later fragment of a datagram nobody admitted
	ReasonFragmentOverlap                   // a fragment that overlaps bytes already judged
	ReasonFragmentTooSmall                  // a first fragment without the whole transport header
	ReasonRemoteAddr                        // the peer's side of the packet is not the peer's address
	ReasonLocalAddr                         // our side of the packet is not one of our addresses
	ReasonNoPeer                            // no peer identity, or an invalid direction
	ReasonConntrackFull                     // the packet would open a flow, and conntrack is full
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:                "none",
	ReasonConntrack:           "conntrack",
	ReasonRule:                "rule",
	ReasonNoRule:              "no_rule",
	ReasonTruncated:           "truncated",
	ReasonMalformed:           "malformed",
	ReasonBadVersion:          "bad_version",
	ReasonExtHeaderLimit:      "ext_header_limit",
	ReasonRoutingHeader:       "routing_header",
	ReasonFragmentUnknownFlow: "fragment_unknown_flow",
	ReasonFragmentOverlap:     "fragment_overlap",
	ReasonFragmentTooSmall:    "fragment_too_small",
	ReasonRemoteAddr:          "remote_addr",
	ReasonLocalAddr:           "local_addr",
	ReasonNoPeer:              "no_peer",
	ReasonConntrackFull:       "conntrack_full",
}

// String returns the reason's stable metric label, e.g. "no_rule".
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// ParseError reports whether the reason is a failure to classify the packet.
func (r Reason) ParseError() bool {
	switch r {
	case ReasonTruncated, ReasonMalformed, ReasonBadVersion, ReasonExtHeaderLimit,
		ReasonRoutingHeader, ReasonFragmentOverlap, ReasonFragmentTooSmall:
		return true
	}
	return false
}

// Reasons lists every reason, so a caller can pre-create its metric label values.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons)
	for r := Reason(0); r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// Verdict is the firewall's decision about one packet.
type Verdict struct {
	Action Action
	Reason Reason
}

// Allowed reports whether the packet may pass.
func (v Verdict) Allowed() bool { return v.Action == Accept }

// Accepted is Allowed, under the name the data path reads best with.
func (v Verdict) Accepted() bool { return v.Action == Accept }

// Rejected reports whether the caller should answer with RejectPacket.
func (v Verdict) Rejected() bool { return v.Action == Reject }

// String is "accept/rule", "drop/no_rule" and so on.
func (v Verdict) String() string { return v.Action.String() + "/" + v.Reason.String() }

// Direction is the way a packet travels relative to this node.
type Direction uint8

const (
	// Inbound packets came out of a tunnel and go to the local TUN device: the peer is the source.
	Inbound Direction = iota + 1
	// Outbound packets came from the TUN device and go into a tunnel: the peer is the destination.
	Outbound
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "inbound"
	case Outbound:
		return "outbound"
	}
	return "invalid"
}
