package supervisor

import (
	"context"
	"testing"

	"github.com/deployer/deployer/internal/testredis"
)

// The store writes canonical values, and removes a host however it is
// spelled in the hash.
func TestRouteStore(t *testing.T) {
	srv, s := openTestStore(t)
	ctx := context.Background()
	spec, err := ParseRoute("A.Test", " 10.0.0.1:80 ,unix:/srv//a.sock")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, spec); err != nil {
		t.Fatal(err)
	}
	srv.Client().HSet(ctx, RedisRoutesKey, "Hand.Written", "web")
	got, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got["a.test"] != "10.0.0.1:80,unix:/srv/a.sock" || got["Hand.Written"] != "web" || len(got) != 2 {
		t.Errorf("List = %q", got)
	}
	for _, host := range []string{"A.TEST", "Hand.Written", "a.test"} {
		removed, err := s.Remove(ctx, host)
		if err != nil {
			t.Fatal(err)
		}
		if want := host != "a.test"; removed != want {
			t.Errorf("Remove(%q) = %v, want %v", host, removed, want)
		}
	}
	if got, _ := s.List(ctx); len(got) != 0 {
		t.Errorf("left: %q", got)
	}
}

// Set and Remove act on every field of the host however spelled: a field
// written by another tool ("Shop.test", "shop.test.") is replaced or
// removed with it. (Set wrote the canonical field beside it, and the
// daemons kept applying the other one, which sorts first; Remove left it
// and said nothing was removed.)
func TestRouteStoreOtherSpellings(t *testing.T) {
	srv, s := openTestStore(t)
	ctx := context.Background()
	c := srv.Client()
	c.HSet(ctx, RedisRoutesKey, "Shop.test", "a", "shop.test.", "b", "other.test", "c")
	spec, err := ParseRoute("shop.test", "web")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, spec); err != nil {
		t.Fatal(err)
	}
	got, _ := s.List(ctx)
	if len(got) != 2 || got["shop.test"] != "web" || got["other.test"] != "c" {
		t.Errorf("after Set(shop.test): %q, want shop.test = web and other.test alone", got)
	}
	c.HSet(ctx, RedisRoutesKey, "SHOP.TEST", "a")
	removed, err := s.Remove(ctx, "Shop.Test")
	if err != nil || !removed {
		t.Fatalf("Remove(Shop.Test) = %v, %v; want removed", removed, err)
	}
	if got, _ := s.List(ctx); len(got) != 1 || got["other.test"] != "c" {
		t.Errorf("after Remove(Shop.Test): %q, want other.test alone", got)
	}
}

// openTestStore starts a Redis for the test and opens a store on it.
func openTestStore(t *testing.T) (*testredis.Server, *RouteStore) {
	t.Helper()
	srv := testredis.Start(t)
	s, err := OpenRouteStore(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return srv, s
}
