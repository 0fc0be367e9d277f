package front

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"sync"
)

// Limits on chunked request bodies. A chunk-size line (with its
// extensions) longer than maxChunkLine, or extensions adding up to more
// than maxChunkExt over a body, end it: tiny chunks with long extensions
// would otherwise cost the server far more than the bytes they carry.
const (
	maxChunkLine = 4096
	maxChunkExt  = 64 << 10
)

// maxDrain is how much of a body its handler left unread the server reads
// and drops to keep the connection; more, and it closes the connection.
const maxDrain = 256 << 10

var (
	errChunkSize    = errors.New("front: invalid chunk size")
	errChunkLine    = errors.New("front: chunk-size line too long or malformed")
	errChunkCRLF    = errors.New("front: missing CRLF after chunk data")
	errChunkExt     = errors.New("front: chunk extensions too long")
	errTrailer      = errors.New("front: malformed trailer")
	errTrailerLarge = errors.New("front: trailer section too large")
)

// body is a request's body: Content-Length bytes, or chunks and a trailer
// section. Each request with a body has its own (see conn.body).
//
// Its reads are serialized by mu (a proxy may read the body on a goroutine
// of its own while the handler writes the response), and once the handler
// returns every read fails for good, so no goroutine a handler left behind
// can take bytes of the next request. A read error (a malformed chunk, the client
// gone mid-body) is sticky and marks the connection broken: what follows on
// the wire is never read as a next request.
type body struct {
	c  *conn
	mu sync.Mutex

	chunked  bool
	inChunk  bool // chunked: inside a chunk's data (or its CRLF when remain == 0)
	sawEOF   bool
	closed   bool  // the handler closed it or returned
	remain   int64 // Content-Length: bytes left; chunked: bytes left in the current chunk
	extBytes int
	err      error
}

// reset prepares b for a request's body; none when !chunked && n == 0.
func (b *body) reset(chunked bool, n int64) {
	*b = body{c: b.c, chunked: chunked, remain: n, sawEOF: !chunked && n == 0}
}

// done reports whether the body was read to its end (or there is none).
func (b *body) done() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sawEOF
}

// tooMuchLeft reports whether more of a Content-Length body is left unread
// than finish would drain.
func (b *body) tooMuchLeft() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.sawEOF && b.err == nil && !b.chunked && b.remain > maxDrain
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

// Close makes later reads fail. What is left of the body is read (or the
// connection closed) once the handler returns.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// abandon makes later reads fail, for a handler that took the connection
// over (Hijack): what follows on the wire is the hijacker's. A read in
// progress is left to end as it will.
func (b *body) abandon() {
	if b.mu.TryLock() {
		b.closed = true
		b.mu.Unlock()
	}
}

func (b *body) readLocked(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.sawEOF {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	b.c.rw.sendContinue()
	var n int
	var err error
	if b.chunked {
		n, err = b.readChunked(p)
	} else {
		n, err = b.readFixed(p)
	}
	switch {
	case err == io.EOF:
		b.sawEOF = true
		b.c.bodyEOF()
	case err != nil:
		b.err = err
		b.c.broken.Store(true)
	}
	return n, err
}

func (b *body) readFixed(p []byte) (int, error) {
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.c.br.Read(p)
	b.remain -= int64(n)
	if b.remain == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// readChunked reads chunk data into p, reading chunk-size lines and the
// trailer section as they come (RFC 9112 7.1), strictly: a size is 1 to 15
// hex digits, lines end in CRLF, data is followed by CRLF.
func (b *body) readChunked(p []byte) (int, error) {
	br := b.c.br
	for {
		if b.inChunk && b.remain == 0 {
			crlf, err := br.Peek(2)
			if err != nil {
				return 0, unexpectedEOF(err)
			}
			if crlf[0] != '\r' || crlf[1] != '\n' {
				return 0, errChunkCRLF
			}
			br.Discard(2)
			b.inChunk = false
		}
		if !b.inChunk {
			size, err := b.readChunkSize(br)
			if err != nil {
				return 0, err
			}
			if size == 0 {
				return 0, b.readTrailer(br)
			}
			b.remain, b.inChunk = size, true
		}
		if len(p) == 0 {
			return 0, nil
		}
		q := p
		if int64(len(q)) > b.remain {
			q = q[:b.remain]
		}
		n, err := br.Read(q)
		b.remain -= int64(n)
		if n > 0 {
			return n, nil
		}
		if err != nil {
			return 0, unexpectedEOF(err)
		}
	}
}

func (b *body) readChunkSize(br *bufio.Reader) (int64, error) {
	line, err := readLine(br, maxChunkLine)
	if err != nil {
		if err == errLineTooLong {
			return 0, errChunkLine
		}
		return 0, unexpectedEOF(err)
	}
	i := 0
	var size int64
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 {
			return 0, errChunkSize // over 2^60: no body a proxy takes
		}
		size = size<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, errChunkSize
	}
	if rest := line[i:]; len(rest) > 0 {
		// chunk-ext: BWS ";" ... (RFC 9112 7.1.1). Only its characters
		// are checked; extensions are ignored.
		j := 0
		for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t') {
			j++
		}
		if j == len(rest) || rest[j] != ';' {
			return 0, errChunkSize
		}
		for ; j < len(rest); j++ {
			if c := rest[j]; c < ' ' && c != '\t' || c == 0x7f {
				return 0, errChunkLine
			}
		}
		b.extBytes += len(rest)
		if b.extBytes > maxChunkExt {
			return 0, errChunkExt
		}
	}
	return size, nil
}

// readTrailer reads the trailer section after the last chunk and sets its
// fields on the request's Trailer, as net/http does (announced or not).
// Fields that frame or route a message may not come as trailers.
func (b *body) readTrailer(br *bufio.Reader) error {
	limit := b.c.srv.maxHeaderBytes()
	total := 0
	r := &b.c.req
	for {
		line, err := readLine(br, limit)
		if err != nil {
			if err == errLineTooLong {
				return errTrailerLarge
			}
			return unexpectedEOF(err)
		}
		total += len(line) + 2
		if total > limit {
			return errTrailerLarge
		}
		if len(line) == 0 {
			return io.EOF
		}
		k, v, perr := parseField(string(line))
		if perr != nil {
			return errTrailer
		}
		switch k {
		case "Content-Length", "Transfer-Encoding", "Trailer", "Host":
			return errTrailer
		}
		if r.Trailer == nil {
			r.Trailer = make(http.Header)
		}
		r.Trailer[k] = append(r.Trailer[k], v)
	}
}

var errLineTooLong = errors.New("front: line too long")

// readLine returns the next CRLF-terminated line without its CRLF, valid
// until br's next read. A bare LF or CR inside is an error.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > limit {
		return nil, errLineTooLong
	}
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, errBareLF
	}
	line = line[:len(line)-2]
	for _, c := range line {
		if c == '\r' {
			return nil, errBareCR
		}
	}
	return line, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// finish runs after the handler returned: later reads fail, and what the
// handler left of the body is read and dropped, up to maxDrain, so the
// connection can serve its next request. It reports whether the
// connection can be kept.
func (b *body) finish(mayRead bool) bool {
	if !b.mu.TryLock() {
		// A goroutine the handler left behind is blocked reading the
		// body: interrupt it (its error makes the connection close).
		b.c.rwc.SetReadDeadline(aLongTimeAgo)
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	b.closed = true
	if b.err != nil {
		return false
	}
	if b.sawEOF {
		return true
	}
	if !mayRead || !b.chunked && b.remain > maxDrain {
		return false
	}
	var buf [4096]byte
	for drained := 0; drained <= maxDrain; {
		n, err := b.readLocked(buf[:])
		drained += n
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}
