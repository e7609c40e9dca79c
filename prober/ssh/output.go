package ssh

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"regexp"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

const (
	// maxValueBytes bounds the value label taken from a command's first
	// output line.
	maxValueBytes = 128
	// maxStderrLineBytes bounds the first line of stderr kept per command.
	maxStderrLineBytes = 256
	// maxVersionBytes bounds the server version kept per connection.
	maxVersionBytes = 128
)

// outputHasher hashes a command's output as its configuration says. Without
// ignore_lines (and in exec mode) it hashes the bytes as they come, so the
// hash is the sha256sum of the output. In line mode (ignore_lines set, or
// shell output, which comes as lines already) every CR is dropped, the
// output is split at LF and each line that no ignore_lines pattern matches
// is hashed followed by one LF: the sha256sum of
// `tr -d '\r' | grep -vE 'pattern|...'`. Bytes counts what was hashed.
type outputHasher struct {
	h      hash.Hash
	lines  bool
	ignore []*regexp.Regexp
	// label asks for the first (kept) line as the value label.
	label bool
	// max, when positive, is how many bytes of input are taken; the rest
	// is counted in raw only.
	max, raw int64

	// keep is how many of the hashed bytes are also kept, in kept, for
	// --once to print; 0 keeps none.
	keep int64
	kept []byte

	n       int64
	line    []byte
	first   []byte
	gotLine bool
}

// hashed feeds b, part of the hashed output, to the hash and to kept.
func (o *outputHasher) hashed(b []byte) {
	_, _ = o.h.Write(b)
	o.n += int64(len(b))
	if room := o.keep - int64(len(o.kept)); room > 0 {
		o.kept = append(o.kept, b[:min(int64(len(b)), room)]...)
	}
}

func newOutputHasher(lines bool, ignore []*regexp.Regexp, label bool) *outputHasher {
	return &outputHasher{h: sha256.New(), lines: lines || len(ignore) > 0, ignore: ignore, label: label}
}

// Write implements io.Writer; it never fails.
func (o *outputHasher) Write(b []byte) (int, error) {
	n := len(b)
	if o.max > 0 {
		rest := max(o.max-o.raw, 0)
		b = b[:min(int64(len(b)), rest)]
	}
	o.raw += int64(n)
	if !o.lines {
		o.hashed(b)
		if o.label && !o.gotLine {
			o.collectFirst(b)
		}
		return n, nil
	}
	for len(b) > 0 {
		i := strings.IndexByte(string(b), '\n')
		if i < 0 {
			o.appendLine(b)
			break
		}
		o.appendLine(b[:i])
		o.endLine()
		b = b[i+1:]
	}
	return n, nil
}

// collectFirst keeps the bytes of the first line of raw output.
func (o *outputHasher) collectFirst(b []byte) {
	if i := strings.IndexByte(string(b), '\n'); i >= 0 {
		b, o.gotLine = b[:i], true
	}
	if room := maxValueBytes + utf8.UTFMax - len(o.first); room > 0 {
		o.first = append(o.first, b[:min(len(b), room)]...)
	}
}

func (o *outputHasher) appendLine(b []byte) {
	for _, c := range b {
		if c != '\r' {
			o.line = append(o.line, c)
		}
	}
}

// endLine hashes the pending line unless it is ignored.
func (o *outputHasher) endLine() {
	line := o.line
	o.line = o.line[:0]
	for _, re := range o.ignore {
		if re.Match(line) {
			return
		}
	}
	o.hashed(line)
	o.hashed([]byte{'\n'})
	if o.label && !o.gotLine {
		o.first = append(o.first[:0], line[:min(len(line), maxValueBytes+utf8.UTFMax)]...)
		o.gotLine = true
	}
}

// writeLine hashes one complete line (without its LF), for shell output.
func (o *outputHasher) writeLine(line []byte) {
	o.appendLine(line)
	o.endLine()
}

// sum ends the output: a last line without LF counts as a line in line
// mode. It returns the 52-bit hash, the hex SHA-256, the hashed size and
// the value label (empty unless asked for).
func (o *outputHasher) sum() (short uint64, full string, n int64, value string) {
	if o.lines && len(o.line) > 0 {
		o.endLine()
	}
	s := o.h.Sum(nil)
	if o.label {
		value = sanitize(string(o.first), maxValueBytes)
	}
	return binary.BigEndian.Uint64(s[:8]) >> 12, hex.EncodeToString(s), o.n, value
}

// sanitize makes s safe for a label value or a log line: invalid UTF-8 and
// control characters become spaces, surrounding space is trimmed, and the
// result is cut to at most limit bytes on a character boundary.
func sanitize(s string, limit int) string {
	s = strings.ToValidUTF8(s, " ")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimSpace(s[:cut])
	}
	return s
}

// firstLine keeps the first line of what is written to it, at most limit
// bytes of it, and discards the rest, so that a stderr flood costs no
// memory. x/crypto/ssh writes to it from its own goroutine.
type firstLine struct {
	limit int

	// mu guards buf and done.
	mu   sync.Mutex
	buf  []byte
	done bool
}

// Write implements io.Writer.
func (f *firstLine) Write(b []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return len(b), nil
	}
	part := b
	if i := strings.IndexByte(string(b), '\n'); i >= 0 {
		part, f.done = b[:i], true
	}
	if room := f.limit + utf8.UTFMax - len(f.buf); room > 0 {
		f.buf = append(f.buf, part[:min(len(part), room)]...)
	}
	if len(f.buf) >= f.limit+utf8.UTFMax {
		f.done = true
	}
	return len(b), nil
}

// String returns the sanitised line.
func (f *firstLine) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sanitize(string(f.buf), f.limit)
}

// regexps compiles configured patterns once per pattern text and keeps
// them for every target and probe: config validation has compiled each
// already, so an error here means a hand-built configuration.
type regexps struct {
	// mu guards m.
	mu sync.Mutex
	m  map[string]*regexp.Regexp
}

// get returns the compiled pattern src.
func (r *regexps) get(src string) (*regexp.Regexp, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if re, ok := r.m[src]; ok {
		return re, nil
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return nil, configErrorf("regular expression %q: %v", src, err)
	}
	if r.m == nil {
		r.m = map[string]*regexp.Regexp{}
	}
	r.m[src] = re
	return re, nil
}

// list compiles every pattern of srcs.
func (r *regexps) list(srcs []string) ([]*regexp.Regexp, error) {
	if len(srcs) == 0 {
		return nil, nil
	}
	out := make([]*regexp.Regexp, len(srcs))
	for i, s := range srcs {
		re, err := r.get(s)
		if err != nil {
			return nil, err
		}
		out[i] = re
	}
	return out, nil
}

// keep drops every pattern not in srcs.
func (r *regexps) keep(srcs map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := range r.m {
		if !srcs[s] {
			delete(r.m, s)
		}
	}
}
