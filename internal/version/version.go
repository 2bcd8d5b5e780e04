// Package version says which build of meshnode is running. Both binaries print it the same
// way (`version`, `-version`) and the daemon reports it on its control socket.
//
// The version and commit come from the Makefile (-ldflags -X, needed when there is no .git,
// e.g. a build from a release's source) or else from the VCS information the go command
// stamps into every build made inside a clone (go build ./cmd/meshnode).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at link time by the Makefile:
//
//	-ldflags "-X github.com/meshnode/meshnode/internal/version.version=1.2.3
//	          -X github.com/meshnode/meshnode/internal/version.commit=0123abcd..."
var (
	version string
	commit  string
)

// Info is one build's identity.
type Info struct {
	Version  string // "1.2.3", "0.0.0-20260102150405-0123456789ab", or "dev"
	Commit   string // full VCS revision, or "unknown"
	Time     string // commit time (RFC 3339) when the go command recorded it
	Modified bool   // built from a work tree with uncommitted changes
}

// Get returns this binary's build identity.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(bi, version, commit)
}

// get merges the link-time values (which win) with the build information.
func get(bi *debug.BuildInfo, ldVersion, ldCommit string) Info {
	in := Info{Version: "dev", Commit: "unknown"}
	if bi != nil {
		// "(devel)" means the go command knew no version (no VCS, or -buildvcs=false).
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			in.Version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Commit = s.Value
			case "vcs.time":
				in.Time = s.Value
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if ldVersion != "" {
		in.Version = ldVersion
	}
	if ldCommit != "" {
		// The Makefile marks a dirty tree with a "-dirty" suffix, as git describe does.
		c, dirty := strings.CutSuffix(ldCommit, "-dirty")
		if c != in.Commit {
			in.Time = "" // the VCS time belongs to another commit
		}
		in.Commit, in.Modified = c, dirty
	}
	// Module versions carry a "v" (v1.2.3); packages and tarballs do not.
	in.Version = strings.TrimPrefix(in.Version, "v")
	// The go command adds "+dirty" to the version of a modified tree; Modified says it.
	in.Version = strings.TrimSuffix(in.Version, "+dirty")
	return in
}

// String is the one line `NAME version` prints, e.g.
// "meshnode 1.2.3 (commit 0123456789ab, 2026-01-02T15:04:05Z; go1.26.0 linux/amd64)".
func (in Info) String() string {
	c := in.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if in.Modified {
		c += ", modified"
	}
	if in.Time != "" {
		c += ", " + in.Time
	}
	return fmt.Sprintf("%s (commit %s; %s %s/%s)", in.Version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// Line is what `NAME version` and `NAME -version` print for the program name.
func Line(program string) string { return program + " " + Get().String() }
