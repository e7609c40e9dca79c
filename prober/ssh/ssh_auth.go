package ssh

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/sync/singleflight"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/fileload"
	"github.com/fleet-exporter/fleet_exporter/internal/knownhosts"
)

// errConfig marks errors caused by the probe's own settings (missing or
// unparsable key, password or known_hosts file); they map to probe.ReasonConfig.
// Error texts built on it name the file and the problem but never include
// file contents: no key material, passwords or passphrases.
var errConfig = errors.New("ssh probe configuration")

// configErrorf returns an error wrapping errConfig.
func configErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errConfig, fmt.Sprintf(format, args...))
}

// CheckKeyFilePermissions returns an error describing the problem when
// the private key file at path is accessible by its group or by others, the
// same rule OpenSSH enforces. It returns nil when the mode is safe, and the
// stat error when the file cannot be examined. Callers log the result as a
// warning; the prober itself still uses such a key.
func CheckKeyFilePermissions(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("private key file %s is accessible by group or others (mode %04o); use chmod 600", path, perm)
	}
	return nil
}

// fileStamp identifies one version of a file: a change of content is
// assumed to change its modification time or size.
type fileStamp struct {
	path string
	mod  time.Time
	size int64
}

// stat returns the stamp of path.
func stat(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{path: path, mod: fi.ModTime(), size: fi.Size()}, nil
}

// cacheEntry is one cached value and the file versions it was built from.
type cacheEntry[T any] struct {
	stamps []fileStamp
	val    T
	err    error
	// stale is why the files at stamps could not be loaded while val, from
	// an earlier version, stays in use; err is nil then.
	stale error
}

// cache holds values parsed from files so that key material and
// known_hosts files are read once per file version, not once per probe.
// An entry stays valid while every source file keeps its stamp. When a
// file that loaded before changes into one that does not, the last good
// value stays in use (a half-written or broken file must not fail every
// probe of the fleet) and the failure is reported once per version.
type cache[T any] struct {
	// mu guards entries.
	mu      sync.Mutex
	entries map[string]cacheEntry[T]

	// group collapses concurrent loads of one key. Without it every target
	// sharing a key file misses the cache at once on the first round (and
	// after each change of the file) and decrypts the key itself: with a
	// bcrypt-protected key that is ~100 ms of CPU per target, enough for a
	// --once run over a few hundred hosts to time out every probe.
	group singleflight.Group

	// changed, when set, hears of every reload of a changed version of
	// files that had loaded before: err nil when the new version is in
	// use, else why the last good one stays.
	changed func(paths []string, err error)
}

// get returns the cached value for key if none of paths changed since it was
// loaded, and otherwise calls load and caches its result (errors included,
// so a broken file is not re-parsed on every probe). what names the setting
// in errors about a path that cannot be examined.
func (c *cache[T]) get(key string, paths, what []string, load func() (T, error)) (T, error) {
	var zero T
	stamps := make([]fileStamp, len(paths))
	for i, path := range paths {
		st, err := stat(path)
		if err != nil {
			if e, ok := c.lastGood(key); ok {
				// A file being replaced can be missing for a moment;
				// one that stays missing is reported once.
				c.fail(key, e, nil, paths, configErrorf("%s %q: %v", what[i], path, pathError(err)))
				return e.val, nil
			}
			return zero, configErrorf("%s %q: %v", what[i], path, pathError(err))
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
		e := cacheEntry[T]{stamps: stamps, val: val, err: err}
		// Only cache what is known to match the stamps: a file replaced
		// while it was being read is loaded again next time.
		for i, path := range paths {
			if st, serr := stat(path); serr != nil || st != stamps[i] {
				if prev, ok := c.lastGood(key); ok && err != nil {
					return prev, nil
				}
				return e, nil
			}
		}
		prev, hadGood := c.lastGood(key)
		switch {
		case err != nil && hadGood:
			return c.fail(key, prev, stamps, paths, err), nil
		case err == nil && hadGood && c.changed != nil:
			c.changed(paths, nil)
		}
		c.mu.Lock()
		if c.entries == nil {
			c.entries = make(map[string]cacheEntry[T])
		}
		c.entries[key] = e
		c.mu.Unlock()
		return e, nil
	})
	e := v.(cacheEntry[T])
	return e.val, e.err
}

// lastGood returns the entry of key if its value loaded, whatever the
// files' versions now.
func (c *cache[T]) lastGood(key string) (cacheEntry[T], bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	return e, ok && e.err == nil
}

// fail keeps prev's value for the file versions at stamps (nil: a file is
// missing, nothing to remember) and reports err once per version.
func (c *cache[T]) fail(key string, prev cacheEntry[T], stamps []fileStamp, paths []string, err error) cacheEntry[T] {
	c.mu.Lock()
	cur := c.entries[key]
	first := cur.stale == nil || cur.stale.Error() != err.Error() || (stamps != nil && !slices.Equal(cur.stamps, stamps))
	e := cacheEntry[T]{stamps: cur.stamps, val: prev.val, stale: err}
	if stamps != nil {
		e.stamps = stamps
	}
	c.entries[key] = e
	c.mu.Unlock()
	if first && c.changed != nil {
		c.changed(paths, err)
	}
	return e
}

// lookup returns the entry of key if it was built from files with stamps.
func (c *cache[T]) lookup(key string, stamps []fileStamp) (cacheEntry[T], bool) {
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	return e, ok && slices.Equal(e.stamps, stamps)
}

// pathError reduces an os error to its cause; the caller names the path.
func pathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readConfigFile reads a key, certificate, password or passphrase file the
// setting what names. Every such read goes through here, at start, on
// reload and when the credential cache re-reads a changed file, so a FIFO,
// a device or an oversized file is refused the same way each time instead
// of blocking or exhausting the reader.
func readConfigFile(what, path string) ([]byte, error) {
	b, err := fileload.Read(path, fileload.MaxSecretSize)
	if err != nil {
		return nil, configErrorf("%s %q: %v", what, path, pathError(err))
	}
	return b, nil
}

// readSecretFile reads a password or passphrase file and strips the
// trailing line break an editor leaves behind.
func readSecretFile(what, path string) (string, error) {
	b, err := readConfigFile(what, path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	clear(b)
	return s, nil
}

// loadSigners parses the private key (and optional certificate) of cfg.
// The certificate signer, when present, comes first so that it is offered
// before the plain key.
func loadSigners(cfg *config.SSHProbe) ([]ssh.Signer, error) {
	pem, err := readConfigFile("private_key_file", cfg.PrivateKeyFile)
	if err != nil {
		return nil, err
	}
	defer clear(pem)
	signer, err := ssh.ParsePrivateKey(pem)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		if cfg.PassphraseFile == "" {
			return nil, configErrorf("private_key_file %q is encrypted and no passphrase_file is set", cfg.PrivateKeyFile)
		}
		pass, perr := readSecretFile("passphrase_file", cfg.PassphraseFile)
		if perr != nil {
			return nil, perr
		}
		signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, []byte(pass))
		if err != nil {
			// The library's message says whether the passphrase was wrong or
			// the key damaged; it never echoes the input.
			return nil, configErrorf("private_key_file %q: cannot decrypt with passphrase_file %q: %v",
				cfg.PrivateKeyFile, cfg.PassphraseFile, err)
		}
	case err != nil:
		return nil, configErrorf("private_key_file %q: cannot parse private key: %v", cfg.PrivateKeyFile, err)
	}
	if cfg.CertificateFile == "" {
		return []ssh.Signer{signer}, nil
	}
	b, err := readConfigFile("certificate_file", cfg.CertificateFile)
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, configErrorf("certificate_file %q: cannot parse certificate: %v", cfg.CertificateFile, err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		return nil, configErrorf("certificate_file %q holds a plain public key, not a certificate", cfg.CertificateFile)
	}
	certSigner, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, configErrorf("certificate_file %q does not match private_key_file %q: %v",
			cfg.CertificateFile, cfg.PrivateKeyFile, err)
	}
	return []ssh.Signer{certSigner, signer}, nil
}

// credentials is the credential set of one target: file-based material is cached,
// the agent connection is per connection attempt.
type credentials struct {
	signers     []ssh.Signer
	password    string
	hasPassword bool
	// answers are the keyboard_interactive entries, in config order.
	answers []kiAnswer
	// agentConn is the open agent socket, closed by close once the SSH
	// connection is authenticated (or failed).
	agentConn net.Conn
}

// passwordPrompt is what password_file answers: hidden keyboard-interactive
// questions asking for a password or passcode.
var passwordPrompt = regexp.MustCompile(`(?i)pass(word|code)`)

// errUnanswerable marks a keyboard-interactive question nothing in the
// configuration answers.
var errUnanswerable = errors.New("keyboard-interactive prompt has no configured answer")

// answer answers one keyboard-interactive round. The error quotes the
// question it could not answer; answers never appear in errors or logs.
func (a *credentials) answer(questions []string, echos []bool) ([]string, error) {
	out := make([]string, len(questions))
	for i, q := range questions {
		hidden := i < len(echos) && !echos[i]
		if a.hasPassword && hidden && passwordPrompt.MatchString(q) {
			out[i] = a.password
			continue
		}
		found := false
		for _, ans := range a.answers {
			if ans.prompt.MatchString(q) {
				out[i], found = ans.answer, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: %q", errUnanswerable, sanitize(q, 128))
		}
	}
	return out, nil
}

// kiAnswer is one loaded keyboard_interactive entry.
type kiAnswer struct {
	prompt *regexp.Regexp
	answer string
}

// close releases the agent connection, if any.
func (a *credentials) close() {
	if a.agentConn != nil {
		_ = a.agentConn.Close()
	}
}

// authCallbacks holds the file caches used to build credentials.
type authCallbacks struct {
	keys       cache[[]ssh.Signer]
	passwords  cache[string]
	knownHosts cache[*knownhosts.DB]
	// tofus holds the trust-on-first-use files by path, tofuErr the last
	// reread error of each that has one; both guarded by tofuMu.
	tofuMu  sync.Mutex
	tofus   map[string]*knownhosts.TOFU
	tofuErr map[string]string
	// logger and changed are set once by NewProber; changed hears of every
	// reread of a changed file (see cache.changed).
	logger  *slog.Logger
	changed func(paths []string, err error)
	// patterns holds the compiled regular expressions of the config:
	// ignore_lines, shell prompt and pager, keyboard_interactive prompts.
	patterns regexps
}

// auth loads the credentials of cfg. File errors wrap errConfig. When
// cfg.Agent is set the agent at SSH_AUTH_SOCK is dialled under ctx and its
// keys are appended after the file key; the caller must call close.
func (c *authCallbacks) auth(ctx context.Context, cfg *config.SSHProbe) (*credentials, error) {
	a := &credentials{}
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
			return loadSigners(cfg)
		})
		if err != nil {
			return nil, err
		}
		a.signers = append(a.signers, signers...)
	} else if cfg.CertificateFile != "" {
		return nil, configErrorf("certificate_file %q is set without private_key_file", cfg.CertificateFile)
	}
	if cfg.PasswordFile != "" {
		pw, err := c.passwords.get(cfg.PasswordFile, []string{cfg.PasswordFile}, []string{"password_file"}, func() (string, error) {
			return readSecretFile("password_file", cfg.PasswordFile)
		})
		if err != nil {
			return nil, err
		}
		a.password, a.hasPassword = pw, true
	}
	for _, ki := range cfg.KeyboardInteractive {
		re, err := c.patterns.get(ki.Prompt)
		if err != nil {
			return nil, err
		}
		path := ki.AnswerFile
		ans, err := c.passwords.get(path, []string{path}, []string{"answer_file"}, func() (string, error) {
			return readSecretFile("keyboard_interactive answer_file", path)
		})
		if err != nil {
			return nil, err
		}
		a.answers = append(a.answers, kiAnswer{prompt: re, answer: ans})
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
func (a *credentials) dialAgent(ctx context.Context) error {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return configErrorf("agent is enabled but SSH_AUTH_SOCK is not set")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return configErrorf("agent: cannot connect to SSH_AUTH_SOCK: %v", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		_ = conn.Close()
		return configErrorf("agent: cannot list keys: %v", err)
	}
	a.agentConn = conn
	a.signers = append(a.signers, signers...)
	return nil
}

// methods returns the auth methods for an ssh.ClientConfig. Every method is
// a callback that calls mark first, so the first invocation records when
// authentication began.
func (a *credentials) methods(mark func()) []ssh.AuthMethod {
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
	}
	if a.hasPassword || len(a.answers) > 0 {
		// Servers that disable "password" but allow keyboard-interactive
		// ask their questions here, in as many rounds as they like.
		m = append(m, ssh.KeyboardInteractive(func(_, _ string, questions []string, echos []bool) ([]string, error) {
			mark()
			return a.answer(questions, echos)
		}))
	}
	return m
}

// verifier checks host keys and orders the host key algorithms to ask for.
type verifier interface {
	Check(hostname string, remote net.Addr, key ssh.PublicKey) error
	HostKeyAlgorithms(hostport string, remote net.Addr) []string
}

// hostKey returns the host key verifier for the target: the cached
// known_hosts file, the trust-on-first-use file of host_key_policy tofu,
// or, only when the config opts out explicitly, one accepting any key.
func (c *authCallbacks) hostKey(cfg *config.SSHProbe) (verifier, error) {
	if cfg.InsecureSkipHostKeyVerification {
		return knownhosts.Insecure(), nil
	}
	if cfg.KnownHostsFile == "" {
		return nil, configErrorf("known_hosts_file is not set and insecure_skip_host_key_verification is false")
	}
	path := cfg.KnownHostsFile
	if cfg.HostKeyPolicy == config.HostKeyPolicyTOFU {
		return c.tofu(path)
	}
	return c.knownHosts.get(path, []string{path}, []string{"known_hosts_file"}, func() (*knownhosts.DB, error) {
		db, err := knownhosts.Load(path)
		if err != nil {
			return nil, configErrorf("%v", err)
		}
		return db, nil
	})
}

// tofu returns the one trust-on-first-use file of path, opening it on
// first use and rereading it when someone else changed it. There is one
// per path for the prober's life, so that concurrent first contacts of a
// host append it once.
func (c *authCallbacks) tofu(path string) (verifier, error) {
	c.tofuMu.Lock()
	t := c.tofus[path]
	if t == nil {
		var err error
		if t, err = knownhosts.OpenTOFU(path); err != nil {
			c.tofuMu.Unlock()
			return nil, configErrorf("%v", err)
		}
		if c.tofus == nil {
			c.tofus = map[string]*knownhosts.TOFU{}
		}
		c.tofus[path] = t
		c.tofuMu.Unlock()
		return &tofuVerifier{TOFU: t, logger: c.logger}, nil
	}
	c.tofuMu.Unlock()
	changed, err := t.Refresh()
	switch {
	case err != nil:
		c.tofuFailed(path, err)
	case changed:
		c.tofuFailed(path, nil)
	}
	return &tofuVerifier{TOFU: t, logger: c.logger}, nil
}

// tofuFailed reports a reread of a trust-on-first-use file: err nil when
// the new version is in use, else (once per error) why the keys held stay.
func (c *authCallbacks) tofuFailed(path string, err error) {
	c.tofuMu.Lock()
	prev, had := c.tofuErr[path]
	if err == nil {
		delete(c.tofuErr, path)
	} else {
		if c.tofuErr == nil {
			c.tofuErr = map[string]string{}
		}
		c.tofuErr[path] = err.Error()
	}
	c.tofuMu.Unlock()
	if (err == nil || !had || prev != err.Error()) && c.changed != nil {
		c.changed([]string{path}, err)
	}
}

// tofuVerifier logs what a TOFU file learns.
type tofuVerifier struct {
	*knownhosts.TOFU
	logger *slog.Logger
}

// Check implements verifier.
func (v *tofuVerifier) Check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	learned, err := v.TOFU.Check(hostname, remote, key)
	if learned && v.logger != nil {
		v.logger.Info("Learnt host key (host_key_policy tofu)", "host", hostname, "type", key.Type(),
			"fingerprint", ssh.FingerprintSHA256(key), "file", v.Path())
	}
	return err
}
