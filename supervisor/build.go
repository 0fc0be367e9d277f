package supervisor

import (
	"debug/buildinfo"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
)

// releaseVersion is the release a binary was built as, set at build time:
//
//	go build -ldflags "-X github.com/deployer/deployer/supervisor.releaseVersion=v1.4.0" ./cmd/deployer
//
// Without it the version is the module's as the Go toolchain recorded it: a
// tag or pseudo-version for `go install …@version`, "(devel)" for a build
// from a checkout (whose commit is then recorded instead, when the checkout
// is a git repository).
var releaseVersion string

// Build says which deployer a binary is: what `deployer version` prints, and
// what status and upgrade report of the daemons.
type Build struct {
	Version  string `json:"version"`            // release, module version, or "(devel)"
	Commit   string `json:"commit,omitempty"`   // the VCS revision built, when recorded
	Time     string `json:"time,omitempty"`     // the commit's time (RFC 3339), when recorded
	Modified bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	Go       string `json:"go"`                 // the Go toolchain
}

// String is the build on one line: "v1.4.0 (commit 1a2b3c4d5e6f, 2026-11-22T04:00:00Z; go1.26.8)".
func (b Build) String() string {
	if b.Version == "" && b.Go == "" {
		return "unknown build"
	}
	code := "no commit recorded"
	if b.Commit != "" {
		code = "commit " + shortCommit(b.Commit)
		if b.Modified {
			code += " with uncommitted changes"
		}
		if b.Time != "" {
			code += ", " + b.Time
		}
	}
	return fmt.Sprintf("%s (%s; %s)", b.Version, code, b.Go)
}

// Differs reports whether b and o are provably different builds: they
// differ in something recorded. Two builds alike in everything they record
// may still differ (two "(devel)" builds without a commit, or two builds of
// one commit with different uncommitted changes).
func (b Build) Differs(o Build) bool {
	return b.Version != o.Version || b.Commit != o.Commit || b.Modified != o.Modified || b.Go != o.Go
}

// Identified reports whether b names its code exactly: a commit without
// uncommitted changes.
func (b Build) Identified() bool { return b.Commit != "" && !b.Modified }

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// CurrentBuild returns this binary's build.
var CurrentBuild = sync.OnceValue(func() Build {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Build{Version: firstNonEmpty(releaseVersion, "(devel)"), Go: "unknown Go"}
	}
	return buildOf(info, releaseVersion)
})

// buildOf reads a Build from what the toolchain recorded; release, when
// set, is the version. Without it a release version given with -ldflags -X
// (recorded among the settings) is found there: how the build of another
// binary (fileBuild) learns it.
func buildOf(info *debug.BuildInfo, release string) Build {
	b := Build{Go: info.GoVersion}
	for _, s := range info.Settings {
		switch s.Key {
		case "-ldflags":
			if release == "" {
				release = ldflagsRelease(s.Value)
			}
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	b.Version = firstNonEmpty(release, info.Main.Version, "(devel)")
	return b
}

// ldflagsRelease finds the value given to releaseVersion in a build's
// -ldflags ("-X github.com/deployer/deployer/supervisor.releaseVersion=v1.4.0").
func ldflagsRelease(ldflags string) string {
	const name = "/supervisor.releaseVersion="
	i := strings.Index(ldflags, name)
	if i < 0 {
		return ""
	}
	v := ldflags[i+len(name):]
	if j := strings.IndexAny(v, " \t'\""); j >= 0 {
		v = v[:j]
	}
	return v
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// fileBuild reads the build of the Go binary at path.
func fileBuild(path string) (Build, error) {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return Build{}, err
	}
	return buildOf(info, ""), nil
}
