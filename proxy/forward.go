package proxy

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"
)

// maxReplays bounds how often an idempotent request is sent again after its
// app died before answering: a request that kills every instance it reaches
// must not take the app down forever.
const maxReplays = 3

// forwarder is the ReverseProxy's Transport: the gate, instance choice,
// in-flight registration and retries around each version's http.Transport.
type forwarder struct{}

var errNoCall = errors.New("proxy: request did not come through Proxy.ServeHTTP")

// RoundTrip forwards req, which ReverseProxy prepared from a request that
// went through Proxy.ServeHTTP, to an instance of its app. It returns a
// response whose body, when closed or read to the end, takes the request out
// of its version's registry.
//
// A failed connect sent nothing: the request goes back to the gate and tries
// another ready instance, or waits for a change. An idempotent request whose
// app failed before any response byte goes back too, if its body can be sent
// again. Any other failure is returned (502), as is the context's error when
// the client left or Retire cut the request.
func (forwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	c := callFrom(req.Context())
	if c == nil {
		return nil, errNoCall
	}
	idempotent := isIdempotent(req)
	body, err := newReplayBody(req.Body, req.ContentLength, idempotent)
	if err != nil {
		return nil, err
	}
	replays := 0
	for {
		v, in, err := c.b.acquire(c)
		if err != nil {
			return nil, err
		}
		c.lastVersion = v.name

		// RoundTrippers must not modify the request they are given: each
		// attempt is a shallow copy aimed at the instance's host.
		out := req.WithContext(req.Context())
		u := *req.URL
		u.Host = in.host
		out.URL = &u
		body.prepare(out)

		res, err := v.transport.RoundTrip(out)
		if err == nil {
			return c.wrapResponse(res), nil
		}
		c.b.finish(c)
		if c.ctx.Err() != nil {
			return nil, err
		}
		if de := (*dialError)(nil); errors.As(err, &de) {
			body.endAttempt() // nothing was sent: returns at once
			if body.untouched() {
				c.avoid = append(c.avoid, in)
				continue
			}
			return nil, err
		}
		if !idempotent || replays >= maxReplays {
			return nil, err
		}
		body.endAttempt()
		if !body.untouched() {
			return nil, err
		}
		replays++
		c.avoid = append(c.avoid, in)
	}
}

// wrapResponse makes res's body report the end of the request to the
// registry. A 101 response's body is the backend connection: the wrapper
// keeps it writable and the call counts as upgraded.
func (c *call) wrapResponse(res *http.Response) *http.Response {
	fb := &flightBody{ReadCloser: res.Body, c: c}
	c.resBody = fb
	if res.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
			c.b.markUpgraded(c)
			res.Body = &upgradedBody{flightBody: fb, rwc: rwc}
			return res
		}
	}
	res.Body = fb
	return res
}

// isIdempotent reports whether a request may be sent again after its app
// died before answering: GET, HEAD, OPTIONS, TRACE, or any request carrying
// an Idempotency-Key (the same rule as http.Transport's own retries).
func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := r.Header["Idempotency-Key"]
	_, xkey := r.Header["X-Idempotency-Key"]
	return key || xkey
}

// flightBody wraps a response body so that the call leaves its version's
// registry when the body is done: at EOF or a read error, or on Close,
// whichever comes first.
type flightBody struct {
	io.ReadCloser
	c      *call
	closed atomic.Bool
}

func (f *flightBody) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err != nil {
		f.c.b.finish(f.c)
	}
	return n, err
}

func (f *flightBody) Close() error {
	f.closed.Store(true)
	err := f.ReadCloser.Close()
	f.c.b.finish(f.c)
	return err
}

// closeIfOpen closes the body if nobody did: ReverseProxy leaves a 101
// response's body open on some error paths.
func (f *flightBody) closeIfOpen() {
	if !f.closed.Load() {
		f.Close()
	}
}

// upgradedBody is the body of a 101 Switching Protocols response: the
// backend connection itself. It must stay an io.ReadWriteCloser or
// ReverseProxy refuses to switch protocols. The call stays in flight until
// Close (ReverseProxy closes it when either side is done, or when the
// request context is cancelled); reaching EOF only means the backend
// stopped writing.
type upgradedBody struct {
	*flightBody
	rwc io.ReadWriteCloser
}

func (u *upgradedBody) Read(p []byte) (int, error) { return u.rwc.Read(p) }

func (u *upgradedBody) Write(p []byte) (int, error) { return u.rwc.Write(p) }

// CloseWrite passes the client's half-close on to the backend, as
// ReverseProxy does when the body supports it.
func (u *upgradedBody) CloseWrite() error {
	if cw, ok := u.rwc.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
