package handshake

import (
	"fmt"

	"github.com/flynn/noise"

	"github.com/meshnode/meshnode/cert"
)

// Init is a msg 1 that parsed and whose certificate verified. No Diffie-Hellman has been
// done yet: the caller can still drop it (race rules, rate limits, "handshake too old")
// at the cost of one signature check. It is not safe for concurrent use.
//
// An Init does not prove that the initiator holds its certificate's key: msg 1 carries no
// MAC and can be replayed by anyone. The tunnel is only confirmed by the first packet that
// opens under Result.Recv.
type Init struct {
	// PeerCert is the initiator's certificate with PublicKey = its Noise static key.
	PeerCert *cert.Certificate
	// CA is the pool CA that issued PeerCert.
	CA *cert.Certificate
	// InitiatorIndex is the initiator's local index: msg 2 and every later packet we send
	// carry it in the header.
	InitiatorIndex uint32
	// Time is the initiator's payload Time (unix ns, initiator's clock).
	Time uint64
	// ReplyVersion is the version of the certificate msg 2 will carry: the initiator's
	// when we hold it, else our initiating version.
	ReplyVersion cert.Version

	s       *settings
	hs      *noise.HandshakeState
	payload Payload
	done    bool
}

// ReadInit parses msg 1 (the full packet, header included) and verifies the initiator's
// certificate. It refuses low-order keys and does no DH. Every error means: drop the packet
// silently, as Nebula does.
func ReadInit(cfg *Config, packet []byte) (*Init, error) {
	s, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	if _, ok := parseHandshakeHeader(packet, counterMsg1); !ok {
		return nil, fmt.Errorf("%w: not a handshake msg 1", ErrMalformed)
	}
	msg := packet[HeaderLen:]
	if len(msg) < msg1MinNoise {
		return nil, fmt.Errorf("%w: msg 1 is %d bytes, need at least %d", ErrNoiseRead, len(msg), msg1MinNoise)
	}
	if isLowOrder(msg[:noiseKeyLen]) {
		return nil, fmt.Errorf("%w: initiator ephemeral", ErrLowOrderKey)
	}
	if isLowOrder(msg[noiseKeyLen : 2*noiseKeyLen]) {
		return nil, fmt.Errorf("%w: initiator static", ErrLowOrderKey)
	}
	hs, err := s.handshakeState(false, s.rand)
	if err != nil {
		return nil, err
	}
	plain, _, _, err := hs.ReadMessage(nil, msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoiseRead, err)
	}
	p, err := UnmarshalPayload(plain)
	if err != nil {
		return nil, err
	}
	if p.InitiatorIndex == 0 {
		return nil, fmt.Errorf("%w: initiator index 0", ErrPayload)
	}
	if p.CertVersion == 0 && !s.local.Has(cert.Version1) {
		// No CertVersion: Nebula before 1.10 (or an older meshnode), which reads only v1
		// certificates, and we hold none. Answering would only make the peer drop msg 2
		// and retry; refuse before the signature check, with the reason.
		return nil, fmt.Errorf("%w: the initiator sent no CertVersion (Nebula before 1.10 reads only v1 certificates) and we hold only v2", ErrVersion)
	}
	peer, ca, err := s.verifyPeer(p.CertVersion, p.Cert, hs.PeerStatic())
	if err != nil {
		return nil, err
	}
	reply := s.local.replyVersion(peer.Version())
	return &Init{
		ReplyVersion:   reply,
		PeerCert:       peer,
		CA:             ca,
		InitiatorIndex: p.InitiatorIndex,
		Time:           p.Time,
		s:              s,
		hs:             hs,
		payload:        *p,
	}, nil
}

// Respond does the DH work and returns the keys and the msg 2 packet (header: remote index =
// the initiator's index, counter 2). localIndex is ours and must be non-zero. The caller
// should cache msg 2 and resend it for a byte-identical msg 1 rather than call ReadInit and
// Respond again. Respond can be called once; later calls return ErrDone.
func (i *Init) Respond(localIndex uint32) (*Result, []byte, error) {
	if i.done {
		return nil, nil, ErrDone
	}
	if localIndex == 0 {
		return nil, nil, ErrIndex
	}
	i.done = true // a failed WriteMessage leaves the Noise state unusable

	// Like Nebula, reply with the received payload and our fields replaced, so anything
	// else the initiator set (Cookie, Hmac) is echoed.
	reply := i.payload
	reply.Cert = i.s.local.get(i.ReplyVersion).hsCert
	if i.payload.CertVersion != 0 {
		// To a peer that sent none (Nebula before 1.10) msg 2 stays byte for byte what
		// Nebula 1.6 would send; it could not use the field.
		reply.CertVersion = uint32(i.ReplyVersion)
	}
	reply.ResponderIndex = localIndex
	reply.Time = uint64(i.s.now().UnixNano())
	payload := MarshalPayload(nil, &reply)

	out := make([]byte, 0, HeaderLen+msg2MinNoise+len(payload))
	out = appendHandshakeHeader(out, i.InitiatorIndex, counterMsg2)
	out, cs1, cs2, err := i.hs.WriteMessage(out, payload)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: write msg 2: %w", ErrNoiseRead, err)
	}
	if cs1 == nil || cs2 == nil {
		return nil, nil, fmt.Errorf("%w: noise did not finish after msg 2", ErrNoiseRead)
	}
	r, err := i.s.result(i.PeerCert, i.CA, i.ReplyVersion, localIndex, i.InitiatorIndex, i.Time, cs2, cs1)
	if err != nil {
		return nil, nil, err
	}
	return r, out, nil
}
