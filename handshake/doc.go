// Package handshake implements Nebula 1.6.1's Noise IX handshake with the certificate
// payload, and the AEAD that protects data-plane packets afterwards.
//
// It is a pure state machine: packets in, packets and keys out. It owns no sockets, no
// timers and no host map; retransmission, races between simultaneous initiations, caching
// of msg 2 for duplicate msg 1 and replay windows belong to the caller (overlay/).
//
// The initiator calls Initiate and sends msg 1, then passes every msg 2 that arrives for its
// local index to Initiator.Complete until one succeeds. Errors wrapping ErrNoiseRead
// (ErrMalformed and ErrLowOrderKey among them) mean "ignore this packet and keep retrying":
// spoofed, corrupted, or sent with the other cipher. ErrPayload, ErrInvalidCert and ErrSelf
// mean the peer was read and refused, so the pending handshake should be abandoned.
//
// The responder calls ReadInit, which parses msg 1 and verifies the peer certificate without
// doing any Diffie-Hellman, so a flood of invalid msg 1 costs one signature check each. Only
// then does Init.Respond do the DH work and produce msg 2.
//
// Msg 1 is neither encrypted nor authenticated (Noise IX): the initiator's certificate is
// visible to observers, and a recorded msg 1 can be replayed. The Time field of the payload
// is what lets the caller order handshakes from one peer.
package handshake
