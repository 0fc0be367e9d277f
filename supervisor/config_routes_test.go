package supervisor

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigRoutes(t *testing.T) {
	cfg := loadString(t, app)
	if cfg.Routes != (RoutesConfig{}) {
		t.Errorf("no [routes]: %+v, want the zero RoutesConfig", cfg.Routes)
	}
	cfg = loadString(t, app+"\n[routes]\nredis = \"redis://127.0.0.1:6379\"\n")
	if cfg.Routes.Resync != DefaultRoutesResync || cfg.Routes.HealthInterval != DefaultRoutesHealthInterval {
		t.Errorf("[routes] redis alone: %+v, want the defaults", cfg.Routes)
	}
	cfg = loadString(t, app+`
[routes]
redis = "redis://:pw@127.0.0.1:6379/2"
keyspace_events = true
resync = "10s"
health_interval = "500ms"
`)
	want := RoutesConfig{Redis: "redis://:pw@127.0.0.1:6379/2", KeyspaceEvents: true, Resync: 10 * time.Second, HealthInterval: 500 * time.Millisecond}
	if cfg.Routes != want {
		t.Errorf("[routes]: got %+v, want %+v", cfg.Routes, want)
	}
}

// A proxy that routes only by Redis needs no app; without Redis, an app is
// still required.
func TestConfigRoutesWithoutApps(t *testing.T) {
	cfg := loadString(t, "[deployer]\nlisten = \"127.0.0.1:8081\"\n[routes]\nredis = \"redis://127.0.0.1:6379/0\"\n")
	if len(cfg.Apps) != 0 || cfg.Routes.Redis == "" {
		t.Errorf("got %+v", cfg)
	}
	_, err := LoadConfig(writeConfig(t, "[deployer]\nlisten = \"127.0.0.1:8081\"\n[routes]\nresync = \"1s\"\n"))
	if ces := configErrors(t, err); len(ces) != 1 || !strings.Contains(ces[0].Msg, "no apps defined") {
		t.Errorf("got %v, want no apps defined", err)
	}
}

func TestConfigRoutesErrors(t *testing.T) {
	tests := []struct {
		routes string
		line   int
		msg    string
	}{
		{`redis = "http://127.0.0.1:6379"`, 7, `routes.redis "http://127.0.0.1:6379": invalid URL scheme`},
		{`redis = "redis://127.0.0.1:6379/x"`, 7, `invalid database number`},
		{`redis = 6379`, 7, "routes.redis must be a string, not an integer"},
		{`Redis = "redis://127.0.0.1"`, 7, `unknown key "routes.Redis": did you mean "redis"?`},
		{`resync = 5`, 7, `routes.resync = 5: a duration is a string with a unit, write "5s"`},
		{`health_interval = "0s"`, 7, `routes.health_interval = "0s" must be more than zero`},
		{`keyspace_events = "yes"`, 7, "routes.keyspace_events must be true or false, not a string"},
	}
	for _, tt := range tests {
		_, err := LoadConfig(writeConfig(t, app+"\n[routes]\n"+tt.routes+"\n"))
		ces := configErrors(t, err)
		if len(ces) != 1 || ces[0].Line != tt.line || !strings.Contains(ces[0].Msg, tt.msg) {
			t.Errorf("%s: got %v, want line %d: %s", tt.routes, err, tt.line, tt.msg)
		}
	}
}

// TestRoutesSchemaMatchesRaw keeps routesKeys in step with rawRoutes, as
// TestSchemaMatchesRaw does for the other tables.
func TestRoutesSchemaMatchesRaw(t *testing.T) {
	var tags []string
	for f := range reflect.TypeFor[rawRoutes]().Fields() {
		tags = append(tags, f.Tag.Get("toml"))
	}
	slices.Sort(tags)
	if keys := slices.Sorted(maps.Keys(routesKeys)); !slices.Equal(tags, keys) {
		t.Errorf("got fields %q, want the schema's %q", tags, keys)
	}
}

// [routes] cannot change on a running daemon: such a reload is refused.
func TestReloadRefusesRoutesChange(t *testing.T) {
	old := loadString(t, app)
	cfg := loadString(t, app+"\n[routes]\nredis = \"redis://127.0.0.1:6379/0\"\n")
	cfg.Deployer = old.Deployer
	d := &Daemon{}
	if err := d.checkReload(old, cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "routes.redis cannot change") {
		t.Errorf("got %v, want routes.redis cannot change", err)
	}
	same := loadString(t, app)
	same.Deployer = old.Deployer
	if err := d.checkReload(old, same); err != nil {
		t.Errorf("unchanged: %v", err)
	}
}
