// Package proxy is deployer's HTTP reverse proxy. It knows requests, not
// processes: the supervisor tells it the routes, the apps, which version of
// each app serves and on which sockets its instances listen, and the proxy
// routes, holds, forwards and drains requests accordingly.
//
// A request goes: route (host pattern, then the longest path prefix) → the
// app's gate (paused, or nothing ready: wait in the app's FIFO queue, up to
// queue_timeout from arrival) → an instance of the serving version, round
// robin over the ready ones → that version's in-flight registry → the
// version's own http.Transport. A failed connect sent nothing, so the
// request goes back to the gate; so does an idempotent request whose app
// died before answering. Upgraded connections (websockets) and streaming
// responses stay on the version that accepted them until they end or
// Retire's deadline cuts them.
//
// Versions and swaps: Serve(app, v2, targets) moves new requests to v2;
// requests already on v1 go on. Retire(ctx, app, v1) stops v1 for good: its
// idle keep-alive connections are closed at once, and Retire returns when
// its last request, stream or websocket ends, or cuts what is left when ctx
// is done. One http.Transport per version means no pooled connection ever
// carries a new request to an old version.
//
// Errors become HTTP statuses in one place (statusFor): no route 404; unknown
// or removed app, queue timeout, queue full 503 with Retry-After; the app
// failed on a request that cannot be replayed 502; a client that left is
// logged as 499.
package proxy
