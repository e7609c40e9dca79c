// Package sshdtest runs a real OpenSSH server for integration tests: the
// Debian sshd binary on a loopback address and a free high port, with its own
// temporary directory holding generated host keys, an sshd_config written
// here, authorized_keys, optional user and host certificate authorities, and
// the server's log. It also generates client keys, signs user and host
// certificates with ssh-keygen and writes known_hosts files in plain, hashed
// and @cert-authority form.
//
// It is a test helper library: only _test.go files import it.
//
// Side effects outside the temporary directory: when running as root, Start
// creates /run/sshd (sshd's privilege separation directory) if missing, and
// PasswordUser creates the local account "fleetprobe" (useradd -M -s /bin/sh,
// no home directory) if it does not exist and sets a random password on it
// with chpasswd. That password is kept in a root-only file under
// os.TempDir() so that concurrent test processes agree on it; the account is
// left in place after the tests. Without root, PasswordUser skips the test.
package sshdtest

import (
	"bufio"
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
	"syscall"
	"testing"
	"time"
)

// SSHDPath is the absolute path of the OpenSSH server the harness starts.
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

// startTimeout bounds how long Start waits for sshd to accept connections.
const startTimeout = 15 * time.Second

// Options configures the sshd started by Start. The zero value starts a
// server on 127.0.0.1 with ed25519, ecdsa and rsa host keys that accepts
// public-key logins only.
type Options struct {
	// Addr is the loopback IP address sshd listens on; empty means
	// 127.0.0.1. Any address in 127.0.0.0/8 works on Linux without setup.
	Addr string
	// HostKeyTypes lists the host key types to generate, in the order they
	// appear in sshd_config; nil means ed25519, ecdsa, rsa.
	HostKeyTypes []string
	// PasswordAuthentication enables password logins.
	PasswordAuthentication bool
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
	// ExtraConfig lines are appended to sshd_config verbatim.
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
	b, err := os.ReadFile(k.Public)
	if err != nil {
		tb.Fatalf("sshdtest: read public key: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// Server is a running sshd. Its fields describe the files it uses; they must
// not be changed.
type Server struct {
	// Addr is the listen IP address and Port the listen port.
	Addr string
	Port int
	// User is the name of the account running the tests; with public keys
	// written by Authorize it can log in (root when the tests run as root).
	User string
	// Dir is the server's temporary directory.
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

	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
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

// run runs a command and fails the test with its output when it fails.
func run(tb testing.TB, stdin string, name string, args ...string) {
	tb.Helper()
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("sshdtest: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// GenerateKey writes a new key pair of keyType ("ed25519", "ecdsa", "rsa") to
// dir/name and dir/name.pub with ssh-keygen. A non-empty passphrase encrypts
// the private key; it uses 4 bcrypt KDF rounds instead of OpenSSH's 16, the
// same format but decrypted four times faster (seconds under the race
// detector).
func GenerateKey(tb testing.TB, dir, name, keyType, passphrase string) Key {
	tb.Helper()
	RequireOpenSSH(tb)
	path := filepath.Join(dir, name)
	args := []string{"-q", "-t", keyType, "-N", passphrase, "-C", "sshdtest-" + name, "-f", path}
	if passphrase != "" {
		args = append(args, "-a", "4")
	}
	run(tb, "", "ssh-keygen", args...)
	return Key{Type: keyType, Private: path, Public: path + ".pub", Passphrase: passphrase}
}

// Start starts sshd as configured by opts and stops it when the test ends.
// It skips the test when sshd or ssh-keygen is missing.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	RequireOpenSSH(tb)
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1"
	}
	if ip := net.ParseIP(opts.Addr); ip == nil || !ip.IsLoopback() {
		tb.Fatalf("sshdtest: Addr %q is not a loopback IP address", opts.Addr)
	}
	if opts.HostKeyTypes == nil {
		opts.HostKeyTypes = []string{KeyEd25519, KeyECDSA, KeyRSA}
	}
	if os.Geteuid() == 0 {
		// sshd refuses to start as root without its privilege separation
		// directory; Debian creates it only from the service unit.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			tb.Fatalf("sshdtest: create /run/sshd: %v", err)
		}
	}
	u, err := user.Current()
	if err != nil {
		tb.Fatalf("sshdtest: current user: %v", err)
	}

	dir := tb.TempDir()
	s := &Server{
		Addr:               opts.Addr,
		User:               u.Username,
		Dir:                dir,
		ConfigFile:         filepath.Join(dir, "sshd_config"),
		LogFile:            filepath.Join(dir, "sshd.log"),
		AuthorizedKeysFile: filepath.Join(dir, "authorized_keys"),
		PidFile:            filepath.Join(dir, "sshd.pid"),
	}
	if err := os.WriteFile(s.AuthorizedKeysFile, nil, 0o600); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	for _, typ := range opts.HostKeyTypes {
		s.HostKeys = append(s.HostKeys, GenerateKey(tb, dir, "ssh_host_"+typ+"_key", typ, ""))
	}
	if opts.HostCertificate {
		ca := GenerateKey(tb, dir, "host_ca", KeyEd25519, "")
		s.HostCA = &ca
		for _, k := range s.HostKeys {
			run(tb, "", "ssh-keygen", "-q", "-s", ca.Private, "-h", "-I", "sshdtest-host", "-n", s.Addr, k.Public)
			s.HostCerts = append(s.HostCerts, strings.TrimSuffix(k.Public, ".pub")+"-cert.pub")
		}
	}
	if opts.UserCA {
		ca := GenerateKey(tb, dir, "user_ca", KeyEd25519, "")
		s.UserCA = &ca
	}

	// A port taken between choosing it and sshd binding it makes sshd exit;
	// try a few ports before giving up.
	var lastErr error
	for range 5 {
		port, err := freePort(s.Addr)
		if err != nil {
			tb.Fatalf("sshdtest: %v", err)
		}
		s.Port = port
		if err := os.WriteFile(s.ConfigFile, []byte(s.config(opts)), 0o600); err != nil {
			tb.Fatalf("sshdtest: %v", err)
		}
		if lastErr = s.start(tb); lastErr == nil {
			return s
		}
	}
	tb.Fatalf("sshdtest: sshd did not start: %v\nlog:\n%s", lastErr, s.Log(tb))
	return nil
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

// config returns the sshd_config text for opts.
func (s *Server) config(opts Options) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
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
	line("KbdInteractiveAuthentication no")
	line("HostbasedAuthentication no")
	if opts.PermitRootPassword {
		line("PermitRootLogin yes")
	} else {
		line("PermitRootLogin prohibit-password")
	}
	line("PermitEmptyPasswords no")
	line("LogLevel VERBOSE")
	line("MaxStartups 100:30:200")
	line("MaxSessions 50")
	line("MaxAuthTries 10")
	line("LoginGraceTime 30")
	line("UseDNS no")
	line("PrintMotd no")
	line("PrintLastLog no")
	line("X11Forwarding no")
	line("AllowTcpForwarding no")
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

// start launches sshd with the written config and waits until its port
// accepts connections. On success it registers the cleanup that stops it.
func (s *Server) start(tb testing.TB) error {
	tb.Helper()
	logf, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	// -D: stay in the foreground, so the PID we hold is the listener;
	// -e: log to stderr (our file) instead of syslog.
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", s.ConfigFile)
	// A test binary killed by -timeout must not leave sshd behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = logf
	cmd.Stderr = logf
	err = cmd.Start()
	// The child has its own copy of the descriptor.
	_ = logf.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", SSHDPath, err)
	}
	done := make(chan struct{})
	waitErr := make(chan error, 1)
	go func() {
		waitErr <- cmd.Wait()
		close(done)
	}()

	hostport := net.JoinHostPort(s.Addr, strconv.Itoa(s.Port))
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", hostport, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-done:
			return fmt.Errorf("sshd exited before accepting connections: %w", <-waitErr)
		case <-time.After(20 * time.Millisecond):
			// sshd gives no readiness signal in -D mode; poll the port.
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("sshd did not accept connections on %s within %v", hostport, startTimeout)
		}
	}
	s.cmd, s.done = cmd, done
	tb.Cleanup(s.stop)
	return nil
}

// stop terminates exactly the sshd process Start launched and waits for it.
// Per-connection children exit on their own once their clients disconnect.
func (s *Server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
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
	s.appendFile(tb, s.AuthorizedKeysFile, k.AuthorizedKey(tb)+"\n")
}

// appendFile appends text to path.
func (s *Server) appendFile(tb testing.TB, path, text string) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	if _, err := f.WriteString(text); err != nil {
		_ = f.Close()
		tb.Fatalf("sshdtest: %v", err)
	}
	if err := f.Close(); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
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
	run(tb, "", "ssh-keygen", "-q", "-s", s.UserCA.Private, "-I", "sshdtest-user",
		"-n", strings.Join(principals, ","), k.Public)
	return strings.TrimSuffix(k.Public, ".pub") + "-cert.pub"
}

// KnownHosts writes a known_hosts file named name into the server's
// directory and returns its path. Its lines are for the server's
// "[addr]:port" and list the public keys of keys, or, when keys is empty,
// the server's own host keys (KnownHostsPlain, KnownHostsHashed) or its
// host CA (KnownHostsCertAuthority).
func (s *Server) KnownHosts(tb testing.TB, name string, form KnownHostsForm, keys ...Key) string {
	tb.Helper()
	if len(keys) == 0 {
		switch {
		case form != KnownHostsCertAuthority:
			keys = s.HostKeys
		case s.HostCA != nil:
			keys = []Key{*s.HostCA}
		default:
			tb.Fatalf("sshdtest: KnownHostsCertAuthority needs Options.HostCertificate or explicit keys")
		}
	}
	prefix := ""
	if form == KnownHostsCertAuthority {
		prefix = "@cert-authority "
	}
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s%s %s\n", prefix, s.KnownHostsPattern(), k.AuthorizedKey(tb))
	}
	path := filepath.Join(s.Dir, name)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatalf("sshdtest: %v", err)
	}
	if form == KnownHostsHashed {
		run(tb, "", "ssh-keygen", "-q", "-H", "-f", path)
		_ = os.Remove(path + ".old")
	}
	return path
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

	if _, err := user.Lookup(PasswordUserName); err != nil {
		run(tb, "", "useradd", "-M", "-s", "/bin/sh", "-c", "fleet_exporter test user", PasswordUserName)
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
	run(tb, PasswordUserName+":"+password+"\n", "chpasswd")
	return PasswordUserName, password
}
