package sshdtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDPath is the absolute path of the OpenSSH server the harness starts
// unless Options.SSHD names another.
const SSHDPath = "/usr/sbin/sshd"

// PasswordUserName is the local account PasswordUser creates for password
// authentication tests.
const PasswordUserName = "fleetprobe"

// Key types understood by GenerateKey and Options.HostKeyTypes; they are
// ssh-keygen's -t values.
const (
	KeyEd25519 = "ed25519"
	KeyECDSA   = "ecdsa"
	KeyRSA     = "rsa"
)

// Timeouts of Launch: how long sshd may take to serve its own host key, how
// long one readiness handshake may take, and how long Close waits after
// SIGTERM before it kills sshd.
const (
	startTimeout     = 15 * time.Second
	handshakeTimeout = 2 * time.Second
	stopTimeout      = 5 * time.Second
)

// portAttempts is how many free ports Launch tries when it picks the port.
const portAttempts = 5

// Options configures the sshd started by Start or Launch. The zero value
// starts a server on 127.0.0.1 and a free port with ed25519, ecdsa and rsa
// host keys that accepts public-key logins of the current user only.
type Options struct {
	// Addr is the loopback IP address sshd listens on; empty means
	// 127.0.0.1. Any address in 127.0.0.0/8 works on Linux without setup.
	Addr string
	// Port is the port sshd listens on; 0 picks a free one, and another one
	// when the port is taken before sshd binds it. A port given here is used
	// as it is: if it is taken, Launch fails.
	Port int
	// SSHD is the sshd binary; empty means SSHDPath.
	SSHD string
	// Dir is the existing directory Launch writes its files to; Start uses a
	// new t.TempDir() instead. The caller removes it.
	Dir string
	// User is the account public-key logins are for; empty means the
	// account running the harness. sshd reads authorized_keys as that
	// account, so for another one Dir and authorized_keys are made readable
	// by everyone (they hold public keys only).
	User string
	// HostKeyTypes lists the host key types to generate, in the order they
	// appear in sshd_config; nil means ed25519, ecdsa, rsa.
	HostKeyTypes []string
	// PasswordAuthentication enables password logins.
	PasswordAuthentication bool
	// KbdInteractiveAuthentication enables keyboard-interactive. Without
	// PAM (the harness runs UsePAM no) sshd has no device to ask with, so
	// it refuses the method at once: what such a server does in the field.
	KbdInteractiveAuthentication bool
	// PermitRootPassword sets PermitRootLogin yes instead of
	// prohibit-password, so root may log in with a password.
	PermitRootPassword bool
	// UserCA creates a user certificate authority and trusts it through
	// TrustedUserCAKeys; sign client keys with Server.SignUserKey.
	UserCA bool
	// HostCertificate creates a host certificate authority, signs every host
	// key with it for the listen address and serves the certificates
	// (HostCertificate lines).
	HostCertificate bool
	// LogLevel is sshd's LogLevel; empty means VERBOSE, which logs every
	// connection and authentication (tests read them with WaitLog). A
	// benchmark sets ERROR so that logging does not count as sshd's work.
	LogLevel string
	// MaxStartups is sshd's MaxStartups; empty means 100:30:200.
	MaxStartups string
	// MaxSessions is sshd's MaxSessions; 0 means 50.
	MaxSessions int
	// AllowTCPForwarding lets clients open direct-tcpip channels, so the
	// server can act as a jump host (bastion).
	AllowTCPForwarding bool
	// ExtraConfig lines are appended to sshd_config verbatim. sshd keeps
	// the first value it reads for most keywords, so these cannot override
	// the lines the fields above produce; they suit Match blocks and
	// keywords the harness does not write.
	ExtraConfig []string
}

// Key is a key pair written by ssh-keygen.
type Key struct {
	// Type is the ssh-keygen -t value, e.g. KeyEd25519.
	Type string
	// Private and Public are the paths of the private key and of its
	// ".pub" file.
	Private, Public string
	// Passphrase is the passphrase the private key is encrypted with; empty
	// when it is not encrypted.
	Passphrase string
}

// AuthorizedKey returns the public key line ("type base64 comment") of k.
func (k Key) AuthorizedKey(tb testing.TB) string {
	tb.Helper()
	line, err := k.authorizedLine()
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return line
}

// authorizedLine reads k's public key line.
func (k Key) authorizedLine() (string, error) {
	b, err := os.ReadFile(k.Public)
	if err != nil {
		return "", fmt.Errorf("read public key: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Server is a running sshd. Its fields describe the files it uses; they must
// not be changed.
type Server struct {
	// Addr is the listen IP address and Port the listen port.
	Addr string
	Port int
	// User is the account public-key logins are for (Options.User, or the
	// account running the harness, root when the tests run as root); with
	// public keys written by Authorize it can log in.
	User string
	// Dir is the server's directory.
	Dir string
	// ConfigFile, LogFile, AuthorizedKeysFile and PidFile are paths in Dir.
	ConfigFile, LogFile, AuthorizedKeysFile, PidFile string
	// HostKeys are the server's host keys, in Options.HostKeyTypes order.
	HostKeys []Key
	// HostCerts are the certificate files of HostKeys (same order) when
	// Options.HostCertificate is set.
	HostCerts []string
	// HostCA is the host certificate authority, set with
	// Options.HostCertificate.
	HostCA *Key
	// UserCA is the user certificate authority, set with Options.UserCA.
	UserCA *Key

	sshd        string
	hostPubs    [][]byte // wire form of HostKeys, to recognise this sshd
	cmd         *exec.Cmd
	done        chan struct{} // closed once cmd.Wait returned
	listenInode uint64        // inode of sshd's listening socket
	closeOnce   sync.Once
	closeErr    error
}

// KnownHostsForm selects how Server.KnownHosts writes its entries.
type KnownHostsForm int

// The known_hosts forms.
const (
	// KnownHostsPlain writes "[addr]:port key" lines.
	KnownHostsPlain KnownHostsForm = iota
	// KnownHostsHashed writes plain lines and hashes them with ssh-keygen -H.
	KnownHostsHashed
	// KnownHostsCertAuthority writes "@cert-authority [addr]:port cakey"
	// lines; with no keys given it lists the server's host CA.
	KnownHostsCertAuthority
)

// Available reports why the OpenSSH tools cannot be used, or "" when sshd and
// ssh-keygen are both present.
func Available() string {
	if _, err := os.Stat(SSHDPath); err != nil {
		return SSHDPath + " not found: install the Debian package openssh-server"
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		return "ssh-keygen not found: install the Debian package openssh-client"
	}
	return ""
}

// RequireOpenSSH skips the test when sshd or ssh-keygen is missing, naming
// the Debian package to install.
func RequireOpenSSH(tb testing.TB) {
	tb.Helper()
	if why := Available(); why != "" {
		tb.Skip("sshdtest: " + why)
	}
}

// run runs a command and returns an error with its output when it fails.
func run(ctx context.Context, stdin string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// NewKey writes a new key pair of keyType ("ed25519", "ecdsa", "rsa") to
// dir/name and dir/name.pub with ssh-keygen. A non-empty passphrase encrypts
// the private key; it uses 4 bcrypt KDF rounds instead of OpenSSH's 16, the
// same format but decrypted four times faster (seconds under the race
// detector).
func NewKey(ctx context.Context, dir, name, keyType, passphrase string) (Key, error) {
	path := filepath.Join(dir, name)
	args := []string{"-q", "-t", keyType, "-N", passphrase, "-C", "sshdtest-" + name, "-f", path}
	if passphrase != "" {
		args = append(args, "-a", "4")
	}
	if err := run(ctx, "", "ssh-keygen", args...); err != nil {
		return Key{}, err
	}
	return Key{Type: keyType, Private: path, Public: path + ".pub", Passphrase: passphrase}, nil
}

// GenerateKey is NewKey for tests: it skips the test when ssh-keygen is
// missing and fails it when ssh-keygen fails.
func GenerateKey(tb testing.TB, dir, name, keyType, passphrase string) Key {
	tb.Helper()
	RequireOpenSSH(tb)
	k, err := NewKey(context.Background(), dir, name, keyType, passphrase)
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return k
}

// Start starts sshd as configured by opts in a new t.TempDir() and stops it
// when the test ends. It skips the test when sshd or ssh-keygen is missing.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	RequireOpenSSH(tb)
	opts.Dir = tb.TempDir()
	s, err := Launch(context.Background(), opts)
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("sshdtest: %v", err)
		}
	})
	return s
}

// Launch starts sshd as configured by opts and returns once that sshd, not
// merely something, answers on its port. The caller must call Close. ctx
// bounds the start only, not the server's life.
func Launch(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("Options.Dir is empty")
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1"
	}
	if ip := net.ParseIP(opts.Addr); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("option Addr %q is not a loopback IP address", opts.Addr)
	}
	if opts.SSHD == "" {
		opts.SSHD = SSHDPath
	}
	if opts.HostKeyTypes == nil {
		opts.HostKeyTypes = []string{KeyEd25519, KeyECDSA, KeyRSA}
	}
	if os.Geteuid() == 0 {
		// sshd refuses to start as root without its privilege separation
		// directory; Debian creates it only from the service unit.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, fmt.Errorf("create /run/sshd: %w", err)
		}
	}
	s := &Server{
		Addr:               opts.Addr,
		User:               opts.User,
		Dir:                opts.Dir,
		ConfigFile:         filepath.Join(opts.Dir, "sshd_config"),
		LogFile:            filepath.Join(opts.Dir, "sshd.log"),
		AuthorizedKeysFile: filepath.Join(opts.Dir, "authorized_keys"),
		PidFile:            filepath.Join(opts.Dir, "sshd.pid"),
		sshd:               opts.SSHD,
	}
	if err := s.prepare(ctx, opts); err != nil {
		return nil, err
	}

	if opts.Port != 0 {
		s.Port = opts.Port
		if err := s.writeConfig(opts); err != nil {
			return nil, err
		}
		if err := s.start(ctx); err != nil {
			return nil, fmt.Errorf("%w\nlog:\n%s", err, s.readLog())
		}
		return s, nil
	}
	// The port is free when chosen but sshd binds it only later; anything
	// that takes it in between (a listener of a parallel test process, or
	// the source port of an outgoing connection) makes sshd exit, and the
	// next port is tried.
	var lastErr error
	for range portAttempts {
		port, err := freePort(s.Addr)
		if err != nil {
			return nil, err
		}
		s.Port = port
		if err := s.writeConfig(opts); err != nil {
			return nil, err
		}
		if lastErr = s.start(ctx); lastErr == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("sshd did not start: %w\nlog:\n%s", lastErr, s.readLog())
}

// prepare writes authorized_keys and the host and CA keys.
func (s *Server) prepare(ctx context.Context, opts Options) error {
	akMode := os.FileMode(0o600)
	if s.User == "" {
		u, err := user.Current()
		if err != nil {
			return fmt.Errorf("current user: %w", err)
		}
		s.User = u.Username
	} else if u, err := user.Current(); err != nil || u.Username != s.User {
		if err := os.Chmod(s.Dir, 0o755); err != nil {
			return err
		}
		akMode = 0o644
	}
	if err := os.WriteFile(s.AuthorizedKeysFile, nil, akMode); err != nil {
		return err
	}
	// WriteFile keeps the mode of an existing file; the umask may also
	// have cut it.
	if err := os.Chmod(s.AuthorizedKeysFile, akMode); err != nil {
		return err
	}
	for _, typ := range opts.HostKeyTypes {
		k, err := NewKey(ctx, s.Dir, "ssh_host_"+typ+"_key", typ, "")
		if err != nil {
			return err
		}
		s.HostKeys = append(s.HostKeys, k)
		pub, err := parsePublicKey(k)
		if err != nil {
			return err
		}
		s.hostPubs = append(s.hostPubs, pub.Marshal())
	}
	if opts.HostCertificate {
		ca, err := NewKey(ctx, s.Dir, "host_ca", KeyEd25519, "")
		if err != nil {
			return err
		}
		s.HostCA = &ca
		for _, k := range s.HostKeys {
			if err := run(ctx, "", "ssh-keygen", "-q", "-s", ca.Private, "-h", "-I", "sshdtest-host", "-n", s.Addr, k.Public); err != nil {
				return err
			}
			s.HostCerts = append(s.HostCerts, strings.TrimSuffix(k.Public, ".pub")+"-cert.pub")
		}
	}
	if opts.UserCA {
		ca, err := NewKey(ctx, s.Dir, "user_ca", KeyEd25519, "")
		if err != nil {
			return err
		}
		s.UserCA = &ca
	}
	return nil
}

// parsePublicKey reads the public half of k.
func parsePublicKey(k Key) (ssh.PublicKey, error) {
	b, err := os.ReadFile(k.Public)
	if err != nil {
		return nil, err
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", k.Public, err)
	}
	return pub, nil
}

// freePort returns a port on addr that was free a moment ago.
func freePort(addr string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

// writeConfig writes sshd_config for the current port.
func (s *Server) writeConfig(opts Options) error {
	return os.WriteFile(s.ConfigFile, []byte(s.config(opts)), 0o600)
}

// config returns the sshd_config text for opts.
func (s *Server) config(opts Options) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	orDefault := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	line("# written by sshdtest")
	line("ListenAddress %s", s.Addr)
	line("Port %d", s.Port)
	for _, k := range s.HostKeys {
		line("HostKey %s", k.Private)
	}
	for _, c := range s.HostCerts {
		line("HostCertificate %s", c)
	}
	line("PidFile %s", s.PidFile)
	line("AuthorizedKeysFile %s", s.AuthorizedKeysFile)
	if s.UserCA != nil {
		line("TrustedUserCAKeys %s", s.UserCA.Public)
	}
	line("StrictModes no")
	line("UsePAM no")
	line("PubkeyAuthentication yes")
	line("PasswordAuthentication %s", yesNo(opts.PasswordAuthentication))
	line("KbdInteractiveAuthentication %s", yesNo(opts.KbdInteractiveAuthentication))
	line("HostbasedAuthentication no")
	if opts.PermitRootPassword {
		line("PermitRootLogin yes")
	} else {
		line("PermitRootLogin prohibit-password")
	}
	line("PermitEmptyPasswords no")
	line("LogLevel %s", orDefault(opts.LogLevel, "VERBOSE"))
	line("MaxStartups %s", orDefault(opts.MaxStartups, "100:30:200"))
	if opts.MaxSessions > 0 {
		line("MaxSessions %d", opts.MaxSessions)
	} else {
		line("MaxSessions 50")
	}
	line("MaxAuthTries 10")
	line("LoginGraceTime 30")
	line("UseDNS no")
	line("PrintMotd no")
	line("PrintLastLog no")
	line("X11Forwarding no")
	line("AllowTcpForwarding %s", yesNo(opts.AllowTCPForwarding))
	line("AllowAgentForwarding no")
	for _, l := range opts.ExtraConfig {
		line("%s", l)
	}
	return b.String()
}

// yesNo renders a bool as sshd_config wants it.
func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

// start launches sshd with the written config and waits until it serves its
// own host key on the port. On error sshd has been stopped.
//
// A successful TCP connect alone would not do: the port may belong to
// another process that took it after freePort released it, sshd then fails
// to bind and exits, and the harness would hand out a server that is not
// its own, whose cleanup leaves the port answering.
func (s *Server) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// -D: stay in the foreground, so the PID we hold is the listener;
	// -e: log to stderr (our file) instead of syslog.
	cmd := exec.Command(s.sshd, "-D", "-e", "-f", s.ConfigFile)
	// A test binary killed by -timeout must not leave sshd behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = logf
	cmd.Stderr = logf
	err = cmd.Start()
	// The child has its own copy of the descriptor.
	_ = logf.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", s.sshd, err)
	}
	done := make(chan struct{})
	waitErr := make(chan error, 1)
	go func() {
		waitErr <- cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for {
		// Exit first: once sshd is gone, whatever answers is not it.
		select {
		case <-done:
			return fmt.Errorf("sshd exited before serving on %s: %w", s.HostPort(), <-waitErr)
		default:
		}
		ours, err := s.answers(ctx, s.HostPort())
		if ours {
			if s.listenInode, err = listeningInode(cmd.Process.Pid); err != nil {
				s.kill()
				return err
			}
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.kill()
			return fmt.Errorf("sshd did not serve its host key on %s within %v: %w", s.HostPort(), startTimeout, errors.Join(lastErr, ctx.Err()))
		}
		select {
		case <-done:
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
			// sshd gives no readiness signal in -D mode; poll the port.
		}
	}
}

// errHostKeySeen ends a readiness handshake once the host key is known.
var errHostKeySeen = errors.New("host key seen")

// answers reports whether the SSH server at hostport presents one of this
// server's host keys (or a certificate of one). It stops the handshake right
// after the key exchange, before authentication. The error tells why nothing
// or something else answered.
func (s *Server) answers(ctx context.Context, hostport string) (bool, error) {
	d := net.Dialer{Timeout: handshakeTimeout}
	nc, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return false, err
	}
	defer func() { _ = nc.Close() }()
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	ours := false
	// Every algorithm the library has, so that an sshd configured for
	// legacy algorithms only is recognised too.
	sup, ins := ssh.SupportedAlgorithms(), ssh.InsecureAlgorithms()
	cfg := &ssh.ClientConfig{
		Config: ssh.Config{
			KeyExchanges: append(sup.KeyExchanges, ins.KeyExchanges...),
			Ciphers:      append(sup.Ciphers, ins.Ciphers...),
			MACs:         append(sup.MACs, ins.MACs...),
		},
		HostKeyAlgorithms: append(sup.HostKeys, ins.HostKeys...),
		User:              "sshdtest",
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if cert, ok := key.(*ssh.Certificate); ok {
				key = cert.Key
			}
			for _, p := range s.hostPubs {
				if bytes.Equal(p, key.Marshal()) {
					ours = true
				}
			}
			return errHostKeySeen
		},
	}
	c, _, _, err := ssh.NewClientConn(nc, hostport, cfg)
	if err == nil {
		_ = c.Close()
	}
	if !ours && errors.Is(err, errHostKeySeen) {
		err = fmt.Errorf("%s presents a host key that is not this sshd's", hostport)
	}
	return ours, err
}

// kill ends sshd at once and waits for it.
func (s *Server) kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Close terminates exactly the sshd process Launch started, waits for it,
// and then waits until its listening socket is closed; later calls return
// the first call's result. Per-connection children exit on their own once
// their clients disconnect.
//
// The listener's exit alone does not close the port: a child that sshd
// forked for a connection just before SIGTERM holds a copy of the listening
// socket until it gets to run and close it, and until then the kernel
// completes new connections into that socket's queue. On a busy machine that
// takes milliseconds, so a port checked right after the listener exited
// could still accept.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(stopTimeout):
			s.kill()
		}
		s.closeErr = waitSocketClosed(s.listenInode, stopTimeout)
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("sshd (pid %d) on %s exited: %w", s.cmd.Process.Pid, s.HostPort(), s.closeErr)
		}
	})
	return s.closeErr
}

// PID returns the process ID of the listening sshd.
func (s *Server) PID() int {
	return s.cmd.Process.Pid
}

// HostPort returns "addr:port" for dialling the server.
func (s *Server) HostPort() string {
	return net.JoinHostPort(s.Addr, strconv.Itoa(s.Port))
}

// KnownHostsPattern returns the host pattern known_hosts uses for the server:
// "[addr]:port".
func (s *Server) KnownHostsPattern() string {
	return "[" + s.Addr + "]:" + strconv.Itoa(s.Port)
}

// readLog returns sshd's output so far, or why it cannot be read.
func (s *Server) readLog() string {
	b, err := os.ReadFile(s.LogFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "(" + err.Error() + ")"
	}
	return string(b)
}

// Log returns sshd's output so far.
func (s *Server) Log(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(s.LogFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		tb.Fatalf("sshdtest: read log: %v", err)
	}
	return string(b)
}

// LogLines returns sshd's output so far, split into lines.
func (s *Server) LogLines(tb testing.TB) []string {
	tb.Helper()
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s.Log(tb)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// PublicKeyLogins counts the public-key logins sshd logged so far (its
// "Accepted publickey" lines).
func (s *Server) PublicKeyLogins(tb testing.TB) int {
	tb.Helper()
	n := 0
	for _, l := range s.LogLines(tb) {
		if strings.Contains(l, "Accepted publickey") {
			n++
		}
	}
	return n
}

// WaitLog waits until a line of sshd's output satisfies match and returns
// that line. It fails the test with the log after timeout. sshd writes its
// log from separate processes and gives no other signal, so this polls.
func (s *Server) WaitLog(tb testing.TB, timeout time.Duration, match func(line string) bool) string {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range s.LogLines(tb) {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sshdtest: no matching sshd log line within %v; log:\n%s", timeout, s.Log(tb))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ClientKey generates a client key pair of keyType in the server's
// directory, encrypted with passphrase when it is not empty. The key is not
// authorized; see Authorize.
func (s *Server) ClientKey(tb testing.TB, name, keyType, passphrase string) Key {
	tb.Helper()
	return GenerateKey(tb, s.Dir, name, keyType, passphrase)
}

// Authorize appends k's public key to the server's authorized_keys file.
func (s *Server) Authorize(tb testing.TB, k Key) {
	tb.Helper()
	if err := s.AddAuthorizedKey(k); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
}

// AddAuthorizedKey is Authorize for programs: it appends k's public key to
// the server's authorized_keys file.
func (s *Server) AddAuthorizedKey(k Key) error {
	line, err := k.authorizedLine()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(s.AuthorizedKeysFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// SignUserKey signs k's public key with the server's user CA for the given
// principals (the login user when none are given) and returns the path of
// the certificate ssh-keygen wrote ("<key>-cert.pub"). The server must have
// been started with Options.UserCA.
func (s *Server) SignUserKey(tb testing.TB, k Key, principals ...string) string {
	tb.Helper()
	if s.UserCA == nil {
		tb.Fatalf("sshdtest: SignUserKey needs Options.UserCA")
	}
	if len(principals) == 0 {
		principals = []string{s.User}
	}
	if err := run(context.Background(), "", "ssh-keygen", "-q", "-s", s.UserCA.Private, "-I", "sshdtest-user",
		"-n", strings.Join(principals, ","), k.Public); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return strings.TrimSuffix(k.Public, ".pub") + "-cert.pub"
}

// KnownHosts writes a known_hosts file named name into the server's
// directory and returns its path. Its lines are for the server's
// "[addr]:port" and list the public keys of keys, or, when keys is empty,
// the server's own host keys (KnownHostsPlain, KnownHostsHashed) or its
// host CA (KnownHostsCertAuthority).
func (s *Server) KnownHosts(tb testing.TB, name string, form KnownHostsForm, keys ...Key) string {
	tb.Helper()
	path := filepath.Join(s.Dir, name)
	if err := s.WriteKnownHosts(path, form, []string{s.KnownHostsPattern()}, keys...); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return path
}

// WriteKnownHosts is KnownHosts for programs and for servers reached under
// other names (e.g. several addresses translated to this one): it writes
// path with one line per host pattern and key. With no keys it lists the
// server's host keys, or its host CA for KnownHostsCertAuthority.
func (s *Server) WriteKnownHosts(path string, form KnownHostsForm, patterns []string, keys ...Key) error {
	if len(keys) == 0 {
		switch {
		case form != KnownHostsCertAuthority:
			keys = s.HostKeys
		case s.HostCA != nil:
			keys = []Key{*s.HostCA}
		default:
			return errors.New("KnownHostsCertAuthority needs Options.HostCertificate or explicit keys")
		}
	}
	prefix := ""
	if form == KnownHostsCertAuthority {
		prefix = "@cert-authority "
	}
	var b strings.Builder
	for _, p := range patterns {
		for _, k := range keys {
			line, err := k.authorizedLine()
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s%s %s\n", prefix, p, line)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if form == KnownHostsHashed {
		if err := run(context.Background(), "", "ssh-keygen", "-q", "-H", "-f", path); err != nil {
			return err
		}
		_ = os.Remove(path + ".old")
	}
	return nil
}

// WriteSecret writes a password or passphrase file (mode 0600, with a
// trailing newline as an editor would leave) into the server's directory and
// returns its path.
func (s *Server) WriteSecret(tb testing.TB, name, secret string) string {
	tb.Helper()
	path := filepath.Join(s.Dir, name)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return path
}

// EnsureUser creates the local account name when it does not exist: no home
// directory, /bin/sh as its shell (no shell start-up files run per session)
// and "*" as its password field, which allows no password yet, unlike a
// locked "!", is not refused by sshd without PAM for key logins. The account
// is left in place. It needs root.
func EnsureUser(ctx context.Context, name, comment string) error {
	if _, err := user.Lookup(name); err == nil {
		return nil
	}
	return run(ctx, "", "useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", "-p", "*", "-c", comment, name)
}

// PasswordUser makes sure the local account PasswordUserName exists with a
// known password and returns its name and password. It needs root and skips
// the test otherwise. See the package comment for the side effects.
func PasswordUser(tb testing.TB) (name, password string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("sshdtest: password tests create the local user " + PasswordUserName + " and need root")
	}
	for _, tool := range []string{"useradd", "chpasswd"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("sshdtest: %s not found: install the Debian package passwd", tool)
		}
	}
	// Serialise with other test processes doing the same.
	lockPath := filepath.Join(os.TempDir(), "sshdtest-"+PasswordUserName+".lock")
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	defer func() { _ = lock.Close() }()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		tb.Fatalf("sshdtest: lock %s: %v", lockPath, err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()

	ctx := context.Background()
	if err := EnsureUser(ctx, PasswordUserName, "fleet_exporter test user"); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	pwPath := filepath.Join(os.TempDir(), "sshdtest-"+PasswordUserName+".password")
	if b, err := os.ReadFile(pwPath); err == nil && len(b) > 0 {
		password = strings.TrimSpace(string(b))
	} else {
		buf := make([]byte, 16)
		_, _ = rand.Read(buf)
		password = hex.EncodeToString(buf)
		if err := os.WriteFile(pwPath, []byte(password+"\n"), 0o600); err != nil {
			tb.Fatalf("sshdtest: %v", err)
		}
	}
	// Set it every time: the account may have been recreated, or its
	// password changed, since the file was written.
	if err := run(ctx, PasswordUserName+":"+password+"\n", "chpasswd"); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	return PasswordUserName, password
}

// Crash kills sshd and every process it forked for a connection, as a host
// that dies does: established connections drop at once, unlike Close,
// which leaves them to finish. It waits until the port is closed. Restart
// starts it again.
func (s *Server) Crash(tb testing.TB) {
	tb.Helper()
	// Children first: a per-connection sshd whose parent is gone would
	// keep its client connected.
	for _, pid := range descendants(s.cmd.Process.Pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	s.kill()
	if err := waitSocketClosed(s.listenInode, stopTimeout); err != nil {
		tb.Fatalf("sshdtest: crash of sshd on %s: %v", s.HostPort(), err)
	}
}

// Restart starts sshd again after Crash, on the same port with the same
// configuration and keys, and returns once it answers.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var err error
	// The port of the killed sshd can stay busy for a moment.
	for range 20 {
		if err = s.start(ctx); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("sshdtest: restart sshd on %s: %v\nlog:\n%s", s.HostPort(), err, s.readLog())
}

// descendants returns the processes below pid, deepest last, from the
// parent fields of /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name in parentheses may hold spaces; the parent PID
		// is the second field after it.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}
