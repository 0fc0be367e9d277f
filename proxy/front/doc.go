// Package front is deployer's HTTP/1.x server for the public listener: a
// replacement for net/http's http.Server, with the same fields, methods and
// ConnState semantics, for serving the proxy (any http.Handler) over plain
// HTTP/1.0 and HTTP/1.1. TLS and HTTP/2 stay on net/http.
//
// Why: with the proxy behind http.Server, net/http's server was the
// ceiling (BENCHMARKS.md): per request it allocates a Request, a URL, a
// Header map and a response with its cloned header map, runs a background
// read goroutine, and sets read deadlines several times. Here everything a
// request needs belongs to its connection and is reset for the next one:
// the Request, URL, Header map and value slices, the body reader and the
// ResponseWriter; a head identical to the connection's previous one (what
// keep-alive clients send) reuses its string; common header names are
// interned; the write buffer is pooled, so an idle or held connection keeps
// none. A keep-alive GET costs the server no allocation, and a deadline
// change only once per IdleTimeout/8 per connection.
//
// What a handler may rely on, as with net/http: a *http.Request with
// Method, URL (origin-form and absolute-form), Proto, Header (canonical
// keys, Host removed into Host), ContentLength (-1 for chunked),
// TransferEncoding, Close, Host, RemoteAddr, RequestURI, Body (http.NoBody
// when there is none) and Trailer (filled when a chunked body ends); a
// context done when the client leaves during the request or the handler
// returns; a ResponseWriter with Flush, FlushError, Hijack, EnableFullDuplex
// and the deadlines of http.ResponseController; 100 Continue at the first
// body read; http.ErrAbortHandler to break a response off.
//
// What differs from net/http, on purpose:
//   - Handlers must not keep the request, its Header map, its Body or the
//     ResponseWriter after ServeHTTP returns: they are the next request's.
//   - The request context watches the client only once Done or AfterFunc
//     is called on it, not for every request; until then Err reports only
//     the handler's end or a failed write. On Linux the watch is an epoll
//     registration served by one goroutine per process, not a goroutine
//     per request, and the connection's read buffer goes back to a pool
//     while it lasts: a held request costs its handler's goroutine, its
//     request and its connection's state, about 4 KiB of heap (elsewhere,
//     a background 1-byte read as net/http's). Unlike net/http, a request
//     whose body is unread is watched too, on Linux, for its client
//     closing or shutting down its sending side. Its Value knows
//     http.LocalAddrContextKey only (no ServerContextKey).
//   - Server.HandOver ends a server whose listeners another process took
//     over: responses say "Connection: close" and idle connections are
//     closed once quiet for a grace period, never at once.
//   - Strict parsing (see parseHead): lines end in CRLF only; obs-fold,
//     whitespace before a colon, CTLs in values, Content-Length with
//     Transfer-Encoding, a Transfer-Encoding other than one "chunked", a
//     Transfer-Encoding in HTTP/1.0 and differing Content-Lengths are
//     refused; chunk lines must end in CRLF and sizes be at most 15 hex
//     digits.
//   - No Content-Type sniffing, and headers are written in map order, not
//     sorted.
//   - The response head goes out at WriteHeader when the handler set a
//     Content-Length, else at the first Write, Flush or return that needs
//     it: header changes made between WriteHeader and then still count.
//   - A request read completely after Shutdown began is answered (with
//     Connection: close) instead of dropped.
//
// Limits: request head MaxHeaderBytes (64 KiB) → 431; ReadHeaderTimeout
// (10 s) from a head's first byte; IdleTimeout (120 s, up to 9/8 of it)
// between requests;
// up to 256 KiB of a body the handler left unread is drained to keep the
// connection, more closes it. There is no limit on body size or time: the
// proxy's MaxBody and the app do that.
package front
