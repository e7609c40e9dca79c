package prober

import (
	"bufio"
	"bytes"
	"context"
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
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sync/singleflight"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// errSSHConfig marks errors caused by the probe's own settings (missing or
// unparsable key, password or known_hosts file); they map to probe.ReasonConfig.
// Error texts built on it name the file and the problem but never include
// file contents: no key material, passwords or passphrases.
var errSSHConfig = errors.New("ssh probe configuration")

// sshConfigErrorf returns an error wrapping errSSHConfig.
func sshConfigErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errSSHConfig, fmt.Sprintf(format, args...))
}

// SSHCheckKeyFilePermissions returns an error describing the problem when
// the private key file at path is accessible by its group or by others, the
// same rule OpenSSH enforces. It returns nil when the mode is safe, and the
// stat error when the file cannot be examined. Callers log the result as a
// warning; the prober itself still uses such a key.
func SSHCheckKeyFilePermissions(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("private key file %s is accessible by group or others (mode %04o); use chmod 600", path, perm)
	}
	return nil
}

// sshFileStamp identifies one version of a file: a change of content is
// assumed to change its modification time or size.
type sshFileStamp struct {
	path string
	mod  time.Time
	size int64
}

// sshStat returns the stamp of path.
func sshStat(path string) (sshFileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return sshFileStamp{}, err
	}
	return sshFileStamp{path: path, mod: fi.ModTime(), size: fi.Size()}, nil
}

// sshCacheEntry is one cached value and the file versions it was built from.
type sshCacheEntry[T any] struct {
	stamps []sshFileStamp
	val    T
	err    error
}

// sshCache holds values parsed from files so that key material and
// known_hosts files are read once per file version, not once per probe.
// An entry stays valid while every source file keeps its stamp.
type sshCache[T any] struct {
	// mu guards entries.
	mu      sync.Mutex
	entries map[string]sshCacheEntry[T]

	// group collapses concurrent loads of one key. Without it every target
	// sharing a key file misses the cache at once on the first round (and
	// after each change of the file) and decrypts the key itself: with a
	// bcrypt-protected key that is ~100 ms of CPU per target, enough for a
	// --once run over a few hundred hosts to time out every probe.
	group singleflight.Group
}

// get returns the cached value for key if none of paths changed since it was
// loaded, and otherwise calls load and caches its result (errors included,
// so a broken file is not re-parsed on every probe). what names the setting
// in errors about a path that cannot be examined.
func (c *sshCache[T]) get(key string, paths, what []string, load func() (T, error)) (T, error) {
	var zero T
	stamps := make([]sshFileStamp, len(paths))
	for i, path := range paths {
		st, err := sshStat(path)
		if err != nil {
			return zero, sshConfigErrorf("%s %q: %v", what[i], path, sshPathError(err))
		}
		stamps[i] = st
	}
	if e, ok := c.lookup(key, stamps); ok {
		return e.val, e.err
	}
	v, _, _ := c.group.Do(key, func() (any, error) {
		// A load that finished while this caller waited for the group may
		// already have stored what it needs.
		if e, ok := c.lookup(key, stamps); ok {
			return e, nil
		}
		val, err := load()
		e := sshCacheEntry[T]{stamps: stamps, val: val, err: err}
		// Only cache what is known to match the stamps: a file replaced
		// while it was being read is loaded again next time.
		for i, path := range paths {
			if st, serr := sshStat(path); serr != nil || st != stamps[i] {
				return e, nil
			}
		}
		c.mu.Lock()
		if c.entries == nil {
			c.entries = make(map[string]sshCacheEntry[T])
		}
		c.entries[key] = e
		c.mu.Unlock()
		return e, nil
	})
	e := v.(sshCacheEntry[T])
	return e.val, e.err
}

// lookup returns the entry of key if it was built from files with stamps.
func (c *sshCache[T]) lookup(key string, stamps []sshFileStamp) (sshCacheEntry[T], bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	return e, ok && slices.Equal(e.stamps, stamps)
}

// sshPathError reduces an os error to its cause; the caller names the path.
func sshPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// sshReadSecretFile reads a password or passphrase file and strips the
// trailing line break an editor leaves behind.
func sshReadSecretFile(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", sshConfigErrorf("%s %q: %v", what, path, sshPathError(err))
	}
	s := strings.TrimRight(string(b), "\r\n")
	clear(b)
	return s, nil
}

// sshLoadSigners parses the private key (and optional certificate) of cfg.
// The certificate signer, when present, comes first so that it is offered
// before the plain key.
func sshLoadSigners(cfg *config.SSHProbe) ([]ssh.Signer, error) {
	pem, err := os.ReadFile(cfg.PrivateKeyFile)
	if err != nil {
		return nil, sshConfigErrorf("private_key_file %q: %v", cfg.PrivateKeyFile, sshPathError(err))
	}
	defer clear(pem)
	signer, err := ssh.ParsePrivateKey(pem)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		if cfg.PassphraseFile == "" {
			return nil, sshConfigErrorf("private_key_file %q is encrypted and no passphrase_file is set", cfg.PrivateKeyFile)
		}
		pass, perr := sshReadSecretFile("passphrase_file", cfg.PassphraseFile)
		if perr != nil {
			return nil, perr
		}
		signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, []byte(pass))
		if err != nil {
			// The library's message says whether the passphrase was wrong or
			// the key damaged; it never echoes the input.
			return nil, sshConfigErrorf("private_key_file %q: cannot decrypt with passphrase_file %q: %v",
				cfg.PrivateKeyFile, cfg.PassphraseFile, err)
		}
	case err != nil:
		return nil, sshConfigErrorf("private_key_file %q: cannot parse private key: %v", cfg.PrivateKeyFile, err)
	}
	if cfg.CertificateFile == "" {
		return []ssh.Signer{signer}, nil
	}
	b, err := os.ReadFile(cfg.CertificateFile)
	if err != nil {
		return nil, sshConfigErrorf("certificate_file %q: %v", cfg.CertificateFile, sshPathError(err))
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, sshConfigErrorf("certificate_file %q: cannot parse certificate: %v", cfg.CertificateFile, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, sshConfigErrorf("certificate_file %q holds a plain public key, not a certificate", cfg.CertificateFile)
	}
	certSigner, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, sshConfigErrorf("certificate_file %q does not match private_key_file %q: %v",
			cfg.CertificateFile, cfg.PrivateKeyFile, err)
	}
	return []ssh.Signer{certSigner, signer}, nil
}

// sshAuth is the credential set of one target: file-based material is cached,
// the agent connection is per connection attempt.
type sshAuth struct {
	signers     []ssh.Signer
	password    string
	hasPassword bool
	// agentConn is the open agent socket, closed by close once the SSH
	// connection is authenticated (or failed).
	agentConn net.Conn
}

// close releases the agent connection, if any.
func (a *sshAuth) close() {
	if a.agentConn != nil {
		_ = a.agentConn.Close()
	}
}

// sshAuthCallbacks holds the file caches used to build credentials.
type sshAuthCallbacks struct {
	keys       sshCache[[]ssh.Signer]
	passwords  sshCache[string]
	knownHosts sshCache[*sshKnownHosts]
}

// auth loads the credentials of cfg. File errors wrap errSSHConfig. When
// cfg.Agent is set the agent at SSH_AUTH_SOCK is dialled under ctx and its
// keys are appended after the file key; the caller must call close.
func (c *sshAuthCallbacks) auth(ctx context.Context, cfg *config.SSHProbe) (*sshAuth, error) {
	a := &sshAuth{}
	if cfg.PrivateKeyFile != "" {
		paths := []string{cfg.PrivateKeyFile}
		what := []string{"private_key_file"}
		if cfg.PassphraseFile != "" {
			paths = append(paths, cfg.PassphraseFile)
			what = append(what, "passphrase_file")
		}
		if cfg.CertificateFile != "" {
			paths = append(paths, cfg.CertificateFile)
			what = append(what, "certificate_file")
		}
		signers, err := c.keys.get(strings.Join(paths, "\x00"), paths, what, func() ([]ssh.Signer, error) {
			return sshLoadSigners(cfg)
		})
		if err != nil {
			return nil, err
		}
		a.signers = append(a.signers, signers...)
	} else if cfg.CertificateFile != "" {
		return nil, sshConfigErrorf("certificate_file %q is set without private_key_file", cfg.CertificateFile)
	}
	if cfg.PasswordFile != "" {
		pw, err := c.passwords.get(cfg.PasswordFile, []string{cfg.PasswordFile}, []string{"password_file"}, func() (string, error) {
			return sshReadSecretFile("password_file", cfg.PasswordFile)
		})
		if err != nil {
			return nil, err
		}
		a.password, a.hasPassword = pw, true
	}
	if cfg.Agent {
		if err := a.dialAgent(ctx); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// dialAgent connects to the SSH agent and appends its signers. The socket
// gets the context's deadline so a stuck agent cannot outlive the probe.
func (a *sshAuth) dialAgent(ctx context.Context) error {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return sshConfigErrorf("agent is enabled but SSH_AUTH_SOCK is not set")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return sshConfigErrorf("agent: cannot connect to SSH_AUTH_SOCK: %v", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		_ = conn.Close()
		return sshConfigErrorf("agent: cannot list keys: %v", err)
	}
	a.agentConn = conn
	a.signers = append(a.signers, signers...)
	return nil
}

// methods returns the auth methods for an ssh.ClientConfig. Every method is
// a callback that calls mark first, so the first invocation records when
// authentication began.
func (a *sshAuth) methods(mark func()) []ssh.AuthMethod {
	var m []ssh.AuthMethod
	if len(a.signers) > 0 {
		m = append(m, ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
			mark()
			return a.signers, nil
		}))
	}
	if a.hasPassword {
		m = append(m, ssh.PasswordCallback(func() (string, error) {
			mark()
			return a.password, nil
		}))
		// Servers that disable "password" but allow keyboard-interactive
		// usually ask exactly one hidden question: the password.
		m = append(m, ssh.KeyboardInteractive(func(_, _ string, questions []string, echos []bool) ([]string, error) {
			mark()
			if len(questions) == 0 {
				return nil, nil
			}
			if len(questions) != 1 || echos[0] {
				return nil, errors.New("ssh: unsupported keyboard-interactive prompt")
			}
			return []string{a.password}, nil
		}))
	}
	return m
}

// sshKnownHostsMemoMax caps the lazily filled memo of a known_hosts file
// that has non-plain lines; hosts beyond it are matched by the callback on
// every connection.
const sshKnownHostsMemoMax = 1 << 17

// sshKnownHosts is a parsed known_hosts file.
//
// Matching a host against the file is what the x/crypto knownhosts callback
// does by scanning every line, once to learn which key types to ask for and
// once to verify the key: with 10,000 hosts that was 17 % of the client CPU
// per fresh connection and 27 % of the exporter's CPU in steady state
// (issue 3). Here a host's lines are found with one map lookup instead:
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
type sshKnownHosts struct {
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
	index map[sshHostAddr][]sshKnownLine
	// revoked maps the key blob of each @revoked line to the last such
	// line, as knownhosts keeps it.
	revoked map[string]knownhosts.KnownKey
	// memo maps sshHostAddr to []sshKnownLine for files that are not plain;
	// memoLen counts its entries.
	memo    sync.Map
	memoLen atomic.Int64
}

// sshHostAddr is a host and port as the knownhosts package matches them: a
// pattern "[h]:p" or "h:p" is host h and port p, any other pattern is
// host and port 22, and the name being checked is split with
// net.SplitHostPort. It is the pair knownhosts.Normalize renders as h or
// [h]:p.
type sshHostAddr struct{ host, port string }

// sshKnownLine is one known_hosts line in the index.
type sshKnownLine struct {
	known knownhosts.KnownKey
	// blob is known.Key.Marshal(), the form keys are compared in.
	blob string
}

// sshLoadKnownHosts parses path.
func sshLoadKnownHosts(path string) (*sshKnownHosts, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, sshConfigErrorf("known_hosts_file %q: %v", path, sshPathError(err))
	}
	cb, err := knownhosts.New(path)
	if err != nil {
		return nil, sshConfigErrorf("known_hosts_file %q: %v", path, err)
	}
	// knownhosts.New read the file again; should it have changed in
	// between, b may fail to parse where the callback's copy did not.
	// Callers do not cache a file whose stamp changed while loading.
	kh, err := sshIndexKnownHosts(b, path)
	if err != nil {
		return nil, sshConfigErrorf("known_hosts_file %q: %v", path, err)
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

// sshIndexKnownHosts parses a known_hosts file the way
// knownhosts.(*hostKeyDB).Read does (same line numbers, tokens and errors)
// and returns it without callback and probe. path is the file name
// recorded in each knownhosts.KnownKey.
func sshIndexKnownHosts(b []byte, path string) (*sshKnownHosts, error) {
	kh := &sshKnownHosts{
		plain:   true,
		index:   make(map[sshHostAddr][]sshKnownLine),
		revoked: make(map[string]knownhosts.KnownKey),
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	lineNum := 0
	var addrs []sshHostAddr
	for sc.Scan() {
		lineNum++
		line := bytes.Trim(sc.Bytes(), " \t")
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		marker, pattern, key, err := sshParseKnownHostsLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNum, err)
		}
		known := knownhosts.KnownKey{Key: key, Filename: path, Line: lineNum}
		switch {
		case marker == "@revoked":
			kh.revoked[sshPlainKeyBlob(key)] = known
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
			a, ok, err := sshParseHostPattern(p)
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
		kl := sshKnownLine{known: known, blob: string(key.Marshal())}
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

// sshPlainKeyBlob is the blob a key is looked up by among revoked keys: for
// a certificate the certified key, as in knownhosts.
func sshPlainKeyBlob(key ssh.PublicKey) string {
	if cert, ok := key.(*ssh.Certificate); ok {
		return string(cert.Key.Marshal())
	}
	return string(key.Marshal())
}

// sshParseHostPattern parses one comma-separated pattern of a known_hosts
// line as knownhosts does. ok is false for a negated or wildcard pattern,
// which only the knownhosts callback evaluates. p must not be empty.
func sshParseHostPattern(p string) (a sshHostAddr, ok bool, err error) {
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
		a.host, a.port, err = p, "22", nil
	}
	if strings.ContainsAny(a.host, "*?") {
		return sshHostAddr{}, false, nil
	}
	return a, true, nil
}

// sshParseKnownHostsLine splits one non-empty, non-comment known_hosts line
// into its marker, host pattern and key, with the rules and errors of
// knownhosts.
func sshParseKnownHostsLine(line []byte) (marker, pattern string, key ssh.PublicKey, err error) {
	if w, next := sshNextWord(line); w == "@cert-authority" || w == "@revoked" {
		marker, line = w, next
	}
	pattern, line = sshNextWord(line)
	if len(pattern) > 0 && pattern[0] == '@' {
		return "", "", nil, fmt.Errorf("unexpected marker: %q", pattern)
	}
	if len(line) == 0 {
		return "", "", nil, errors.New("missing host pattern")
	}
	wantType, line := sshNextWord(line)
	if len(line) == 0 {
		return "", "", nil, errors.New("missing key type pattern")
	}
	blob, _ := sshNextWord(line)
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

// sshNextWord returns the first space- or tab-separated word of line and
// the rest with surrounding blanks removed.
func sshNextWord(line []byte) (string, []byte) {
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
func (k *sshKnownHosts) lookup(hostname string, remote net.Addr) ([]sshKnownLine, bool) {
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
	a := sshHostAddr{host, port}
	if k.plain {
		return k.index[a], true
	}
	if v, ok := k.memo.Load(a); ok {
		return v.([]sshKnownLine), true
	}
	// The probe key is in no line, so the callback lists every line that
	// matches the host.
	var ke *knownhosts.KeyError
	if err := k.callback(hostname, remote, k.probe); !errors.As(err, &ke) {
		return nil, false
	}
	lines := make([]sshKnownLine, len(ke.Want))
	for i, kk := range ke.Want {
		lines[i] = sshKnownLine{known: kk, blob: string(kk.Key.Marshal())}
	}
	if k.memoLen.Load() < sshKnownHostsMemoMax {
		if _, loaded := k.memo.LoadOrStore(a, lines); !loaded {
			k.memoLen.Add(1)
		}
	}
	return lines, true
}

// check is the host key callback for a connection: the knownhosts
// callback's verdict, given without scanning the file where lookup knows
// the host's lines. A key not listed for the host yields the
// *knownhosts.KeyError the callback would return, listing the same lines.
func (k *sshKnownHosts) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
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

// known returns the keys known_hosts lists for hostport in file order, as
// knownhosts.KeyError.Want would for a key not listed.
func (k *sshKnownHosts) known(hostport string, remote net.Addr) []ssh.PublicKey {
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

// hostKeyAlgorithms orders the client's host key algorithms so that the
// server is asked for a key type known_hosts actually lists for hostport.
// Without this the client takes its default preference (ECDSA before
// Ed25519) and a server holding both keys would fail verification against a
// known_hosts file that only lists its Ed25519 key. Certificate algorithms
// are offered only when the file has @cert-authority lines, since otherwise
// a host certificate can never verify. It returns nil (library defaults)
// when nothing is known about the host.
func (k *sshKnownHosts) hostKeyAlgorithms(hostport string, remote net.Addr) []string {
	if k.probe == nil {
		return nil
	}
	supported := ssh.SupportedAlgorithms().HostKeys
	// Legacy SHA-1 RSA stays acceptable last, as in the library defaults.
	supported = append(supported, ssh.KeyAlgoRSA, ssh.CertAlgoRSAv01)
	var want []string
	for _, key := range k.known(hostport, remote) {
		for _, algo := range sshAlgorithmsForKeyType(key.Type()) {
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

// sshAlgorithmsForKeyType maps a public key type to the host key signature
// algorithms that use it.
func sshAlgorithmsForKeyType(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// hostKey returns the host key callback and algorithm preference for the
// target, from the cached known_hosts file or, only when the config opts out
// explicitly, a callback accepting any key.
func (c *sshAuthCallbacks) hostKey(cfg *config.SSHProbe) (*sshKnownHosts, error) {
	if cfg.InsecureSkipHostKeyVerification {
		return &sshKnownHosts{callback: ssh.InsecureIgnoreHostKey()}, nil
	}
	if cfg.KnownHostsFile == "" {
		return nil, sshConfigErrorf("known_hosts_file is not set and insecure_skip_host_key_verification is false")
	}
	path := cfg.KnownHostsFile
	return c.knownHosts.get(path, []string{path}, []string{"known_hosts_file"}, func() (*sshKnownHosts, error) {
		return sshLoadKnownHosts(path)
	})
}
