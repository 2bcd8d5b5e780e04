package handshake

import (
	"bytes"
	"fmt"
	"io"

	"github.com/flynn/noise"

	"github.com/meshnode/meshnode/cert"
)

// Initiator is the initiator's pending handshake between msg 1 and a readable msg 2. It is
// not safe for concurrent use.
type Initiator struct {
	s          *settings
	localIndex uint32
	version    cert.Version // of the certificate msg 1 carries
	ephemeral  []byte       // the private key of e, kept so a spoiled Noise state can be rebuilt
	payload    []byte
	hs         *noise.HandshakeState // nil once used by a failed Complete
	done       bool
}

// Initiate starts a handshake with localIndex as our index. It returns the complete msg 1
// packet (16-byte header with remote index 0 and counter 1, then the Noise message), which
// the caller sends, and retransmits unchanged, to every candidate address of the peer.
func Initiate(cfg *Config, localIndex uint32) (*Initiator, []byte, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, nil, err
	}
	if localIndex == 0 {
		return nil, nil, ErrIndex
	}
	eph := make([]byte, noiseKeyLen)
	if _, err := io.ReadFull(s.rand, eph); err != nil {
		return nil, nil, fmt.Errorf("handshake: ephemeral key: %w", err)
	}
	in := &Initiator{
		s:          s,
		localIndex: localIndex,
		ephemeral:  eph,
		version:    s.ver,
		// CertVersion is sent for v1 too, as Nebula 1.10+ does: it tells a responder that
		// we read v2 certificates (Nebula 1.6 skips the unknown field).
		payload: MarshalPayload(nil, &Payload{
			Cert:           s.local.get(s.ver).hsCert,
			InitiatorIndex: localIndex,
			Time:           uint64(s.now().UnixNano()),
			CertVersion:    uint32(s.ver),
		}),
	}
	hs, msg1, err := in.writeMsg1()
	if err != nil {
		return nil, nil, err
	}
	in.hs = hs
	return in, bytes.Clone(msg1), nil
}

// writeMsg1 runs the first Noise message from the stored ephemeral key. It is
// deterministic (msg 1 has no encryption), so it also rebuilds the state for a retry.
func (in *Initiator) writeMsg1() (*noise.HandshakeState, []byte, error) {
	hs, err := in.s.handshakeState(true, bytes.NewReader(in.ephemeral))
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, 0, HeaderLen+msg1MinNoise+len(in.payload))
	out = appendHandshakeHeader(out, 0, counterMsg1)
	out, _, _, err = hs.WriteMessage(out, in.payload)
	if err != nil {
		return nil, nil, fmt.Errorf("handshake: write msg 1: %w", err)
	}
	return hs, out, nil
}

// LocalIndex is the index this handshake was started with; msg 2 carries it in its header.
func (in *Initiator) LocalIndex() uint32 { return in.localIndex }

// Version is the version of the certificate msg 1 carries.
func (in *Initiator) Version() cert.Version { return in.version }

// Complete reads msg 2 (the full packet, header included). Errors wrapping ErrNoiseRead
// (including ErrMalformed and ErrLowOrderKey) leave the handshake pending: ignore the
// packet and wait for another msg 2. ErrPayload, ErrInvalidCert (including ErrNoVPNIP) and
// ErrSelf mean the responder was read and refused. After a success, further calls return
// ErrDone.
func (in *Initiator) Complete(packet []byte) (*Result, error) {
	if in.done {
		return nil, ErrDone
	}
	idx, ok := parseHandshakeHeader(packet, counterMsg2)
	if !ok {
		return nil, fmt.Errorf("%w: not a handshake msg 2", ErrMalformed)
	}
	if idx != in.localIndex {
		return nil, fmt.Errorf("%w: msg 2 for index %d, ours is %d", ErrMalformed, idx, in.localIndex)
	}
	msg := packet[HeaderLen:]
	if len(msg) < msg2MinNoise {
		return nil, fmt.Errorf("%w: msg 2 is %d bytes, need at least %d", ErrNoiseRead, len(msg), msg2MinNoise)
	}
	if isLowOrder(msg[:noiseKeyLen]) {
		return nil, fmt.Errorf("%w: responder ephemeral", ErrLowOrderKey)
	}

	// A failed ReadMessage can leave flynn's state half-advanced (a DH error is not rolled
	// back), so a state is used for one attempt only and rebuilt for the next.
	hs := in.hs
	in.hs = nil
	if hs == nil {
		var err error
		if hs, _, err = in.writeMsg1(); err != nil {
			return nil, err
		}
	}
	plain, cs1, cs2, err := hs.ReadMessage(nil, msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoiseRead, err)
	}
	if cs1 == nil || cs2 == nil {
		return nil, fmt.Errorf("%w: noise did not finish after msg 2", ErrNoiseRead)
	}
	p, err := UnmarshalPayload(plain)
	if err != nil {
		return nil, err
	}
	if p.ResponderIndex == 0 {
		return nil, fmt.Errorf("%w: responder index 0", ErrPayload)
	}
	peer, ca, err := in.s.verifyPeer(p.CertVersion, p.Cert, hs.PeerStatic())
	if err != nil {
		return nil, err
	}
	r, err := in.s.result(peer, ca, in.version, in.localIndex, p.ResponderIndex, p.Time, cs1, cs2)
	if err != nil {
		return nil, err
	}
	in.done = true
	return r, nil
}
