package overlay

import "github.com/meshnode/meshnode/cert"

// KickBlocklistForTest makes the blocklist loop ask the lighthouses now, as a lighthouse
// tunnel coming up does.
func (n *Node) KickBlocklistForTest() { n.lighthouseUp() }

// ServeBlocklistForTest makes n hold and serve b without checking it, to play a lighthouse
// relaying a forged or stale list.
func (n *Node) ServeBlocklistForTest(b *cert.SignedBlocklist) {
	enc, err := b.MarshalBinary()
	if err != nil {
		panic(err)
	}
	n.bl.mu.Lock()
	defer n.bl.mu.Unlock()
	n.bl.list, n.bl.enc = b, enc
}

// BlocklistChunk is how many bytes of a relayed list one answer carries.
const BlocklistChunk = blChunk

// AnswerBlocklistForTest is the lighthouse's answer body to a blocklist query body.
func (n *Node) AnswerBlocklistForTest(body []byte) []byte {
	return n.answerBlocklistQuery(nil, body, nil)
}

// BlocklistQueryOp is the extension op of the blocklist query.
const BlocklistQueryOp = extOpBlocklistQuery
