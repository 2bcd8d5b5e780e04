package overlay

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestExtensionAnswersAreRateLimitedPerTunnel(t *testing.T) {
	var l extLimiter
	now := time.Unix(1_700_000_000, 0)
	n := 0
	for range 100 {
		if l.allow(now) {
			n++
		}
	}
	if n != extBurst {
		t.Fatalf("a burst of 100 got %d answers, want %d", n, extBurst)
	}
	now = now.Add(time.Second)
	n = 0
	for range 100 {
		if l.allow(now) {
			n++
		}
	}
	if n != extRate {
		t.Fatalf("a second later %d answers, want %d", n, extRate)
	}
	if l.allow(now.Add(-time.Hour)) {
		t.Fatal("a clock going backwards refilled the bucket")
	}
}

func FuzzParseFWQuery(f *testing.F) {
	f.Add([]byte{fwQueryVersion, 6, 0x15, 0x38})
	f.Add([]byte{fwQueryVersion, 1, 0, 0})
	f.Add([]byte{fwQueryVersion, 6, 0x1b, 0x58, 198, 19, 1, 10}) // with a local address behind a gateway
	f.Add([]byte{2, 6, 0, 22})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, st := parseFWQuery(b)
		if st == fwStatusOK && (!tr.valid() || (len(b) != fwQueryLen && len(b) != fwQueryLen+4)) {
			t.Fatalf("accepted %x as %+v", b, tr)
		}
		if st == fwStatusOK {
			if back := appendFWQuery(nil, tr); string(back) != string(b) {
				t.Fatalf("%x reads as %+v, which writes %x", b, tr, back)
			}
		}
	})
}

func FuzzParseFWAnswer(f *testing.F) {
	ok := []byte{fwQueryVersion, fwStatusOK, 1, 0, 1}
	ok = appendStr8(ok, "rule")
	ok = appendStr8(ok, "{port: 5432, proto: tcp, group: web}")
	ok = append(ok, 0)
	f.Add(ok)
	drop := []byte{fwQueryVersion, fwStatusOK, 0, 0xff, 0xff}
	drop = appendStr8(drop, "no_rule")
	drop = appendStr8(drop, "")
	drop = append(drop, 1)
	drop = appendStr8(drop, "inbound[0] {port: any, proto: icmp, host: any}")
	f.Add(drop)
	f.Add([]byte{fwQueryVersion, fwStatusBadQuery})
	f.Add([]byte{fwQueryVersion, fwStatusOK, 0, 0xff, 0xff, 3, 'a', 0x1b, '['})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseFWAnswer(b)
		if err != nil {
			return
		}
		for _, s := range append([]string{v.Reason, v.RuleText, v.Action}, v.RulesForHost...) {
			for _, r := range s {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("control character in an accepted answer %x: %q", b, s)
				}
			}
		}
		if v.Allowed != (v.Action == "accept") || len(v.RulesForHost) > fwHintsMax {
			t.Fatalf("inconsistent answer from %x: %+v", b, v)
		}
	})
}

// TestFirewallAnswersStayInOneDatagram fills an answer with the longest texts a config can
// produce: it must fit extMaxBody and read back.
func TestFirewallAnswersStayInOneDatagram(t *testing.T) {
	long := strings.Repeat("é", 400)
	out := []byte{fwQueryVersion, fwStatusOK, 0, 0xff, 0xff}
	out = appendStr8(out, "no_rule")
	out = appendStr8(out, "")
	out = append(out, fwHintsMax)
	for range fwHintsMax {
		out = appendStr8(out, long)
	}
	if len(out) > extMaxBody {
		t.Fatalf("an answer can take %d bytes", len(out))
	}
	v, err := parseFWAnswer(out)
	if err != nil || len(v.RulesForHost) != fwHintsMax || !strings.HasSuffix(v.RulesForHost[0], "...") || !utf8.ValidString(v.RulesForHost[0]) {
		t.Fatalf("%+v, %v", v, err)
	}
}
