package supervisor

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestBuildOf(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	info := func(version string, s []debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/deployer/deployer", Version: version}, Settings: s}
	}
	for _, tc := range []struct {
		name    string
		info    *debug.BuildInfo
		release string
		want    Build
		text    string
	}{{
		name: "a checkout without VCS stamping",
		info: info("(devel)", settings("-compiler", "gc")),
		want: Build{Version: "(devel)", Go: "go1.26.8"},
		text: "(devel) (no commit recorded; go1.26.8)",
	}, {
		name: "a clean checkout",
		info: info("v0.0.0-20261122044909-9f1710ddf889", settings("vcs", "git", "vcs.revision", "9f1710ddf8891234567890abcdef123456789012", "vcs.time", "2026-11-22T04:49:09Z", "vcs.modified", "false")),
		want: Build{Version: "v0.0.0-20261122044909-9f1710ddf889", Commit: "9f1710ddf8891234567890abcdef123456789012", Time: "2026-11-22T04:49:09Z", Go: "go1.26.8"},
		text: "v0.0.0-20261122044909-9f1710ddf889 (commit 9f1710ddf889, 2026-11-22T04:49:09Z; go1.26.8)",
	}, {
		name: "uncommitted changes",
		info: info("(devel)", settings("vcs.revision", "abc", "vcs.modified", "true")),
		want: Build{Version: "(devel)", Commit: "abc", Modified: true, Go: "go1.26.8"},
		text: "(devel) (commit abc with uncommitted changes; go1.26.8)",
	}, {
		name:    "the release variable wins",
		info:    info("(devel)", settings("-ldflags", `"-X github.com/deployer/deployer/supervisor.releaseVersion=v1.4.0"`)),
		release: "v1.4.1",
		want:    Build{Version: "v1.4.1", Go: "go1.26.8"},
	}, {
		name: "a release read back from -ldflags (another binary's build)",
		info: info("(devel)", settings("-ldflags", `"-s -X github.com/deployer/deployer/supervisor.releaseVersion=v1.4.0 -w"`)),
		want: Build{Version: "v1.4.0", Go: "go1.26.8"},
	}, {
		name: "-ldflags without the release",
		info: info("v1.3.0", settings("-ldflags", "-s -w")),
		want: Build{Version: "v1.3.0", Go: "go1.26.8"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := buildOf(tc.info, tc.release)
			if got != tc.want {
				t.Errorf("buildOf = %+v, want %+v", got, tc.want)
			}
			if tc.text != "" && got.String() != tc.text {
				t.Errorf("String = %q, want %q", got.String(), tc.text)
			}
		})
	}
	if got := (Build{}).String(); got != "unknown build" {
		t.Errorf("zero Build: %q", got)
	}
}

// Only what a build records tells two builds apart: alike in everything,
// they are not shown as different, and only a clean commit identifies one.
func TestBuildDiffers(t *testing.T) {
	a := Build{Version: "(devel)", Commit: "abc", Go: "go1.26.8"}
	for _, tc := range []struct {
		b       Build
		differs bool
	}{
		{a, false},
		{Build{Version: "v1.4.0", Commit: "abc", Go: "go1.26.8"}, true},
		{Build{Version: "(devel)", Commit: "abd", Go: "go1.26.8"}, true},
		{Build{Version: "(devel)", Commit: "abc", Modified: true, Go: "go1.26.8"}, true},
		{Build{Version: "(devel)", Commit: "abc", Go: "go1.26.9"}, true},
		{Build{Version: "(devel)", Commit: "abc", Time: "later", Go: "go1.26.8"}, false}, // the commit's time follows the commit
	} {
		if got := a.Differs(tc.b); got != tc.differs {
			t.Errorf("%+v differs from %+v: %v, want %v", a, tc.b, got, tc.differs)
		}
	}
	if !a.Identified() || (Build{Version: "(devel)"}).Identified() || (Build{Commit: "abc", Modified: true}).Identified() {
		t.Error("Identified: want true only for a commit without uncommitted changes")
	}
}

// fileBuild reads another binary's build as the binary itself reads its
// own: here the test binary, both ways.
func TestFileBuild(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	got, err := fileBuild(exe)
	if err != nil {
		t.Fatal(err)
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build info in the test binary")
	}
	if want := buildOf(info, ""); got != want || got.Go == "" {
		t.Errorf("fileBuild(%s) = %+v, want %+v", exe, got, want)
	}
	if _, err := fileBuild("/dev/null"); err == nil {
		t.Error("fileBuild of a file that is no Go binary: no error")
	}
}
