// Package proxy is deployer's HTTP reverse proxy. It knows requests, not
// processes: the supervisor tells it the routes, the apps, which version of
// each app serves and on which sockets its instances listen, and the proxy
// routes, holds, forwards and drains requests accordingly.
//
// A request goes: route (host pattern, then the longest path prefix) → the
// app's gate (paused, or nothing ready: wait in the app's FIFO queue, up to
// queue_timeout from arrival) → an instance of the serving version, round
// robin over the ready ones → that version's in-flight registry → a slot of
// the instance (at most maxPending requests sent and not yet answered) → a
// keep-alive connection from the instance's pool. A failed connect sent
// nothing, so the request goes back to the gate; so does an idempotent
// request whose app died before answering. Upgraded connections
// (websockets) and streaming responses stay on the version that accepted
// them until they end or Retire's deadline cuts them.
//
// Forwarding is deployer's own HTTP/1.1 client (forward.go, request.go,
// response.go, pool.go), not httputil.ReverseProxy and http.Transport: the
// request's goroutine writes the request on a pooled connection and reads
// the response itself, without transport goroutines, cloned requests or
// header maps, and a small response goes to the client in one write with
// its head. It keeps ReverseProxy's rules (hop-by-hop headers, forwarding
// headers, 1xx, trailers, upgrades, ErrAbortHandler) and http.Transport's
// (a request that reached no app is sent again; a POST never goes out on a
// connection the app closed). bench/ and BENCHMARKS.md measure it.
//
// Versions and swaps: Serve(app, v2, targets) moves new requests to v2;
// requests already on v1 go on. Retire(ctx, app, v1) stops v1 for good: its
// idle keep-alive connections are closed at once, and Retire returns when
// its last request, stream or websocket ends, or cuts what is left when ctx
// is done. One connection pool per instance of a version means no pooled
// connection ever carries a new request to an old version.
//
// Hostile clients: the proxy never passes a client's bytes on as they came.
// Every request is re-framed (its own Content-Length or chunking toward the
// app, from the body the server parsed), so a request line or a body can
// never be read differently by the app than by the proxy; hop-by-hop
// headers and those named in Connection are dropped both ways; forwarding
// headers are believed only from Options.TrustedProxies; an h2c upgrade is
// ignored and "PRI" refused; AppOptions.MaxBody bounds request bodies. The
// wire-level checks (conflicting Content-Length and Transfer-Encoding, bad
// chunking, header limits) are the server's: proxy/front, or net/http's.
// A response the app frames ambiguously (both Content-Length and
// Transfer-Encoding, two lengths) is a 502, and its connection is closed.
//
// Errors become HTTP statuses in one place (statusFor): no route 404; unknown
// or removed app, queue timeout, queue full 503 with Retry-After; a body
// over MaxBody 413; a body that cannot be read or a refused request 400
// (both with Connection: close); the app failed on a request that cannot be
// replayed 502; a client that left is logged as 499.
package proxy
