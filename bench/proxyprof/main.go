// Command proxyprof runs deployer's proxy package in front of an app's unix
// socket, behind the front end and settings the daemon gives its plain
// public listener, so that the proxy's hot path can be profiled without the
// supervisor around it:
//
//	go run ./bench/backend -socket /tmp/app.sock &
//	go run ./bench/proxyprof -socket /tmp/app.sock -cpuprofile cpu.out -allocprofile allocs.out -for 15s &
//	wrk -t2 -c64 -d10s http://127.0.0.1:8082/
//	go tool pprof -top cpu.out
//
// With -trace it writes an execution trace of a window of the run instead
// (3 s after the start, for 2 s, by default), and bench/tracestat shows how
// long goroutines waited for a thread and for their peers in it:
//
//	go run ./bench/proxyprof -socket /tmp/app.sock -trace proxy.trace &
//	wrk -t2 -c64 -d7s http://127.0.0.1:8082/
//	go run ./bench/tracestat -split 'proxy.(*call)' proxy.trace
//
// With -hold N it measures instead what holding costs inside the process:
// it pauses the app, sends N requests on N connections, and prints the Go
// heap, goroutine stacks and live objects per held request (from
// runtime.MemStats), and writes a heap profile with -heapprofile.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/deployer/deployer/bench/internal/tracewin"
	"github.com/deployer/deployer/proxy"
	"github.com/deployer/deployer/proxy/front"
)

func main() {
	socket := flag.String("socket", "", "the app's unix socket")
	addr := flag.String("addr", "127.0.0.1:8082", "address to listen on")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here")
	allocProfile := flag.String("allocprofile", "", "write an allocation profile here")
	heapProfile := flag.String("heapprofile", "", "with -hold: write a heap profile of the held requests here")
	runFor := flag.Duration("for", 0, "stop after this long, writing the profiles (0: run until killed, no profiles)")
	hold := flag.Int("hold", 0, "measure the memory of this many held requests, then exit")
	traceFile := flag.String("trace", "", "write an execution trace of a window of the run here (bench/tracestat reads it)")
	traceAfter := flag.Duration("trace-after", 3*time.Second, "with -trace: start the window this long after the start")
	traceFor := flag.Duration("trace-for", 2*time.Second, "with -trace: the window's length")
	flag.Parse()
	tracewin.Start("proxyprof", *traceFile, *traceAfter, *traceFor)
	if *heapProfile != "" {
		runtime.MemProfileRate = 1 // every allocation, for exact figures per held request
	}
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "proxyprof: -socket is required")
		os.Exit(2)
	}

	p := proxy.New(proxy.Options{Logger: slog.New(slog.DiscardHandler)})
	p.SetApp("web", proxy.AppOptions{MaxQueued: max(*hold+1, proxy.DefaultMaxQueued)})
	if err := p.SetRoutes([]proxy.Route{{Host: "*", App: "web"}}); err != nil {
		fail(err)
	}
	p.Serve("web", "v1", []proxy.Target{{Network: "unix", Addr: *socket}})
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fail(err)
	}
	// As supervisor/daemon.go configures its plain public listener.
	srv := &front.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	go srv.Serve(l)

	if *hold > 0 {
		holdCost(p, l.Addr().String(), *hold, *heapProfile)
		return
	}
	if *runFor == 0 {
		select {}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fail(err)
		}
		pprof.StartCPUProfile(f)
		defer f.Close()
	}
	time.Sleep(*runFor)
	pprof.StopCPUProfile()
	if *allocProfile != "" {
		writeProfile("allocs", *allocProfile)
	}
}

// holdCost pauses the app, holds n requests and reports what they cost.
func holdCost(p *proxy.Proxy, addr string, n int, heapProfile string) {
	var before, during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p.Hold("web")
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fail(err)
		}
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n")); err != nil {
			fail(err)
		}
		conns = append(conns, c)
	}
	for p.Stats("web").Held < n {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
	runtime.ReadMemStats(&during)
	if heapProfile != "" {
		writeProfile("heap", heapProfile)
	}
	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(n) }
	fmt.Printf("%d held requests, per request: heap in use %.0f B, goroutine stacks %.0f B, live objects %.1f; %d goroutines\n",
		n, per(before.HeapInuse, during.HeapInuse), per(before.StackInuse, during.StackInuse),
		per(before.Mallocs-before.Frees, during.Mallocs-during.Frees), runtime.NumGoroutine())
	p.Release("web")
	for _, c := range conns {
		c.Close()
	}
}

func writeProfile(name, path string) {
	f, err := os.Create(path)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "proxyprof:", err)
	os.Exit(1)
}
