package ssh

import (
	"bytes"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// maxStderrLine is the most bytes of a command's first stderr line that are
// kept.
const maxStderrLine = 256

// firstLineWriter keeps the first line of what is written to it, at most
// maxStderrLine bytes, and discards everything else while still accepting
// it: the session's copy goroutine drains the stream, so a flood costs no
// memory and never blocks the command.
type firstLineWriter struct {
	// mu guards buf and done: a session closed for exceeding the output
	// limit is not waited for, so its copy goroutine may still write while
	// the prober reads.
	mu   sync.Mutex
	buf  []byte
	done bool
}

// Write implements io.Writer.
func (w *firstLineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(b), nil
	}
	p := b
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		p, w.done = p[:i], true
	}
	if rest := maxStderrLine - len(w.buf); len(p) > rest {
		p, w.done = p[:rest], true
	}
	w.buf = append(w.buf, p...)
	return len(b), nil
}

// line returns the first line, sanitised for a terminal or a log: invalid
// UTF-8 and control characters become U+FFFD or spaces, and surrounding
// space is trimmed.
func (w *firstLineWriter) line() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return sanitizeLine(w.buf)
}

func sanitizeLine(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r == utf8.RuneError && size <= 1:
			// A rune cut by the byte limit or invalid input.
			sb.WriteRune(utf8.RuneError)
		case r == '\t' || r == '\r':
			sb.WriteByte(' ')
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r):
			sb.WriteRune(utf8.RuneError)
		default:
			sb.WriteRune(r)
		}
	}
	return strings.TrimSpace(sb.String())
}
