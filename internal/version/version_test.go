package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestLinkTimeValuesWinOverBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260102150405-0123456789ab+dirty"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-01-02T15:04:05Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	for _, c := range []struct {
		name            string
		bi              *debug.BuildInfo
		ldVer, ldCommit string
		want            Info
	}{
		{"no information", nil, "", "", Info{Version: "dev", Commit: "unknown"}},
		{"devel", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "", "", Info{Version: "dev", Commit: "unknown"}},
		{"go build in a clone", bi, "", "", Info{Version: "0.0.0-20260102150405-0123456789ab", Commit: "0123456789abcdef0123456789abcdef01234567",
			Time: "2026-01-02T15:04:05Z", Modified: true}},
		{"make, same commit", bi, "1.2.3", "0123456789abcdef0123456789abcdef01234567", Info{Version: "1.2.3",
			Commit: "0123456789abcdef0123456789abcdef01234567", Time: "2026-01-02T15:04:05Z"}},
		{"make from a source tarball", nil, "v1.2.3", "feedface-dirty", Info{Version: "1.2.3", Commit: "feedface", Modified: true}},
	} {
		if got := get(c.bi, c.ldVer, c.ldCommit); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestLineNamesProgramVersionAndShortCommit(t *testing.T) {
	in := Info{Version: "1.2.3", Commit: "0123456789abcdef0123", Modified: true}
	s := in.String()
	if !strings.HasPrefix(s, "1.2.3 (commit 0123456789ab, modified; go") {
		t.Errorf("String() = %q", s)
	}
	if l := Line("meshnode"); !strings.HasPrefix(l, "meshnode "+Get().Version+" (commit ") {
		t.Errorf("Line = %q", l)
	}
}
