package supervisor

import (
	"reflect"
	"testing"

	"github.com/deployer/deployer/proxy"
)

func TestMergeRoutes(t *testing.T) {
	toml := []proxy.Route{
		{Host: "WWW.example.com", Path: "/", App: "web"},
		{Host: "api.example.com", Path: "/v1", App: "api"},
		{Host: "*.example.com", Path: "", App: "web"},
		{Host: "*", Path: "/", App: "web"},
	}
	redis := []redisRoute{
		{Host: "www.example.com", App: "redis:www.example.com", Pseudo: true}, // deploy.toml wins
		{Host: "*.example.com", App: "api"},                                   // "" is "/": deploy.toml wins
		{Host: "api.example.com", App: "web"},                                 // adds "/" beside deploy.toml's /v1
		{Host: "new.example.com", App: "redis:new.example.com", Pseudo: true}, // beats deploy.toml's wildcard
		{Host: "old.example.com", App: "gone"},                                // no such app
	}
	exists := func(app string) bool { return app == "web" || app == "api" }
	merged, problems := mergeRoutes(toml, redis, exists)
	want := append(append([]proxy.Route{}, toml...),
		proxy.Route{Host: "api.example.com", Path: "/", App: "web"},
		proxy.Route{Host: "new.example.com", Path: "/", App: "redis:new.example.com"},
	)
	if !reflect.DeepEqual(merged, want) {
		t.Errorf("merged:\n got %+v\nwant %+v", merged, want)
	}
	wantProblems := map[string]string{
		"www.example.com": `deploy.toml routes this host to app "web", and deploy.toml wins`,
		"*.example.com":   `deploy.toml routes this host to app "web", and deploy.toml wins`,
		"old.example.com": `app "gone" is not in deploy.toml`,
	}
	if !reflect.DeepEqual(problems, wantProblems) {
		t.Errorf("problems:\n got %q\nwant %q", problems, wantProblems)
	}
	if err := proxy.ValidateRoutes(merged); err != nil {
		t.Errorf("merged routes are invalid: %v", err)
	}
	// The deploy.toml slice is not written through.
	if len(toml) != 4 {
		t.Fatal("toml changed")
	}
}
