package lighthouse

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// MetaType is NebulaMeta.Type. Values outside the known set are kept as they are (proto3
// enums are open) so the caller decides what to ignore.
type MetaType uint32

// Meta types of Nebula 1.6 (NEBULA-WIRE §5.2). Only 1, 2, 3 and 5 are used by 1.6.1.
const (
	HostQuery              MetaType = 1
	HostQueryReply         MetaType = 2
	HostUpdateNotification MetaType = 3
	HostMovedNotification  MetaType = 4
	HostPunchNotification  MetaType = 5
	HostWhoami             MetaType = 6
	HostWhoamiReply        MetaType = 7
	PathCheck              MetaType = 8
	PathCheckReply         MetaType = 9
	// HostUpdateNotificationAck is what a Nebula 1.10+ lighthouse answers an update with;
	// nothing needs it.
	HostUpdateNotificationAck MetaType = 10
)

func (t MetaType) String() string {
	switch t {
	case 0:
		return "None"
	case HostQuery:
		return "HostQuery"
	case HostQueryReply:
		return "HostQueryReply"
	case HostUpdateNotification:
		return "HostUpdateNotification"
	case HostMovedNotification:
		return "HostMovedNotification"
	case HostPunchNotification:
		return "HostPunchNotification"
	case HostWhoami:
		return "HostWhoami"
	case HostWhoamiReply:
		return "HostWhoamiReply"
	case PathCheck:
		return "PathCheck"
	case PathCheckReply:
		return "PathCheckReply"
	case HostUpdateNotificationAck:
		return "HostUpdateNotificationAck"
	}
	return fmt.Sprintf("MetaType(%d)", uint32(t))
}

// Limits on what Unmarshal accepts. A real host's message is far below both: a 1.6 lighthouse
// keeps at most 10 addresses per family, and a meta message travels in one UDP datagram.
const (
	// MaxMetaSize is the largest encoded NebulaMeta accepted.
	MaxMetaSize = 4096
	// MaxMetaEntries caps IPv4 + IPv6 addresses + relays in one message.
	MaxMetaEntries = 64
)

// Errors returned by Unmarshal; every decode error wraps ErrMalformed.
var (
	ErrMalformed = errors.New("lighthouse: malformed meta message")
	ErrTooLarge  = fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxMetaSize)
	ErrTooMany   = fmt.Errorf("%w: more than %d addresses and relays", ErrMalformed, MaxMetaEntries)
)

// Meta is a decoded NebulaMeta with its NebulaMetaDetails flattened in.
//
// VpnIP is the host the message is about. Nebula 1.10+ names it in one of two forms: the
// v1 field (VpnIp, an IPv4 address as uint32; proto3 cannot tell "absent" from 0, so a
// message without one decodes as 0.0.0.0) or, on tunnels built on v2 certificates, VpnAddr
// (field 6, 16 bytes, IPv4 mapped), which AddrV2 marks. A non-zero v1 field wins, as in
// Nebula. Relays likewise come from the v1 field 5 or RelayVpnAddrs (field 7), IPv6 ones
// too (the v1 form cannot carry those, so Marshal leaves them out of it). V4 holds the Ip4AndPorts, V6 the Ip6AndPorts
// exactly as sent (an IPv4-mapped IPv6 address stays mapped here; the address book
// unmaps it).
type Meta struct {
	Type   MetaType
	VpnIP  netip.Addr
	V4     []netip.AddrPort
	V6     []netip.AddrPort
	Relays []netip.Addr
	// AddrV2: VpnIP came in VpnAddr and relays in RelayVpnAddrs (the v2 form, with the v1
	// field absent); Marshal then writes them there.
	AddrV2 bool
}

// Field numbers of the schema in NEBULA-WIRE §5.2.
const (
	fMetaType    = 1
	fMetaDetails = 2

	fDetVpnIP   = 1
	fDetIP4     = 2
	fDetCounter = 3
	fDetIP6     = 4
	fDetRelays  = 5
	fDetVpnAddr = 6 // Nebula 1.10+: Addr
	fDetRelays2 = 7 // Nebula 1.10+: repeated Addr

	fAddrHi = 1
	fAddrLo = 2

	fIP4IP   = 1
	fIP4Port = 2

	fIP6Hi   = 1
	fIP6Lo   = 2
	fIP6Port = 3
)

// addr4 is the uint32 Nebula puts on the wire for an IPv4 address: its big-endian value.
// Anything that is not IPv4 (or IPv4-mapped) encodes as 0.
func addr4(a netip.Addr) uint64 {
	a = a.Unmap()
	if !a.Is4() {
		return 0
	}
	b := a.As4()
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
}

func fromAddr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Marshal appends the encoding of m to b, fields in ascending order and zero values omitted,
// as real nodes (gogo protobuf) send them. Details is always present. V4 entries that are not
// IPv4 are skipped; V6 entries are written as 16 bytes (an IPv4 address becomes its mapped
// form).
func (m *Meta) Marshal(b []byte) []byte {
	if m.Type != 0 {
		b = protowire.AppendTag(b, fMetaType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.Type))
	}
	b = protowire.AppendTag(b, fMetaDetails, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(m.detailsSize()))
	if v := addr4(m.VpnIP); v != 0 && !m.AddrV2 {
		b = protowire.AppendTag(b, fDetVpnIP, protowire.VarintType)
		b = protowire.AppendVarint(b, v)
	}
	for _, ap := range m.V4 {
		if !ap.Addr().Unmap().Is4() {
			continue
		}
		b = protowire.AppendTag(b, fDetIP4, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(ip4Size(ap)))
		b = appendIP4(b, ap)
	}
	for _, ap := range m.V6 {
		if !ap.Addr().IsValid() {
			continue
		}
		b = protowire.AppendTag(b, fDetIP6, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(ip6Size(ap)))
		b = appendIP6(b, ap)
	}
	if s := m.relaysSize(); s > 0 && !m.AddrV2 {
		b = protowire.AppendTag(b, fDetRelays, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(s))
		for _, r := range m.Relays {
			if r.Unmap().Is4() { // the v1 field cannot hold an IPv6 relay
				b = protowire.AppendVarint(b, addr4(r))
			}
		}
	}
	if m.AddrV2 {
		if m.VpnIP.IsValid() {
			b = protowire.AppendTag(b, fDetVpnAddr, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(addrSize(m.VpnIP)))
			b = appendAddr(b, m.VpnIP)
		}
		for _, r := range m.Relays {
			b = protowire.AppendTag(b, fDetRelays2, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(addrSize(r)))
			b = appendAddr(b, r)
		}
	}
	return b
}

// addrSize and appendAddr encode Nebula 1.10+'s Addr: the 16-byte address (IPv4 mapped)
// as two big-endian halves, zero halves omitted.
func addrSize(a netip.Addr) int {
	hi, lo := halves(a)
	n := 0
	if hi != 0 {
		n += 1 + protowire.SizeVarint(hi)
	}
	if lo != 0 {
		n += 1 + protowire.SizeVarint(lo)
	}
	return n
}

func appendAddr(b []byte, a netip.Addr) []byte {
	hi, lo := halves(a)
	if hi != 0 {
		b = protowire.AppendTag(b, fAddrHi, protowire.VarintType)
		b = protowire.AppendVarint(b, hi)
	}
	if lo != 0 {
		b = protowire.AppendTag(b, fAddrLo, protowire.VarintType)
		b = protowire.AppendVarint(b, lo)
	}
	return b
}

func (m *Meta) relaysSize() int {
	n := 0
	for _, r := range m.Relays {
		if r.Unmap().Is4() {
			n += protowire.SizeVarint(addr4(r))
		}
	}
	return n
}

func (m *Meta) detailsSize() int {
	n := 0
	if v := addr4(m.VpnIP); v != 0 && !m.AddrV2 {
		n += 1 + protowire.SizeVarint(v)
	}
	for _, ap := range m.V4 {
		if ap.Addr().Unmap().Is4() {
			s := ip4Size(ap)
			n += 1 + protowire.SizeVarint(uint64(s)) + s
		}
	}
	for _, ap := range m.V6 {
		if ap.Addr().IsValid() {
			s := ip6Size(ap)
			n += 1 + protowire.SizeVarint(uint64(s)) + s
		}
	}
	if s := m.relaysSize(); s > 0 && !m.AddrV2 {
		n += 1 + protowire.SizeVarint(uint64(s)) + s
	}
	if m.AddrV2 {
		if m.VpnIP.IsValid() {
			s := addrSize(m.VpnIP)
			n += 1 + protowire.SizeVarint(uint64(s)) + s
		}
		for _, r := range m.Relays {
			s := addrSize(r)
			n += 1 + protowire.SizeVarint(uint64(s)) + s
		}
	}
	return n
}

func ip4Size(ap netip.AddrPort) int {
	n := 0
	if v := addr4(ap.Addr()); v != 0 {
		n += 1 + protowire.SizeVarint(v)
	}
	if p := ap.Port(); p != 0 {
		n += 1 + protowire.SizeVarint(uint64(p))
	}
	return n
}

func appendIP4(b []byte, ap netip.AddrPort) []byte {
	if v := addr4(ap.Addr()); v != 0 {
		b = protowire.AppendTag(b, fIP4IP, protowire.VarintType)
		b = protowire.AppendVarint(b, v)
	}
	if p := ap.Port(); p != 0 {
		b = protowire.AppendTag(b, fIP4Port, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(p))
	}
	return b
}

func halves(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return hi, lo
}

func fromHalves(hi, lo uint64) netip.Addr {
	var b [16]byte
	for i := 7; i >= 0; i-- {
		b[i], b[8+i] = byte(hi), byte(lo)
		hi >>= 8
		lo >>= 8
	}
	return netip.AddrFrom16(b)
}

func ip6Size(ap netip.AddrPort) int {
	hi, lo := halves(ap.Addr())
	n := 0
	if hi != 0 {
		n += 1 + protowire.SizeVarint(hi)
	}
	if lo != 0 {
		n += 1 + protowire.SizeVarint(lo)
	}
	if p := ap.Port(); p != 0 {
		n += 1 + protowire.SizeVarint(uint64(p))
	}
	return n
}

func appendIP6(b []byte, ap netip.AddrPort) []byte {
	hi, lo := halves(ap.Addr())
	if hi != 0 {
		b = protowire.AppendTag(b, fIP6Hi, protowire.VarintType)
		b = protowire.AppendVarint(b, hi)
	}
	if lo != 0 {
		b = protowire.AppendTag(b, fIP6Lo, protowire.VarintType)
		b = protowire.AppendVarint(b, lo)
	}
	if p := ap.Port(); p != 0 {
		b = protowire.AppendTag(b, fIP6Port, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(p))
	}
	return b
}

// Unmarshal decodes b into m, replacing its contents. It accepts what any proto3 encoder may
// produce (fields in any order, repeated Details merged, unknown fields skipped, RelayVpnIp
// packed or not) and rejects everything malformed: truncation, wrong wire types for known
// fields, groups, values out of range (a port above 65535, an IPv4 above 32 bits), more than
// MaxMetaEntries entries, or more than MaxMetaSize bytes. The address lists reuse m's
// backing arrays, so a caller that decodes many messages into one Meta allocates nothing
// once they have grown (and must not keep the lists of an earlier decode).
func Unmarshal(b []byte, m *Meta) error {
	*m = Meta{VpnIP: netip.IPv4Unspecified(), V4: m.V4[:0], V6: m.V6[:0], Relays: m.Relays[:0]}
	if len(b) > MaxMetaSize {
		return ErrTooLarge
	}
	var st detailState
	if err := m.unmarshal(b, &st); err != nil {
		return err
	}
	switch {
	case st.old != 0:
		m.VpnIP = fromAddr4(st.old)
	case st.sawAddr:
		m.VpnIP, m.AddrV2 = st.addr, true
	case st.sawRelays2:
		m.AddrV2 = true
	}
	if !m.AddrV2 {
		// A message in the v1 form speaks of IPv4 only; IPv6 relays in field 7 beside a v1
		// host field are a mix no Nebula writes, and dropping them keeps decode∘encode exact.
		m.Relays = slices.DeleteFunc(m.Relays, func(a netip.Addr) bool { return !a.Is4() })
	}
	return nil
}

// detailState collects the two forms of the host's address across (possibly repeated)
// Details, to choose between them once all is read.
type detailState struct {
	old        uint32
	addr       netip.Addr
	sawAddr    bool
	sawRelays2 bool
}

func (m *Meta) unmarshal(b []byte, st *detailState) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: tag: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == fMetaType && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: type: %w", ErrMalformed, protowire.ParseError(n))
			}
			if v > math.MaxInt32 {
				return fmt.Errorf("%w: type %d out of range", ErrMalformed, v)
			}
			m.Type = MetaType(v)
			b = b[n:]
		case num == fMetaDetails && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: details: %w", ErrMalformed, protowire.ParseError(n))
			}
			if err := m.unmarshalDetails(v, st); err != nil {
				return err
			}
			b = b[n:]
		case num == fMetaType || num == fMetaDetails:
			return fmt.Errorf("%w: field %d has wire type %d", ErrMalformed, num, typ)
		default:
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
		}
	}
	return nil
}

// skipField consumes an unknown field's value. Groups are refused: no proto3 encoder emits
// them and they are the only recursive construct in the wire format.
func skipField(b []byte, typ protowire.Type) (int, error) {
	if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
		return 0, fmt.Errorf("%w: group wire type", ErrMalformed)
	}
	n := protowire.ConsumeFieldValue(0, typ, b)
	if n < 0 {
		return 0, fmt.Errorf("%w: unknown field: %w", ErrMalformed, protowire.ParseError(n))
	}
	return n, nil
}

func (m *Meta) entries() int { return len(m.V4) + len(m.V6) + len(m.Relays) }

func consumeU32(b []byte, what string) (uint32, int, error) {
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, fmt.Errorf("%w: %s: %w", ErrMalformed, what, protowire.ParseError(n))
	}
	if v > math.MaxUint32 {
		return 0, 0, fmt.Errorf("%w: %s %d exceeds 32 bits", ErrMalformed, what, v)
	}
	return uint32(v), n, nil
}

func consumePort(b []byte) (uint16, int, error) {
	v, n, err := consumeU32(b, "port")
	if err != nil {
		return 0, 0, err
	}
	if v > math.MaxUint16 {
		return 0, 0, fmt.Errorf("%w: port %d out of range", ErrMalformed, v)
	}
	return uint16(v), n, nil
}

func (m *Meta) unmarshalDetails(b []byte, st *detailState) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: details tag: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		known := true
		switch {
		case num == fDetVpnIP && typ == protowire.VarintType:
			v, n, err := consumeU32(b, "vpn ip")
			if err != nil {
				return err
			}
			st.old = v
			b = b[n:]
		case (num == fDetVpnAddr || num == fDetRelays2) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: addr: %w", ErrMalformed, protowire.ParseError(n))
			}
			a, err := unmarshalAddr(v)
			if err != nil {
				return err
			}
			if num == fDetVpnAddr {
				st.addr, st.sawAddr = a, true
			} else {
				st.sawRelays2 = true
				if a.IsValid() && !a.IsUnspecified() {
					m.Relays = append(m.Relays, a)
				}
			}
			b = b[n:]
		case num == fDetIP4 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: ip4: %w", ErrMalformed, protowire.ParseError(n))
			}
			ap, err := unmarshalIP4(v)
			if err != nil {
				return err
			}
			m.V4 = append(m.V4, ap)
			b = b[n:]
		case num == fDetCounter && typ == protowire.VarintType:
			_, n, err := consumeU32(b, "counter")
			if err != nil {
				return err
			}
			b = b[n:]
		case num == fDetIP6 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: ip6: %w", ErrMalformed, protowire.ParseError(n))
			}
			ap, err := unmarshalIP6(v)
			if err != nil {
				return err
			}
			m.V6 = append(m.V6, ap)
			b = b[n:]
		case num == fDetRelays && typ == protowire.VarintType:
			v, n, err := consumeU32(b, "relay")
			if err != nil {
				return err
			}
			m.Relays = append(m.Relays, fromAddr4(v))
			b = b[n:]
		case num == fDetRelays && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: relays: %w", ErrMalformed, protowire.ParseError(n))
			}
			for len(v) > 0 {
				r, k, err := consumeU32(v, "relay")
				if err != nil {
					return err
				}
				m.Relays = append(m.Relays, fromAddr4(r))
				v = v[k:]
				if m.entries() > MaxMetaEntries {
					return ErrTooMany
				}
			}
			b = b[n:]
		case num >= fDetVpnIP && num <= fDetRelays2:
			return fmt.Errorf("%w: details field %d has wire type %d", ErrMalformed, num, typ)
		default:
			known = false
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
		}
		if known && m.entries() > MaxMetaEntries {
			return ErrTooMany
		}
	}
	return nil
}

// AppendAddrMessage appends Nebula 1.10+'s Addr message for a (the relay control
// message's RelayToAddr and RelayFromAddr use it too); AddrMessageSize is its length.
func AppendAddrMessage(b []byte, a netip.Addr) []byte { return appendAddr(b, a) }

// AddrMessageSize is the encoded length of a's Addr message.
func AddrMessageSize(a netip.Addr) int { return addrSize(a) }

// ParseAddrMessage decodes an Addr message; an IPv4-mapped address comes back as IPv4.
func ParseAddrMessage(b []byte) (netip.Addr, error) { return unmarshalAddr(b) }

// unmarshalAddr decodes Nebula 1.10+'s Addr; an IPv4-mapped address comes back as IPv4.
func unmarshalAddr(b []byte) (netip.Addr, error) {
	var hi, lo uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return netip.Addr{}, fmt.Errorf("%w: addr tag: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch {
		case (num == fAddrHi || num == fAddrLo) && typ == protowire.VarintType:
			v, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return netip.Addr{}, fmt.Errorf("%w: addr: %w", ErrMalformed, protowire.ParseError(k))
			}
			if num == fAddrHi {
				hi = v
			} else {
				lo = v
			}
			n = k
		case num == fAddrHi || num == fAddrLo:
			err = fmt.Errorf("%w: addr field %d has wire type %d", ErrMalformed, num, typ)
		default:
			n, err = skipField(b, typ)
		}
		if err != nil {
			return netip.Addr{}, err
		}
		b = b[n:]
	}
	return fromHalves(hi, lo).Unmap(), nil
}

func unmarshalIP4(b []byte) (netip.AddrPort, error) {
	var ip uint32
	var port uint16
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return netip.AddrPort{}, fmt.Errorf("%w: ip4 tag: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch {
		case num == fIP4IP && typ == protowire.VarintType:
			ip, n, err = consumeU32(b, "ip4")
		case num == fIP4Port && typ == protowire.VarintType:
			port, n, err = consumePort(b)
		case num == fIP4IP || num == fIP4Port:
			err = fmt.Errorf("%w: ip4 field %d has wire type %d", ErrMalformed, num, typ)
		default:
			n, err = skipField(b, typ)
		}
		if err != nil {
			return netip.AddrPort{}, err
		}
		b = b[n:]
	}
	return netip.AddrPortFrom(fromAddr4(ip), port), nil
}

func unmarshalIP6(b []byte) (netip.AddrPort, error) {
	var hi, lo uint64
	var port uint16
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return netip.AddrPort{}, fmt.Errorf("%w: ip6 tag: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		var err error
		switch {
		case (num == fIP6Hi || num == fIP6Lo) && typ == protowire.VarintType:
			v, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return netip.AddrPort{}, fmt.Errorf("%w: ip6: %w", ErrMalformed, protowire.ParseError(k))
			}
			if num == fIP6Hi {
				hi = v
			} else {
				lo = v
			}
			n = k
		case num == fIP6Port && typ == protowire.VarintType:
			port, n, err = consumePort(b)
		case num >= fIP6Hi && num <= fIP6Port:
			err = fmt.Errorf("%w: ip6 field %d has wire type %d", ErrMalformed, num, typ)
		default:
			n, err = skipField(b, typ)
		}
		if err != nil {
			return netip.AddrPort{}, err
		}
		b = b[n:]
	}
	return netip.AddrPortFrom(fromHalves(hi, lo), port), nil
}
