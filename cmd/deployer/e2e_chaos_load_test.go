package main

// The load of the chaos test (e2e_chaos_test.go): GET, POST, websocket and
// SSE clients that record every outcome, with the times judge needs to
// explain the ones that are not a 200.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// chaosStats counts the load's outcomes and keeps the ones that need a
// window of the chaos to explain them.
type chaosStats struct {
	mu       sync.Mutex
	counts   map[string]int // "GET web 200", "WS api cut", ...
	problems []string       // outcomes nothing can explain
	held     []timed        // 503 with Retry-After
	post502  []timed        // POSTs whose app may have died under them
	cuts     []timed        // streams that ended early
	posts    map[string]bool
}

// timed is one request or stream: what, on which app (and app process),
// from when to when.
type timed struct {
	what, app string
	pid       int
	from, to  time.Time
}

func (s *chaosStats) add(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[key]++
}

func (s *chaosStats) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[key]
}

func (s *chaosStats) problem(key, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[key]++
	s.problems = append(s.problems, detail)
}

func (s *chaosStats) problemList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

func (s *chaosStats) keep(list *[]timed, key string, r timed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[key]++
	*list = append(*list, r)
}

type chaosLoad struct {
	stats *chaosStats
	stop  chan struct{}
	wg    sync.WaitGroup
}

func (l *chaosLoad) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

func (l *chaosLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// startLoad runs, until finish: keep-alive GET clients (4 on web, 2 on
// api), POST clients with bodies of random length (2 on web, 1 on api), a
// websocket on each app and an SSE stream on web, each reopened as soon as
// it ends. tag makes the POSTs' ids unique to this load.
func (c *chaos) startLoad(tag string) *chaosLoad {
	l := &chaosLoad{stats: &chaosStats{counts: map[string]int{}, posts: map[string]bool{}}, stop: make(chan struct{})}
	prefix := map[string]string{"web": "", "api": "/api"}
	worker := 0
	spawn := func(n int, f func(rng *rand.Rand, w int)) {
		for i := 0; i < n; i++ {
			worker++
			w, rng := worker, rand.New(rand.NewPCG(c.seed, uint64(worker)))
			l.wg.Go(func() { f(rng, w) })
		}
	}
	for _, app := range chaosApps {
		base := "http://" + c.e.addr + prefix[app]
		gets, postsN := map[string]int{"web": 4, "api": 2}[app], map[string]int{"web": 2, "api": 1}[app]
		spawn(gets, func(*rand.Rand, int) { l.getClient(app, base+"/") })
		spawn(postsN, func(rng *rand.Rand, w int) { l.postClient(rng, app, fmt.Sprintf("%s-%s%d", app, tag, w), base+"/echo") })
		spawn(1, func(rng *rand.Rand, _ int) { l.websockets(rng, app, "ws://"+c.e.addr+prefix[app]+"/ws") })
	}
	spawn(1, func(*rand.Rand, int) { l.sse("web", "http://"+c.e.addr+"/sse?n=20&interval=100ms", 20) })
	return l
}

func chaosClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
}

// answered sorts out a response that is not a 200: a 503 with Retry-After
// is kept for judge, a POST's 502 too; anything else is a problem.
func (l *chaosLoad) answered(what, app string, from time.Time, res *http.Response, err error) {
	key := what + " " + app + " "
	r := timed{what: what, app: app, from: from, to: time.Now()}
	switch {
	case err == nil && res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") != "":
		l.stats.keep(&l.stats.held, key+"503", r)
	case err == nil && res.StatusCode == http.StatusBadGateway && what == "POST":
		l.stats.keep(&l.stats.post502, key+"502", r)
	default:
		class, detail := classify(res, err)
		if err == nil && class == "2xx" {
			class, detail = "bad answer", res.Status
		}
		l.stats.problem(key+class, fmt.Sprintf("%s %s at %s after %s: %s %s", what, app, from.Format("15:04:05.000"),
			r.to.Sub(from).Round(time.Millisecond), class, detail))
	}
}

func (l *chaosLoad) getClient(app, url string) {
	client := chaosClient()
	defer client.CloseIdleConnections()
	for !l.stopped() {
		from := time.Now()
		res, err := client.Get(url)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(res.Body)
			res.Body.Close()
		}
		// GREETING tells the apps apart: a 200 from the wrong app is a
		// routing bug.
		if err == nil && res.StatusCode == 200 && bytes.HasPrefix(body, []byte("app "+app+"\n")) {
			l.stats.add("GET " + app + " 200")
			continue
		}
		if err == nil && res.StatusCode == 200 {
			l.stats.problem("GET "+app+" wrong app", fmt.Sprintf("GET %s answered by %q", app, body))
			continue
		}
		l.answered("GET", app, from, res, err)
	}
}

// postClient POSTs bodies of 1 byte to 32 KiB to hello's /echo with an id
// the app records, and checks the length and sha256 it answers.
func (l *chaosLoad) postClient(rng *rand.Rand, app, name, url string) {
	client := chaosClient()
	defer client.CloseIdleConnections()
	for i := 0; !l.stopped(); i++ {
		id := fmt.Sprintf("%s-%d", name, i)
		body := make([]byte, 1+rng.IntN(32<<10))
		for j := range body {
			body[j] = byte('a' + rng.IntN(26))
		}
		from := time.Now()
		res, err := client.Post(url+"?id="+id, "text/plain", bytes.NewReader(body))
		var got []byte
		if err == nil {
			got, err = io.ReadAll(res.Body)
			res.Body.Close()
		}
		ok := err == nil && res.StatusCode == 200
		l.stats.mu.Lock()
		l.stats.posts[id] = ok
		l.stats.mu.Unlock()
		if !ok {
			l.answered("POST", app, from, res, err)
			continue
		}
		// "<version> <length> <sha256>"
		f := strings.Fields(string(got))
		if len(f) != 3 || f[1] != strconv.Itoa(len(body)) || f[2] != fmt.Sprintf("%x", sha256.Sum256(body)) {
			l.stats.problem("POST "+app+" corrupt", fmt.Sprintf("POST %s of %d bytes answered %q", id, len(body), got))
			continue
		}
		l.stats.add("POST " + app + " 200")
	}
}

// websockets opens a websocket, echoes a message every 50ms for 0.5–4s and
// closes it, again and again. A drain deadline or a kill may cut one: judge
// checks which did.
func (l *chaosLoad) websockets(rng *rand.Rand, app, url string) {
	for !l.stopped() {
		from := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, res, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			if res != nil && res.StatusCode != http.StatusSwitchingProtocols {
				err = nil // an answer, not a transport error
			}
			l.answered("WS", app, from, res, err)
			cancel()
			continue
		}
		pid, _ := strconv.Atoi(res.Header.Get("X-Pid"))
		life := time.Duration(500+rng.IntN(3500)) * time.Millisecond
		err = func() error {
			if _, hello, err := conn.Read(ctx); err != nil || !strings.HasPrefix(string(hello), "version ") {
				return fmt.Errorf("greeting %q: %v", hello, err)
			}
			for i := 0; time.Since(from) < life && !l.stopped(); i++ {
				msg := fmt.Sprintf("m%d", i)
				if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					return err
				}
				if _, got, err := conn.Read(ctx); err != nil || string(got) != msg {
					return fmt.Errorf("echo %q of %q: %v", got, msg, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			return conn.Close(websocket.StatusNormalClosure, "")
		}()
		conn.CloseNow()
		cancel()
		if err != nil {
			l.stats.keep(&l.stats.cuts, "WS "+app+" cut", timed{what: "WS: " + err.Error(), app: app, pid: pid, from: from, to: time.Now()})
			continue
		}
		l.stats.add("WS " + app + " 200")
	}
}

// sse reads event streams of n events from url, one after another.
func (l *chaosLoad) sse(app, url string, n int) {
	client := chaosClient()
	defer client.CloseIdleConnections()
	for !l.stopped() {
		from := time.Now()
		res, err := client.Get(url)
		if err != nil || res.StatusCode != 200 {
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			l.answered("SSE", app, from, res, err)
			continue
		}
		pid, _ := strconv.Atoi(res.Header.Get("X-Pid"))
		events := 0
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				events++
			}
		}
		res.Body.Close()
		if events != n {
			l.stats.keep(&l.stats.cuts, "SSE "+app+" cut", timed{what: fmt.Sprintf("SSE: %d of %d events, %v", events, n, sc.Err()), app: app, pid: pid, from: from, to: time.Now()})
			continue
		}
		l.stats.add("SSE " + app + " 200")
	}
}
