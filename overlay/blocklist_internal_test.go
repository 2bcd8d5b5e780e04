package overlay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/meshnode/meshnode/cert"
	"github.com/meshnode/meshnode/cert/certtest"
)

// blServer is a node holding a list, enough to call answerBlocklistQuery.
func blServer(t testing.TB, version uint64, entries int) (*Node, []byte) {
	ca := certtest.NewCA(t, "ca")
	var fps []string
	for i := range entries {
		var fp [32]byte
		binary.BigEndian.PutUint32(fp[:], uint32(i+1))
		fps = append(fps, hex.EncodeToString(fp[:]))
	}
	b := cert.SignBlocklist(version, 0, fps, ca.Cert, ca.Key)
	enc, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return &Node{bl: &blocklistState{list: &b, enc: enc}}, enc
}

// TestBlocklistAnswersChunkAndRefuse walks the server side: "nothing newer", every chunk
// of a multi-chunk list reassembled byte for byte, a fetch of a version no longer held
// (the list changed mid-fetch), and malformed requests.
func TestBlocklistAnswersChunkAndRefuse(t *testing.T) {
	n, enc := blServer(t, 7, 100)
	ask := func(have, want uint64, off uint32) blAnswer {
		t.Helper()
		a, err := parseBLAnswer(n.answerBlocklistQuery(nil, appendBLQuery(nil, have, want, off), nil))
		if err != nil {
			t.Fatalf("have %d want %d off %d: %v", have, want, off, err)
		}
		return a
	}
	if a := ask(7, 0, 0); a.status != blStatusNotNewer {
		t.Fatalf("up-to-date asker: status %d", a.status)
	}
	var got []byte
	for a := ask(3, 0, 0); ; a = ask(3, 7, uint32(len(got))) {
		if a.status != blStatusOK || a.version != 7 || int(a.total) != len(enc) || int(a.off) != len(got) {
			t.Fatalf("chunk at %d: %+v", len(got), a)
		}
		got = append(got, a.chunk...)
		if len(got) == len(enc) {
			break
		}
	}
	if !bytes.Equal(got, enc) || len(enc) <= 2*blChunk {
		t.Fatalf("reassembled %d bytes of %d", len(got), len(enc))
	}
	if a := ask(3, 6, blChunk); a.status != blStatusGone {
		t.Fatalf("version no longer held: status %d", a.status)
	}
	for _, off := range []uint32{1, uint32(len(enc)), 1 << 31} {
		if a := ask(3, 7, off); a.status != blStatusBad {
			t.Fatalf("offset %d: status %d", off, a.status)
		}
	}
	for _, body := range [][]byte{nil, {2}, appendBLQuery(nil, 0, 0, 0)[:20], append(appendBLQuery(nil, 0, 0, 0), 0)} {
		out := n.answerBlocklistQuery(nil, body, nil)
		if !bytes.Equal(out, []byte{blQueryVersion, blStatusBad}) {
			t.Fatalf("request %x: answer %x", body, out)
		}
	}
	empty := &Node{bl: &blocklistState{}}
	if out := empty.answerBlocklistQuery(nil, appendBLQuery(nil, 0, 0, 0), nil); out[1] != blStatusNotNewer {
		t.Fatalf("a lighthouse without a list: %x", out)
	}
}

// FuzzParseBLAnswer: the asker's parser of answers never panics, and what it accepts is a
// chunk exactly where and as long as the encoding's bounds say.
func FuzzParseBLAnswer(f *testing.F) {
	n, _ := blServer(f, 2, 40)
	f.Add(n.answerBlocklistQuery(nil, appendBLQuery(nil, 0, 0, 0), nil))
	f.Add(n.answerBlocklistQuery(nil, appendBLQuery(nil, 0, 2, blChunk), nil))
	f.Add([]byte{blQueryVersion, blStatusNotNewer})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseBLAnswer(b)
		if err != nil || a.status != blStatusOK {
			return
		}
		if a.total == 0 || int(a.total) > cert.MaxBlocklistBinary || a.off >= a.total || a.off%blChunk != 0 ||
			len(a.chunk) > blChunk || uint64(a.off)+uint64(len(a.chunk)) > uint64(a.total) {
			t.Fatalf("accepted an out-of-bounds chunk: %+v", a)
		}
	})
}

// FuzzAnswerBlocklistQuery: the lighthouse's parser of requests never panics and never
// answers more than one extension body.
func FuzzAnswerBlocklistQuery(f *testing.F) {
	n, _ := blServer(f, 5, 80)
	f.Add(appendBLQuery(nil, 0, 0, 0))
	f.Add(appendBLQuery(nil, 1, 5, blChunk))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, body []byte) {
		out := n.answerBlocklistQuery(nil, body, nil)
		if len(out) > extMaxBody {
			t.Fatalf("answer of %d bytes", len(out))
		}
		if _, err := parseBLAnswer(out); err != nil {
			t.Fatalf("the lighthouse's own answer does not parse: %x", out)
		}
	})
}
