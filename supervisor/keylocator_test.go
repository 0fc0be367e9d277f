package supervisor

import (
	"testing"

	"github.com/BurntSushi/toml"
)

func TestKeyLocator(t *testing.T) {
	src := `# comment
[deployer]
listen = ""

[apps.web]
command = [
  "a",
  "b",
]
notes = """
x = 1
"""
env = { A = "x" }
env.B = "y"
"quoted key" = 1
Version = "v0"
version = "v1"
VERSION = "v2"

[[arr]]
k = 1
`
	var tree map[string]any
	md, err := toml.Decode(src, &tree)
	if err != nil {
		t.Fatal(err)
	}
	l := keyLocator{src: src, keys: md.Keys()}
	tests := []struct {
		key  toml.Key
		want int
	}{
		{toml.Key{"deployer"}, 2},
		{toml.Key{"deployer", "listen"}, 3},
		{toml.Key{"apps"}, 0}, // implicit
		{toml.Key{"apps", "web"}, 5},
		{toml.Key{"apps", "web", "command"}, 6},
		{toml.Key{"apps", "web", "notes"}, 10},
		{toml.Key{"apps", "web", "env"}, 13},
		{toml.Key{"apps", "web", "env", "A"}, 13},
		{toml.Key{"apps", "web", "env", "B"}, 14},
		{toml.Key{"apps", "web", "quoted key"}, 15},
		{toml.Key{"apps", "web", "Version"}, 16},
		{toml.Key{"apps", "web", "version"}, 17},
		{toml.Key{"apps", "web", "VERSION"}, 18},
		{toml.Key{"apps", "web", "missing"}, 0},
		{toml.Key{"arr", "k"}, 0}, // inside an array of tables: ambiguous
	}
	for _, tt := range tests {
		// Twice: the second answer comes from the cache.
		for range 2 {
			if got := l.line(tt.key); got != tt.want {
				t.Errorf("line(%s): got %d, want %d", tt.key, got, tt.want)
			}
		}
	}
}
