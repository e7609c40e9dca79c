package knownhosts

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/internal/fileload"
)

// memoMax caps the lazily filled memo of a known_hosts file
// that has non-plain lines; hosts beyond it are matched by the callback on
// every connection.
const memoMax = 1 << 17

// DB is a parsed known_hosts file.
//
// Matching a host against the file is what the x/crypto knownhosts callback
// does by scanning every line, once to learn which key types to ask for and
// once to verify the key: with 10,000 hosts that was 17 % of the client CPU
// per fresh connection and 27 % of the exporter's CPU in steady state.
// Here a host's lines are found with one map lookup instead:
//
//   - A plain file (no @cert-authority or @revoked marker, no hashed host,
//     no wildcard or negated pattern) is indexed when loaded: there the
//     callback's matchers compare a pattern's host and port for equality,
//     so the lines of a host are exactly those with an equal pattern.
//   - Any other file has its lines per host memoised on first use, as
//     listed by the callback itself for a key no line holds (probe):
//     matching depends on nothing but the host and port, so the list
//     stays right for the life of this file version.
//
// Verification then follows knownhosts's check for plain keys: a revoked
// key fails, otherwise the first line of the host with an equal key
// accepts it, otherwise the result is a *knownhosts.KeyError listing the
// host's lines. Host certificates, and calls the callback would fail before
// matching lines, always go to the callback.
type DB struct {
	// callback is the x/crypto knownhosts callback for the file (or, with
	// insecure_skip_host_key_verification, one accepting any key). It
	// defines the verdicts; the index only answers faster.
	callback ssh.HostKeyCallback
	// hasCA is true when the file has @cert-authority lines.
	hasCA bool
	// probe is a throwaway key that matches no line; checking it lists the
	// keys known for a host (knownhosts.KeyError.Want). Nil without a file.
	probe ssh.PublicKey
	// plain is true when index holds every host of a plain file; a host
	// missing from it has no lines.
	plain bool
	// index maps the hosts of a plain file to their lines, in file order.
	// It is read-only after loading.
	index map[hostAddr][]knownLine
	// revoked maps the key blob of each @revoked line to the last such
	// line, as knownhosts keeps it.
	revoked map[string]knownhosts.KnownKey
	// memo maps hostAddr to []knownLine for files that are not plain;
	// memoLen counts its entries.
	memo    sync.Map
	memoLen atomic.Int64
}

// hostAddr is a host and port as the knownhosts package matches them: a
// pattern "[h]:p" or "h:p" is host h and port p, any other pattern is
// host and port 22, and the name being checked is split with
// net.SplitHostPort. It is the pair knownhosts.Normalize renders as h or
// [h]:p.
type hostAddr struct{ host, port string }

// knownLine is one known_hosts line in the index.
type knownLine struct {
	known knownhosts.KnownKey
	// blob is known.Key.Marshal(), the form keys are compared in.
	blob string
}

// Load parses the known_hosts file at path. The file is read once,
// bounded by fileload.MaxKnownHostsSize and only if it is a regular file;
// the index and the x/crypto callback are both built from those bytes. Its
// errors name the file but never quote its contents.
func Load(path string) (*DB, error) {
	b, err := fileload.Read(path, fileload.MaxKnownHostsSize)
	if err != nil {
		return nil, fmt.Errorf("known_hosts_file %q: %v", path, pathError(err))
	}
	kh, err := parse(b, path)
	if err != nil {
		return nil, fmt.Errorf("known_hosts_file %q: %v", path, err)
	}
	cb, err := callbackFrom(b, path)
	if err != nil {
		return nil, fmt.Errorf("known_hosts_file %q: %v", path, err)
	}
	kh.callback = cb
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if kh.probe, err = ssh.NewPublicKey(pub); err != nil {
		return nil, err
	}
	return kh, nil
}

// callbackFrom builds the x/crypto knownhosts callback from b, the
// contents of the file at path. knownhosts offers no constructor taking
// bytes, only knownhosts.New with file names, and letting it open path
// itself would read the file a second time: unbounded, blocking on a FIFO
// swapped in after the first read, and possibly a different version. So b
// is handed to it through a pipe, opened by its /dev/fd name; nothing but
// b is ever read and nothing touches the disk. The lines the callback
// reports (knownhosts.KnownKey.Filename) are renamed back to path.
func callbackFrom(b []byte, path string) (ssh.HostKeyCallback, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// A pipe holds far less than a known_hosts file may, so the write
	// runs beside the read. It ends when knownhosts has read everything,
	// or with EPIPE once r is closed below should knownhosts stop early.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		_, _ = w.Write(b)
		_ = w.Close()
	}()
	name := fdName(r.Fd())
	cb, err := knownhosts.New(name)
	_ = r.Close()
	<-wrote
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Path == name {
		return nil, fmt.Errorf("cannot pass the file to the knownhosts parser through %s: %v", name, pe.Err)
	}
	if err != nil {
		// Parse errors quote the file name knownhosts was given.
		return nil, errors.New(strings.ReplaceAll(err.Error(), name, path))
	}
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(err, &ke):
			for i := range ke.Want {
				ke.Want[i].Filename = path
			}
		case errors.As(err, &re):
			re.Revoked.Filename = path
		}
		return err
	}, nil
}

// parse parses a known_hosts file the way
// knownhosts.(*hostKeyDB).Read does (same line numbers, tokens and errors)
// and returns it without callback and probe. path is the file name
// recorded in each knownhosts.KnownKey.
func parse(b []byte, path string) (*DB, error) {
	kh := &DB{
		plain:   true,
		index:   make(map[hostAddr][]knownLine),
		revoked: make(map[string]knownhosts.KnownKey),
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	lineNum := 0
	var addrs []hostAddr
	for sc.Scan() {
		lineNum++
		line := bytes.Trim(sc.Bytes(), " \t")
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		marker, pattern, key, err := parseKnownHostsLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNum, err)
		}
		known := knownhosts.KnownKey{Key: key, Filename: path, Line: lineNum}
		switch {
		case marker == "@revoked":
			kh.revoked[plainKeyBlob(key)] = known
			kh.plain = false
			continue
		case marker == "@cert-authority":
			kh.hasCA = true
			kh.plain = false
			continue
		case pattern[0] == '|':
			kh.plain = false
			continue
		}
		addrs = addrs[:0]
		for p := range strings.SplitSeq(pattern, ",") {
			if p == "" {
				continue // knownhosts skips empty patterns too
			}
			a, ok, err := parseHostPattern(p)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNum, err)
			}
			if !ok {
				kh.plain = false
				continue
			}
			if !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
		if !kh.plain {
			continue
		}
		// A line matches once however many of its patterns do.
		kl := knownLine{known: known, blob: string(key.Marshal())}
		for _, a := range addrs {
			kh.index[a] = append(kh.index[a], kl)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !kh.plain {
		kh.index = nil
	}
	return kh, nil
}

// fdName returns a file name that opens the descriptor fd: /dev/fd/fd,
// or its Linux target under /proc where a minimal /dev lacks the link.
func fdName(fd uintptr) string {
	name := fmt.Sprintf("/dev/fd/%d", fd)
	if fileExists(name) {
		return name
	}
	if alt := fmt.Sprintf("/proc/self/fd/%d", fd); fileExists(alt) {
		return alt
	}
	return name
}

// fileExists reports whether name can be stat'ed.
func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// plainKeyBlob is the blob a key is looked up by among revoked keys: for
// a certificate the certified key, as in knownhosts.
func plainKeyBlob(key ssh.PublicKey) string {
	if cert, ok := key.(*ssh.Certificate); ok {
		return string(cert.Key.Marshal())
	}
	return string(key.Marshal())
}

// parseHostPattern parses one comma-separated pattern of a known_hosts
// line as knownhosts does. ok is false for a negated or wildcard pattern,
// which only the knownhosts callback evaluates. p must not be empty.
func parseHostPattern(p string) (a hostAddr, ok bool, err error) {
	if p[0] == '!' {
		if len(p) == 1 {
			return a, false, errors.New("negation without following hostname")
		}
		return a, false, nil
	}
	if p[0] == '[' {
		if a.host, a.port, err = net.SplitHostPort(p); err != nil {
			return a, false, err
		}
	} else if a.host, a.port, err = net.SplitHostPort(p); err != nil {
		a.host, a.port = p, "22"
	}
	if strings.ContainsAny(a.host, "*?") {
		return hostAddr{}, false, nil
	}
	return a, true, nil
}

// parseKnownHostsLine splits one non-empty, non-comment known_hosts line
// into its marker, host pattern and key, with the rules and errors of
// knownhosts.
func parseKnownHostsLine(line []byte) (marker, pattern string, key ssh.PublicKey, err error) {
	if w, next := nextWord(line); w == "@cert-authority" || w == "@revoked" {
		marker, line = w, next
	}
	pattern, line = nextWord(line)
	if len(pattern) > 0 && pattern[0] == '@' {
		return "", "", nil, fmt.Errorf("unexpected marker: %q", pattern)
	}
	if len(line) == 0 {
		return "", "", nil, errors.New("missing host pattern")
	}
	wantType, line := nextWord(line)
	if len(line) == 0 {
		return "", "", nil, errors.New("missing key type pattern")
	}
	blob, _ := nextWord(line)
	raw, err := base64.StdEncoding.DecodeString(blob)
	if err != nil {
		return "", "", nil, err
	}
	if key, err = ssh.ParsePublicKey(raw); err != nil {
		return "", "", nil, err
	}
	if key.Type() != wantType {
		return "", "", nil, fmt.Errorf("key type mismatch: found %q, want %q", key.Type(), wantType)
	}
	return marker, pattern, key, nil
}

// nextWord returns the first space- or tab-separated word of line and
// the rest with surrounding blanks removed.
func nextWord(line []byte) (string, []byte) {
	i := bytes.IndexAny(line, "\t ")
	if i < 0 {
		return string(line), nil
	}
	return string(line[:i]), bytes.Trim(line[i:], " \t")
}

// lookup returns the lines of the host the knownhosts callback would match
// for (hostname, remote), and false when it cannot tell: the file is not
// loaded (insecure mode), or the callback would not get as far as matching
// lines (it fails on a remote address it cannot split, and matches remote
// instead of hostname when hostname is empty).
func (k *DB) lookup(hostname string, remote net.Addr) ([]knownLine, bool) {
	if k.probe == nil || hostname == "" {
		return nil, false
	}
	if ta, ok := remote.(*net.TCPAddr); !ok || ta == nil {
		return nil, false
	}
	host, port, err := net.SplitHostPort(hostname)
	if err != nil {
		return nil, false
	}
	a := hostAddr{host, port}
	if k.plain {
		return k.index[a], true
	}
	if v, ok := k.memo.Load(a); ok {
		return v.([]knownLine), true
	}
	// The probe key is in no line, so the callback lists every line that
	// matches the host.
	var ke *knownhosts.KeyError
	if err := k.callback(hostname, remote, k.probe); !errors.As(err, &ke) {
		return nil, false
	}
	lines := make([]knownLine, len(ke.Want))
	for i, kk := range ke.Want {
		lines[i] = knownLine{known: kk, blob: string(kk.Key.Marshal())}
	}
	if k.memoLen.Load() < memoMax {
		if _, loaded := k.memo.LoadOrStore(a, lines); !loaded {
			k.memoLen.Add(1)
		}
	}
	return lines, true
}

// Check is the host key callback for a connection: the knownhosts
// callback's verdict, given without scanning the file where lookup knows
// the host's lines. A key not listed for the host yields the
// *knownhosts.KeyError the callback would return, listing the same lines.
func (k *DB) Check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	if _, cert := key.(*ssh.Certificate); cert {
		return k.callback(hostname, remote, key)
	}
	lines, ok := k.lookup(hostname, remote)
	if !ok {
		return k.callback(hostname, remote, key)
	}
	blob := key.Marshal()
	if r, ok := k.revoked[string(blob)]; ok {
		return &knownhosts.RevokedError{Revoked: r}
	}
	for _, l := range lines {
		if l.blob == string(blob) {
			return nil
		}
	}
	ke := &knownhosts.KeyError{}
	for _, l := range lines {
		ke.Want = append(ke.Want, l.known)
	}
	return ke
}

// Known returns the keys known_hosts lists for hostport in file order, as
// knownhosts.KeyError.Want would for a key not listed.
func (k *DB) Known(hostport string, remote net.Addr) []ssh.PublicKey {
	var keys []ssh.PublicKey
	if lines, ok := k.lookup(hostport, remote); ok {
		for _, l := range lines {
			keys = append(keys, l.known.Key)
		}
		return keys
	}
	var ke *knownhosts.KeyError
	if err := k.callback(hostport, remote, k.probe); errors.As(err, &ke) {
		for _, kk := range ke.Want {
			keys = append(keys, kk.Key)
		}
	}
	return keys
}

// HostKeyAlgorithms orders the client's host key algorithms so that the
// server is asked for a key type known_hosts actually lists for hostport.
// Without this the client takes its default preference (ECDSA before
// Ed25519) and a server holding both keys would fail verification against a
// known_hosts file that only lists its Ed25519 key. Certificate algorithms
// are offered only when the file has @cert-authority lines, since otherwise
// a host certificate can never verify. It returns nil (library defaults)
// when nothing is known about the host.
func (k *DB) HostKeyAlgorithms(hostport string, remote net.Addr) []string {
	if k.probe == nil {
		return nil
	}
	supported := ssh.SupportedAlgorithms().HostKeys
	// Legacy SHA-1 RSA stays acceptable last, as in the library defaults.
	supported = append(supported, ssh.KeyAlgoRSA, ssh.CertAlgoRSAv01)
	var want []string
	for _, key := range k.Known(hostport, remote) {
		for _, algo := range algorithmsForKeyType(key.Type()) {
			if !slices.Contains(want, algo) {
				want = append(want, algo)
			}
		}
	}
	if len(want) == 0 && !k.hasCA {
		return nil
	}
	var algos []string
	if k.hasCA {
		for _, a := range supported {
			if strings.Contains(a, "-cert-") {
				algos = append(algos, a)
			}
		}
	}
	algos = append(algos, want...)
	for _, a := range supported {
		if !strings.Contains(a, "-cert-") && !slices.Contains(algos, a) {
			algos = append(algos, a)
		}
	}
	return algos
}

// algorithmsForKeyType maps a public key type to the host key signature
// algorithms that use it.
func algorithmsForKeyType(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// Insecure returns a DB that accepts any host key, for targets whose config
// opts out of verification explicitly. It knows no host, so
// HostKeyAlgorithms returns nil (the library defaults).
func Insecure() *DB {
	return &DB{callback: ssh.InsecureIgnoreHostKey()}
}

// pathError reduces an os error to its cause; the caller names the path.
func pathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Indexed reports whether the file was plain enough to be indexed whole when
// loaded, so that no lookup of it ever scans the file.
func (k *DB) Indexed() bool { return k.plain }
