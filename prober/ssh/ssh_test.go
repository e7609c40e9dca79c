package ssh

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// slack is how much longer than its timeout a probe may take in tests
// (generous for the race detector on a loaded machine).
const slack = time.Second

// writeFile writes a 0600 file into dir and returns its path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// knownHostsFor returns a known_hosts line for the test server's address.
func knownHostsFor(port int, pub ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))}, pub) + "\n"
}

// testHash is the probe.Result hash of b, computed independently of the prober.
func testHash(b []byte) uint64 {
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8]) >> 12
}

// newProber returns a prober closed on cleanup.
func newProber(t testing.TB) *Prober {
	t.Helper()
	p := NewProber(dns.New(dns.Options{}), slog.New(slog.DiscardHandler))
	t.Cleanup(p.Close)
	return p
}

// fixture is a running test server with an ed25519 host key, an
// authorized ed25519 user key and a matching known_hosts file.
type fixture struct {
	srv        *sshserver.TestServer
	dir        string
	host       sshkeys.Key
	user       sshkeys.Key
	keyFile    string
	knownHosts string
}

// newFixture starts the fixture; sc adds to the server config.
func newFixture(t testing.TB, sc sshserver.TestOptions) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), host: sshkeys.Generate(t, "ed25519"), user: sshkeys.Generate(t, "ed25519")}
	sc.HostSigners = append(sc.HostSigners, f.host.Signer)
	sc.AuthorizedKeys = append(sc.AuthorizedKeys, f.user.Pub)
	f.srv = testutil.StartSSHServer(t, sc)
	f.keyFile = writeFile(t, f.dir, "id_ed25519", sshkeys.OpenSSH(t, f.user, ""))
	f.knownHosts = writeFile(t, f.dir, "known_hosts", []byte(knownHostsFor(f.srv.Port, f.host.Pub)))
	return f
}

// cfg returns a probe config that logs in with the fixture's key.
func (f *fixture) cfg(cmds ...config.Command) *config.SSHProbe {
	return &config.SSHProbe{
		User:           sshserver.DefaultUser,
		PrivateKeyFile: f.keyFile,
		KnownHostsFile: f.knownHosts,
		Commands:       cmds,
	}
}

// testTarget returns a target of the set "test" for 127.0.0.1:port.
func testTarget(port int, cfg *config.SSHProbe) *config.Target {
	return testutil.SSHTarget("test", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), testutil.WithSSH(cfg))
}

// checkReason fails the test when res does not have the wanted outcome.
func checkReason(t testing.TB, res probe.Result, want probe.Reason) {
	t.Helper()
	if res.Reason != want || res.Success != (want == probe.ReasonNone) {
		t.Fatalf("got success=%v reason=%q err=%v, want reason %q", res.Success, res.Reason, res.Err, want)
	}
	if res.SSH == nil {
		t.Fatal("SSH result missing")
	}
}

func TestSSHProbeAuth(t *testing.T) {
	dir := t.TempDir()
	host := sshkeys.Generate(t, "ed25519")
	ed, ec, rs := sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ecdsa"), sshkeys.Generate(t, "rsa")
	enc := sshkeys.Generate(t, "ecdsa")
	ca, certKey := sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ed25519")
	stranger := sshkeys.Generate(t, "ed25519")
	const password, passphrase = "pa55-word", "open sesame"

	srv := testutil.StartSSHServer(t, sshserver.TestOptions{
		HostSigners:    []ssh.Signer{host.Signer},
		AuthorizedKeys: []ssh.PublicKey{ed.Pub, ec.Pub, rs.Pub, enc.Pub},
		Password:       password,
		UserCA:         ca.Pub,
	})
	known := writeFile(t, dir, "known_hosts", []byte(knownHostsFor(srv.Port, host.Pub)))
	file := func(name string, data []byte) string { return writeFile(t, dir, name, data) }
	cert := sshkeys.SignCert(t, ca, certKey.Pub, ssh.UserCert, sshserver.DefaultUser)
	wrongCert := sshkeys.SignCert(t, ca, certKey.Pub, ssh.UserCert, "someone-else")

	tests := []struct {
		name string
		cfg  config.SSHProbe
		want probe.Reason
	}{
		{"ed25519 openssh", config.SSHProbe{PrivateKeyFile: file("ed", sshkeys.OpenSSH(t, ed, ""))}, probe.ReasonNone},
		{"ecdsa openssh", config.SSHProbe{PrivateKeyFile: file("ec", sshkeys.OpenSSH(t, ec, ""))}, probe.ReasonNone},
		{"rsa openssh", config.SSHProbe{PrivateKeyFile: file("rsa", sshkeys.OpenSSH(t, rs, ""))}, probe.ReasonNone},
		{"ed25519 pkcs8 pem", config.SSHProbe{PrivateKeyFile: file("ed.pem", sshkeys.LegacyPEM(t, ed))}, probe.ReasonNone},
		{"ecdsa sec1 pem", config.SSHProbe{PrivateKeyFile: file("ec.pem", sshkeys.LegacyPEM(t, ec))}, probe.ReasonNone},
		{"rsa pkcs1 pem", config.SSHProbe{PrivateKeyFile: file("rsa.pem", sshkeys.LegacyPEM(t, rs))}, probe.ReasonNone},
		{"encrypted key with passphrase file", config.SSHProbe{
			PrivateKeyFile: file("enc", sshkeys.OpenSSH(t, enc, passphrase)),
			PassphraseFile: file("pass", []byte(passphrase+"\n")),
		}, probe.ReasonNone},
		{"password", config.SSHProbe{PasswordFile: file("pw", []byte(password+"\r\n"))}, probe.ReasonNone},
		{"certificate", config.SSHProbe{
			PrivateKeyFile:  file("cert-key", sshkeys.OpenSSH(t, certKey, "")),
			CertificateFile: file("cert-key-cert.pub", ssh.MarshalAuthorizedKey(cert)),
		}, probe.ReasonNone},
		{"wrong key", config.SSHProbe{PrivateKeyFile: file("stranger", sshkeys.OpenSSH(t, stranger, ""))}, probe.ReasonAuth},
		{"wrong password", config.SSHProbe{PasswordFile: file("badpw", []byte("nope\n"))}, probe.ReasonAuth},
		{"certificate for another principal", config.SSHProbe{
			PrivateKeyFile:  file("cert-key2", sshkeys.OpenSSH(t, certKey, "")),
			CertificateFile: file("wrong-cert.pub", ssh.MarshalAuthorizedKey(wrongCert)),
		}, probe.ReasonAuth},
		{"unknown user", config.SSHProbe{User: "root", PrivateKeyFile: file("ed2", sshkeys.OpenSSH(t, ed, ""))}, probe.ReasonAuth},
		{"no credentials", config.SSHProbe{}, probe.ReasonAuth},
	}
	p := newProber(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg.User == "" {
				cfg.User = sshserver.DefaultUser
			}
			cfg.KnownHostsFile = known
			before := srv.AuthAttempts()
			tg := testTarget(srv.Port, &cfg)
			// Decrypting a bcrypt-protected key is slow under the race
			// detector and counts against the (first) probe's timeout.
			tg.Timeout = time.Minute
			res := p.Probe(context.Background(), tg)
			checkReason(t, res, tc.want)
			sr := res.SSH
			if !sr.NewConnection || sr.Connect <= 0 || sr.Handshake <= 0 {
				t.Errorf("phases: new=%v connect=%v handshake=%v", sr.NewConnection, sr.Connect, sr.Handshake)
			}
			if tc.want == probe.ReasonNone && sr.Auth <= 0 {
				t.Errorf("auth phase not timed: %v", sr.Auth)
			}
			if srv.AuthAttempts() == before {
				t.Error("server saw no auth attempt")
			}
			if res.Duration < sr.Connect+sr.Handshake+sr.Auth {
				t.Errorf("duration %v shorter than its phases", res.Duration)
			}
		})
	}
}

func TestSSHProbeAgent(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: f.user.Priv}); err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "sshagent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	served := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			served++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = agent.ServeAgent(keyring, c)
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })

	tests := []struct {
		name string
		sock string
		want probe.Reason
	}{
		{"agent key", sock, probe.ReasonNone},
		{"no SSH_AUTH_SOCK", "", probe.ReasonConfig},
		{"agent not listening", filepath.Join(sockDir, "missing.sock"), probe.ReasonConfig},
	}
	p := newProber(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SSH_AUTH_SOCK", tc.sock)
			cfg := f.cfg()
			cfg.PrivateKeyFile = ""
			cfg.Agent = true
			res := p.Probe(context.Background(), testTarget(f.srv.Port, cfg))
			checkReason(t, res, tc.want)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if served != 1 {
		t.Errorf("agent connections: got %d, want 1", served)
	}
}

func TestSSHProbeConfigErrors(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	dir := t.TempDir()
	const passphrase, password = "very-secret-passphrase", "very-secret-password"
	enc := sshkeys.OpenSSH(t, f.user, passphrase)
	plain := sshkeys.OpenSSH(t, f.user, "")
	// A line of the base64 body: key material that must never be logged.
	material := strings.Split(string(plain), "\n")[2]
	garbage := "-----BEGIN OPENSSH PRIVATE KEY-----\nU0VDUkVUU0VDUkVUU0VDUkVU\n-----END OPENSSH PRIVATE KEY-----\n"
	other := sshkeys.Generate(t, "ed25519")
	ca := sshkeys.Generate(t, "ed25519")
	otherCert := sshkeys.SignCert(t, ca, other.Pub, ssh.UserCert, sshserver.DefaultUser)
	file := func(name string, data []byte) string { return writeFile(t, dir, name, data) }
	secrets := []string{passphrase, password, material, "U0VDUkVU"}

	tests := []struct {
		name    string
		cfg     func(c *config.SSHProbe)
		wantErr string
	}{
		{"missing key file", func(c *config.SSHProbe) { c.PrivateKeyFile = filepath.Join(dir, "nope") }, "private_key_file"},
		{"garbage key file", func(c *config.SSHProbe) { c.PrivateKeyFile = file("garbage", []byte(garbage)) }, "cannot parse private key"},
		{"encrypted key without passphrase", func(c *config.SSHProbe) { c.PrivateKeyFile = file("enc1", enc) }, "no passphrase_file"},
		{"wrong passphrase", func(c *config.SSHProbe) {
			c.PrivateKeyFile = file("enc2", enc)
			c.PassphraseFile = file("wrongpass", []byte(password+"\n"))
		}, "cannot decrypt"},
		{"missing passphrase file", func(c *config.SSHProbe) {
			c.PrivateKeyFile = file("enc3", enc)
			c.PassphraseFile = filepath.Join(dir, "nopass")
		}, "passphrase_file"},
		{"missing password file", func(c *config.SSHProbe) { c.PasswordFile = filepath.Join(dir, "nopw") }, "password_file"},
		{"certificate is a plain key", func(c *config.SSHProbe) {
			c.CertificateFile = file("plain.pub", ssh.MarshalAuthorizedKey(other.Pub))
		}, "not a certificate"},
		{"certificate for another key", func(c *config.SSHProbe) {
			c.CertificateFile = file("other-cert.pub", ssh.MarshalAuthorizedKey(otherCert))
		}, "does not match"},
		{"certificate without key", func(c *config.SSHProbe) {
			c.PrivateKeyFile = ""
			c.CertificateFile = file("other-cert2.pub", ssh.MarshalAuthorizedKey(otherCert))
		}, "without private_key_file"},
		{"missing known_hosts", func(c *config.SSHProbe) { c.KnownHostsFile = filepath.Join(dir, "nokh") }, "known_hosts_file"},
		{"no known_hosts configured", func(c *config.SSHProbe) { c.KnownHostsFile = "" }, "insecure_skip_host_key_verification"},
		{"broken known_hosts", func(c *config.SSHProbe) { c.KnownHostsFile = file("kh", []byte("127.0.0.1 ssh-ed25519 !!!\n")) }, "known_hosts_file"},
	}
	p := newProber(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.cfg(config.Command{Name: "c", Run: "echo hi"})
			tc.cfg(cfg)
			res := p.Probe(context.Background(), testTarget(f.srv.Port, cfg))
			checkReason(t, res, probe.ReasonConfig)
			if !errors.Is(res.Err, errConfig) || !strings.Contains(res.Err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", res.Err, tc.wantErr)
			}
			for _, s := range secrets {
				if strings.Contains(res.Err.Error(), s) {
					t.Errorf("error %q leaks secret %q", res.Err, s)
				}
			}
			if len(res.SSH.Commands) != 1 || res.SSH.Commands[0].Ran {
				t.Errorf("commands: %+v, want one not run", res.SSH.Commands)
			}
		})
	}
	if n := f.srv.Accepted(); n != 0 {
		t.Errorf("config errors dialled the server %d times", n)
	}
}

func TestSSHProbeHostKey(t *testing.T) {
	dir := t.TempDir()
	user := sshkeys.Generate(t, "ed25519")
	keyFile := writeFile(t, dir, "id", sshkeys.OpenSSH(t, user, ""))
	edHost, ecHost, otherHost := sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ecdsa"), sshkeys.Generate(t, "ed25519")
	hostCA, otherCA := sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ed25519")
	hostCert := sshkeys.SignCert(t, hostCA, edHost.Pub, ssh.HostCert, "127.0.0.1")
	certSigner, err := ssh.NewCertSigner(hostCert, edHost.Signer)
	if err != nil {
		t.Fatal(err)
	}
	caLine := func(ca sshkeys.Key) func(port int) string {
		return func(port int) string {
			return "@cert-authority " + knownhosts.Normalize("127.0.0.1:"+strconv.Itoa(port)) + " " +
				string(ssh.MarshalAuthorizedKey(ca.Pub))
		}
	}
	plainLine := func(k sshkeys.Key) func(port int) string {
		return func(port int) string { return knownHostsFor(port, k.Pub) }
	}

	tests := []struct {
		name     string
		hostKeys []ssh.Signer
		known    func(port int) string
		insecure bool
		want     probe.Reason
	}{
		{"known key", []ssh.Signer{edHost.Signer}, plainLine(edHost), false, probe.ReasonNone},
		{"mismatch", []ssh.Signer{edHost.Signer}, plainLine(otherHost), false, probe.ReasonHostKey},
		{"unknown host", []ssh.Signer{edHost.Signer}, func(int) string {
			return knownhosts.Line([]string{"elsewhere.example"}, edHost.Pub) + "\n"
		}, false, probe.ReasonHostKey},
		{"empty known_hosts", []ssh.Signer{edHost.Signer}, func(int) string { return "" }, false, probe.ReasonHostKey},
		{"hashed entry", []ssh.Signer{edHost.Signer}, func(port int) string {
			h := knownhosts.HashHostname(knownhosts.Normalize("127.0.0.1:" + strconv.Itoa(port)))
			return knownhosts.Line([]string{h}, edHost.Pub) + "\n"
		}, false, probe.ReasonNone},
		{"hashed mismatch", []ssh.Signer{edHost.Signer}, func(port int) string {
			h := knownhosts.HashHostname(knownhosts.Normalize("127.0.0.1:" + strconv.Itoa(port)))
			return knownhosts.Line([]string{h}, otherHost.Pub) + "\n"
		}, false, probe.ReasonHostKey},
		{"port 22 entry does not cover another port", []ssh.Signer{edHost.Signer}, func(int) string {
			return knownhosts.Line([]string{"127.0.0.1"}, edHost.Pub) + "\n"
		}, false, probe.ReasonHostKey},
		{"cert-authority host certificate", []ssh.Signer{certSigner}, caLine(hostCA), false, probe.ReasonNone},
		{"cert-authority from another CA", []ssh.Signer{certSigner}, caLine(otherCA), false, probe.ReasonHostKey},
		{"server with certificate, plain key known", []ssh.Signer{certSigner, edHost.Signer}, plainLine(edHost), false, probe.ReasonNone},
		// The library prefers ECDSA host keys; known_hosts only lists the
		// Ed25519 one, which must be the one asked for.
		{"two host keys, second type known", []ssh.Signer{ecHost.Signer, edHost.Signer}, plainLine(edHost), false, probe.ReasonNone},
		{"two host keys, first type known", []ssh.Signer{ecHost.Signer, edHost.Signer}, plainLine(ecHost), false, probe.ReasonNone},
		{"insecure skip", []ssh.Signer{edHost.Signer}, plainLine(otherHost), true, probe.ReasonNone},
	}
	logs := &testutil.Buffer{}
	p := NewProber(dns.New(dns.Options{}), slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(p.Close)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.StartSSHServer(t, sshserver.TestOptions{HostSigners: tc.hostKeys, AuthorizedKeys: []ssh.PublicKey{user.Pub}})
			known := writeFile(t, dir, "known_hosts"+strconv.Itoa(i), []byte(tc.known(srv.Port)))
			cfg := &config.SSHProbe{
				User: sshserver.DefaultUser, PrivateKeyFile: keyFile, KnownHostsFile: known,
				InsecureSkipHostKeyVerification: tc.insecure,
			}
			if tc.insecure {
				cfg.KnownHostsFile = ""
			}
			logs.Reset()
			res := p.Probe(context.Background(), testTarget(srv.Port, cfg))
			checkReason(t, res, tc.want)
			// A host key that does not match may be a man in the middle:
			// logged at warn, where a default log level shows it.
			if warned := strings.Contains(logs.String(), "level=WARN msg=\"ssh probe failed\""); warned != (tc.want == probe.ReasonHostKey) {
				t.Errorf("warning logged: %v, want %v; log:\n%s", warned, tc.want == probe.ReasonHostKey, logs.String())
			}
			attempts := srv.AuthAttempts()
			if tc.want == probe.ReasonHostKey {
				if attempts != 0 {
					t.Errorf("client sent %d auth requests to a server with a bad host key", attempts)
				}
				if !errors.Is(res.Err, errHostKey) {
					t.Errorf("error %v does not wrap errHostKey", res.Err)
				}
				if res.SSH.Auth != 0 {
					t.Errorf("auth phase %v, want 0", res.SSH.Auth)
				}
			} else if attempts == 0 {
				t.Error("server saw no auth attempt")
			}
		})
	}
}

func TestSSHProbeCommands(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	cmd := func(run string) config.Command { return config.Command{Name: strings.Fields(run)[0], Run: run} }
	type wantCmd struct {
		ran    bool
		exit   int
		reason probe.Reason
		bytes  int64
		hash   uint64 // checked when non-zero
	}
	tests := []struct {
		name      string
		cmds      []config.Command
		maxOutput int64
		want      probe.Reason
		wantCmds  []wantCmd
	}{
		{"no commands", nil, 0, probe.ReasonNone, nil},
		{
			"echo",
			[]config.Command{cmd("echo hello")},
			0, probe.ReasonNone,
			[]wantCmd{{ran: true, bytes: 6, hash: testHash([]byte("hello\n"))}},
		},
		{
			"empty output",
			[]config.Command{cmd("exit 0")},
			0, probe.ReasonNone,
			[]wantCmd{{ran: true, hash: testHash(nil)}},
		},
		{
			"non-zero exit",
			[]config.Command{cmd("exit 3")},
			0, probe.ReasonCommand,
			[]wantCmd{{ran: true, exit: 3, reason: probe.ReasonCommand}},
		},
		{
			"unknown command",
			[]config.Command{cmd("frobnicate")},
			0, probe.ReasonCommand,
			[]wantCmd{{ran: true, exit: 127, reason: probe.ReasonCommand}},
		},
		{
			"killed by signal",
			[]config.Command{cmd("signal")},
			0, probe.ReasonCommand,
			[]wantCmd{{ran: true, exit: -1, reason: probe.ReasonCommand}},
		},
		{
			"no exit status",
			[]config.Command{cmd("noexit"), cmd("echo after")},
			0, probe.ReasonNone,
			[]wantCmd{{ran: true, exit: -1, hash: testHash(nil)}, {ran: true, bytes: 6}},
		},
		{
			"exec rejected",
			[]config.Command{cmd("reject"), cmd("echo after")},
			0, probe.ReasonSession,
			[]wantCmd{{exit: -1, reason: probe.ReasonSession}, {ran: true, bytes: 6}},
		},
		{
			"first failure wins, later commands still run",
			[]config.Command{cmd("echo ok"), cmd("exit 2"), cmd("exit 4"), cmd("echo after")},
			0, probe.ReasonCommand,
			[]wantCmd{{ran: true, bytes: 3}, {ran: true, exit: 2, reason: probe.ReasonCommand}, {ran: true, exit: 4, reason: probe.ReasonCommand}, {ran: true, bytes: 6}},
		},
		{
			"output over the cap",
			[]config.Command{cmd("flood 100000"), cmd("echo after")},
			1000, probe.ReasonOutputLimit,
			[]wantCmd{{ran: true, exit: -1, reason: probe.ReasonOutputLimit, bytes: 1000, hash: testHash([]byte(strings.Repeat("x", 1000)))}, {ran: true, bytes: 6}},
		},
		{
			"output one over the cap",
			[]config.Command{cmd("printf 12345")},
			4, probe.ReasonOutputLimit,
			[]wantCmd{{ran: true, exit: -1, reason: probe.ReasonOutputLimit, bytes: 4, hash: testHash([]byte("1234"))}},
		},
		{
			"output exactly at the cap",
			[]config.Command{cmd("flood 1000")},
			1000, probe.ReasonNone,
			[]wantCmd{{ran: true, bytes: 1000, hash: testHash([]byte(strings.Repeat("x", 1000)))}},
		},
		{
			"connection dropped",
			[]config.Command{cmd("echo ok"), cmd("drop"), cmd("echo after")},
			0, probe.ReasonSession,
			[]wantCmd{{ran: true, bytes: 3}, {ran: true, exit: -1, reason: probe.ReasonSession}, {exit: -1}},
		},
	}
	p := newProber(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.cfg(tc.cmds...)
			cfg.MaxOutputBytes = tc.maxOutput
			res := p.Probe(context.Background(), testTarget(f.srv.Port, cfg))
			checkReason(t, res, tc.want)
			got := res.SSH.Commands
			if len(got) != len(tc.wantCmds) {
				t.Fatalf("got %d command results, want %d", len(got), len(tc.wantCmds))
			}
			for i, w := range tc.wantCmds {
				g := got[i]
				if g.Name != tc.cmds[i].Name || g.Ran != w.ran || g.ExitStatus != w.exit || g.Reason != w.reason || g.Bytes != w.bytes {
					t.Errorf("command %d: got name=%q ran=%v exit=%d reason=%q bytes=%d err=%v, want ran=%v exit=%d reason=%q bytes=%d",
						i, g.Name, g.Ran, g.ExitStatus, g.Reason, g.Bytes, g.Err, w.ran, w.exit, w.reason, w.bytes)
				}
				if w.hash != 0 && g.Hash != w.hash {
					t.Errorf("command %d: hash %d, want %d", i, g.Hash, w.hash)
				}
				if g.Ran && g.Duration <= 0 {
					t.Errorf("command %d: duration %v", i, g.Duration)
				}
				if g.Reason != probe.ReasonNone && g.Err == nil {
					t.Errorf("command %d: reason without error", i)
				}
			}
		})
	}
}

func TestSSHProbeOutputHash(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	hashOf := func(run string) uint64 {
		t.Helper()
		res := p.Probe(context.Background(), testTarget(f.srv.Port, f.cfg(config.Command{Run: run})))
		checkReason(t, res, probe.ReasonNone)
		return res.SSH.Commands[0].Hash
	}
	a1, a2, b := hashOf("echo a"), hashOf("echo a"), hashOf("echo b")
	if a1 != a2 {
		t.Errorf("same output, different hashes: %d, %d", a1, a2)
	}
	if a1 == b {
		t.Errorf("different output, same hash %d", a1)
	}
	if a1 >= 1<<52 {
		t.Errorf("hash %d does not fit a float64 mantissa", a1)
	}
}

func TestSSHProbeTimeouts(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	tarpit := testutil.StartRawServer(t, sshserver.Greet(""))
	silentAfterBanner := testutil.StartRawServer(t, sshserver.Greet("SSH-2.0-OpenSSH_9.6\r\n"))
	preBannerThenSilence := testutil.StartRawServer(t, sshserver.Greet("Welcome, please wait\r\n"))

	tests := []struct {
		name        string
		port        int
		timeout     time.Duration
		cmds        []config.Command
		want        probe.Reason
		wantCmds    []probe.Reason
		wantRan     []bool
		minDuration time.Duration
	}{
		{"tarpit", tarpit.Port, 300 * time.Millisecond, nil, probe.ReasonBanner, nil, nil, 300 * time.Millisecond},
		{"text lines but no version line", preBannerThenSilence.Port, 300 * time.Millisecond, nil, probe.ReasonBanner, nil, nil, 300 * time.Millisecond},
		{"key exchange stalls", silentAfterBanner.Port, 300 * time.Millisecond, nil, probe.ReasonHandshake, nil, nil, 300 * time.Millisecond},
		{
			"command timeout, next command runs", f.srv.Port, 5 * time.Second,
			[]config.Command{{Name: "hang", Run: "sleep forever", Timeout: config.Duration(300 * time.Millisecond)}, {Name: "after", Run: "echo after"}},
			probe.ReasonTimeout,
			[]probe.Reason{probe.ReasonTimeout, probe.ReasonNone},
			[]bool{true, true},
			300 * time.Millisecond,
		},
		{
			"probe timeout during command", f.srv.Port, 500 * time.Millisecond,
			[]config.Command{{Name: "hang", Run: "sleep forever"}, {Name: "after", Run: "echo after"}},
			probe.ReasonTimeout,
			[]probe.Reason{probe.ReasonTimeout, probe.ReasonNone},
			[]bool{true, false},
			500 * time.Millisecond,
		},
	}
	p := newProber(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := testTarget(tc.port, f.cfg(tc.cmds...))
			tg.Timeout = tc.timeout
			res := p.Probe(context.Background(), tg)
			checkReason(t, res, tc.want)
			if res.Duration < tc.minDuration || res.Duration > tc.timeout+slack {
				t.Errorf("duration %v, want between %v and %v", res.Duration, tc.minDuration, tc.timeout+slack)
			}
			for i, w := range tc.wantCmds {
				g := res.SSH.Commands[i]
				if g.Reason != w || g.Ran != tc.wantRan[i] {
					t.Errorf("command %d: reason=%q ran=%v err=%v, want reason=%q ran=%v", i, g.Reason, g.Ran, g.Err, w, tc.wantRan[i])
				}
				if w == probe.ReasonTimeout {
					if g.ExitStatus != -1 {
						t.Errorf("command %d: exit status %d, want -1", i, g.ExitStatus)
					}
					if timeout := tc.cmds[i].Timeout.D(); timeout > 0 && (g.Duration < timeout || g.Duration > timeout+slack) {
						t.Errorf("command %d: duration %v, want about %v", i, g.Duration, timeout)
					}
				}
			}
		})
	}
}

func TestSSHProbeNetworkFailures(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	garbage := testutil.StartRawServer(t, sshserver.GreetAndClose("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
	endless := testutil.StartRawServer(t, sshserver.Greet(strings.Repeat("no ssh here\r\n", 2000)))
	badVersion := testutil.StartRawServer(t, sshserver.GreetAndClose("SSH-1.5-ancient\r\n"))
	closedPort := testutil.FreePort(t, "127.0.0.1")

	tests := []struct {
		name string
		tg   func() *config.Target
		want probe.Reason
	}{
		{"garbage banner", func() *config.Target { return testTarget(garbage.Port, f.cfg()) }, probe.ReasonBanner},
		{"endless pre-banner lines", func() *config.Target { return testTarget(endless.Port, f.cfg()) }, probe.ReasonBanner},
		{"unsupported protocol version", func() *config.Target { return testTarget(badVersion.Port, f.cfg()) }, probe.ReasonHandshake},
		{"refused", func() *config.Target { return testTarget(closedPort, f.cfg()) }, probe.ReasonRefused},
		{"dns", func() *config.Target {
			tg := testTarget(f.srv.Port, f.cfg())
			tg.Name = "no-such-host.invalid"
			return tg
		}, probe.ReasonDNS},
		{"port from probe config", func() *config.Target {
			cfg := f.cfg()
			cfg.Port = f.srv.Port
			tg := testTarget(0, cfg)
			tg.Port = 0
			return tg
		}, probe.ReasonNone},
	}
	p := newProber(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := tc.tg()
			tg.Timeout = 2 * time.Second
			res := p.Probe(context.Background(), tg)
			checkReason(t, res, tc.want)
			if res.Duration > tg.Timeout+slack {
				t.Errorf("duration %v", res.Duration)
			}
		})
	}
}

func TestSSHProbeContextCancel(t *testing.T) {
	tarpit := testutil.StartRawServer(t, sshserver.Greet(""))
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	ctx, cancel := context.WithCancel(context.Background())
	tg := testTarget(tarpit.Port, f.cfg())
	tg.Timeout = time.Minute
	done := make(chan probe.Result)
	go func() { done <- p.Probe(ctx, tg) }()
	// Cancel once the client has sent its version line, so the probe is
	// blocked reading the banner and only the close on ctx.Done can free it.
	for tarpit.Received() == 0 {
		runtime.Gosched()
	}
	cancel()
	select {
	case res := <-done:
		checkReason(t, res, probe.ReasonBanner)
	case <-time.After(5 * time.Second):
		t.Fatal("probe did not return after its context was cancelled")
	}
}

func TestSSHProbeReuse(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
	cfg.ReuseConnections = true
	tg := testTarget(f.srv.Port, cfg)

	const n = 5
	for i := range n {
		res := p.Probe(context.Background(), tg)
		checkReason(t, res, probe.ReasonNone)
		sr := res.SSH
		if first := i == 0; sr.NewConnection != first || (sr.Connect > 0) != first || (sr.Handshake > 0) != first || (sr.Auth > 0) != first {
			t.Errorf("probe %d: new=%v connect=%v handshake=%v auth=%v", i, sr.NewConnection, sr.Connect, sr.Handshake, sr.Auth)
		}
	}
	if got := p.ConnectionsOpened(); got != 1 {
		t.Errorf("ConnectionsOpened after %d probes: %d, want 1", n, got)
	}
	if got := f.srv.Accepted(); got != 1 {
		t.Errorf("server accepted %d connections, want 1", got)
	}
	if got := f.srv.Sessions(); got != n {
		t.Errorf("server opened %d sessions, want %d", got, n)
	}

	f.srv.CloseConns()
	res := p.Probe(context.Background(), tg)
	checkReason(t, res, probe.ReasonNone)
	if !res.SSH.NewConnection || res.SSH.Connect <= 0 {
		t.Errorf("after server-side close: new=%v connect=%v", res.SSH.NewConnection, res.SSH.Connect)
	}
	if got := p.ConnectionsOpened(); got != 2 {
		t.Errorf("ConnectionsOpened after reconnect: %d, want 2", got)
	}

	// A changed target configuration gets a new connection.
	tg2 := *tg
	tg2.Fingerprint = "v2"
	res = p.Probe(context.Background(), &tg2)
	checkReason(t, res, probe.ReasonNone)
	if !res.SSH.NewConnection || p.ConnectionsOpened() != 3 {
		t.Errorf("after config change: new=%v opened=%d", res.SSH.NewConnection, p.ConnectionsOpened())
	}

	// A connection cut during a probe is not reused.
	cfgDrop := f.cfg(config.Command{Name: "drop", Run: "drop"})
	cfgDrop.ReuseConnections = true
	tg3 := *tg
	tg3.SSH = cfgDrop
	res = p.Probe(context.Background(), &tg3)
	checkReason(t, res, probe.ReasonSession)
	res = p.Probe(context.Background(), tg)
	checkReason(t, res, probe.ReasonNone)
	if !res.SSH.NewConnection {
		t.Error("connection dropped mid-probe was reused")
	}
}

func TestSSHProbeReuseSessionRefused(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{MaxSessions: 1})
	p := newProber(t)
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hi"})
	cfg.ReuseConnections = true
	tg := testTarget(f.srv.Port, cfg)
	for i := range 3 {
		res := p.Probe(context.Background(), tg)
		checkReason(t, res, probe.ReasonNone)
		if !res.SSH.NewConnection {
			t.Errorf("probe %d: session refused on the old connection but no new one was made", i)
		}
	}
	if got := p.ConnectionsOpened(); got != 3 {
		t.Errorf("ConnectionsOpened: %d, want 3", got)
	}
}

func TestSSHProbeReuseBackoff(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	other := sshkeys.Generate(t, "ed25519")
	badKnown := writeFile(t, f.dir, "bad_known_hosts", []byte(knownHostsFor(f.srv.Port, other.Pub)))
	p := newProber(t)
	clock := testutil.NewClock(time.Unix(1e9, 0))
	p.now = clock.Now
	cfg := f.cfg()
	cfg.ReuseConnections = true
	cfg.KnownHostsFile = badKnown
	tg := testTarget(f.srv.Port, cfg)
	tg.Interval = 3 * time.Second

	// Each step advances the clock, probes, and says whether the probe may
	// dial: backoff is 1s, 2s, then capped at the 3s interval.
	steps := []struct {
		advance time.Duration
		dials   bool
	}{
		{0, true},
		{0, false},
		{999 * time.Millisecond, false},
		{time.Millisecond, true}, // 1s after the first failure
		{time.Second, false},
		{time.Second, true}, // 2s later
		{2 * time.Second, false},
		{time.Second, true}, // capped at 3s
		{3 * time.Second, true},
	}
	accepted := int64(0)
	for i, s := range steps {
		clock.Advance(s.advance)
		res := p.Probe(context.Background(), tg)
		checkReason(t, res, probe.ReasonHostKey)
		if s.dials {
			accepted++
		}
		if got := f.srv.Accepted(); got != accepted {
			t.Fatalf("step %d: server accepted %d connections, want %d", i, got, accepted)
		}
		if !s.dials && (res.SSH.NewConnection || !strings.Contains(res.Err.Error(), "backoff")) {
			t.Errorf("step %d: probe in backoff dialled or did not say so: %v", i, res.Err)
		}
	}

	// Fixing the problem by a reload (a new fingerprint) ends the backoff
	// at once: the next probe dials with the new settings.
	clock.Advance(time.Millisecond)
	if res := p.Probe(context.Background(), tg); !strings.Contains(res.Err.Error(), "backoff") {
		t.Fatalf("probe right after a failure is not in backoff: %v", res.Err)
	}
	cfg2 := f.cfg()
	cfg2.ReuseConnections = true
	tg.SSH = cfg2
	tg.Fingerprint = "fixed"
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
}

func TestSSHBackoffCap(t *testing.T) {
	tests := []struct {
		name            string
		interval, retry time.Duration
		want            time.Duration
	}{
		{"no retry interval", 5 * time.Minute, 0, 5 * time.Minute},
		{"retry interval equal to the interval", 5 * time.Minute, 5 * time.Minute, 5 * time.Minute},
		{"shorter retry interval", 5 * time.Minute, 30 * time.Second, 30 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := &config.Target{Interval: tc.interval, RetryInterval: tc.retry}
			if got := backoffCap(tg); got != tc.want {
				t.Errorf("backoffCap = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSSHBackoff(t *testing.T) {
	tests := []struct {
		failures int
		interval time.Duration
		want     time.Duration
	}{
		{1, time.Minute, time.Second},
		{2, time.Minute, 2 * time.Second},
		{6, time.Minute, 32 * time.Second},
		{7, time.Minute, time.Minute},
		{1000, time.Minute, time.Minute},
		{1, 500 * time.Millisecond, 500 * time.Millisecond},
		{20, 0, backoffMaxDefault},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.failures)+"/"+tc.interval.String(), func(t *testing.T) {
			if got := backoff(tc.failures, tc.interval); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSSHProbeForgetAndClose(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	cfg := f.cfg()
	cfg.ReuseConnections = true
	a := testTarget(f.srv.Port, cfg)
	b := testTarget(f.srv.Port, cfg)
	b.Set = "other"
	for _, tg := range []*config.Target{a, b, a, b} {
		checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
	}
	if got := p.ConnectionsOpened(); got != 2 {
		t.Fatalf("ConnectionsOpened: %d, want 2", got)
	}
	p.forget(func(k config.Key) bool { return k == a.Key() })
	res := p.Probe(context.Background(), a)
	checkReason(t, res, probe.ReasonNone)
	if res.SSH.NewConnection {
		t.Error("kept target lost its connection")
	}
	res = p.Probe(context.Background(), b)
	checkReason(t, res, probe.ReasonNone)
	if !res.SSH.NewConnection {
		t.Error("forgotten target kept its connection")
	}

	p.Close()
	// After Close probes still work, on connections of their own.
	for range 2 {
		res = p.Probe(context.Background(), a)
		checkReason(t, res, probe.ReasonNone)
		if !res.SSH.NewConnection {
			t.Error("probe after Close reused a connection")
		}
	}
	if got := p.ConnectionsOpened(); got != 5 {
		t.Errorf("ConnectionsOpened: %d, want 5", got)
	}
}

// fDCount returns the number of open file descriptors of the process.
func fDCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

func TestSSHProbeNoLeaks(t *testing.T) {
	// Warm up lazily opened runtime descriptors (netpoller) first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
	ignore := goleak.IgnoreCurrent()
	baseline := fDCount(t)

	func() {
		srv := func() *fixture {
			f := newFixture(t, sshserver.TestOptions{})
			return f
		}()
		tarpit := testutil.StartRawServer(t, sshserver.Greet(""))
		p := NewProber(dns.New(dns.Options{}), slog.New(slog.DiscardHandler))
		run := []config.Command{{Name: "echo", Run: "echo hi"}, {Name: "flood", Run: "flood 100000"}}
		fresh := srv.cfg(run...)
		fresh.MaxOutputBytes = 1000
		pooled := srv.cfg(run...)
		pooled.ReuseConnections = true
		pooled.MaxOutputBytes = 1000
		timing := srv.cfg(config.Command{Name: "hang", Run: "sleep forever", Timeout: config.Duration(100 * time.Millisecond)})
		for range 3 {
			p.Probe(context.Background(), testTarget(srv.srv.Port, fresh))
			p.Probe(context.Background(), testTarget(srv.srv.Port, pooled))
			p.Probe(context.Background(), testTarget(srv.srv.Port, timing))
		}
		tg := testTarget(tarpit.Port, fresh)
		tg.Timeout = 100 * time.Millisecond
		checkReason(t, p.Probe(context.Background(), tg), probe.ReasonBanner)
		if p.ConnectionsOpened() < 7 {
			t.Errorf("ConnectionsOpened: %d", p.ConnectionsOpened())
		}
		p.Close()
		// Stop the servers now rather than at cleanup so that what is left
		// below is the prober's alone.
		srv.srv.Close()
	}()
	goleak.VerifyNone(t, ignore,
		// The tarpit listener lives until cleanup.
		goleak.IgnoreAnyFunction("github.com/fleet-exporter/fleet_exporter/internal/sshserver.StartRaw.func1"),
		goleak.IgnoreAnyFunction("github.com/fleet-exporter/fleet_exporter/internal/sshserver.StartRaw.func1.1"))
	// The tarpit holds one listener fd (its connection was closed by the
	// prober and has been read to EOF by now, or is about to be).
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := fDCount(t)
		if got <= baseline+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("file descriptors: %d, baseline %d", got, baseline)
		}
		runtime.Gosched()
	}
}

func TestSSHProbeMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("streams tens of MiB")
	}
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	const size = 64 << 20
	tests := []struct {
		name string
		run  string
	}{
		{"stderr flood", "errflood " + strconv.Itoa(size)},
		{"stdout under a large cap", "flood " + strconv.Itoa(size)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.cfg(config.Command{Name: "flood", Run: tc.run})
			cfg.MaxOutputBytes = 2 * size
			tg := testTarget(f.srv.Port, cfg)
			tg.Timeout = 2 * time.Minute

			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapInuse
			var peak uint64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapInuse)
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			}()
			res := p.Probe(context.Background(), tg)
			close(stop)
			wg.Wait()
			checkReason(t, res, probe.ReasonNone)
			if growth := int64(peak) - int64(base); growth > size/2 {
				t.Errorf("heap grew by %d MiB while streaming %d MiB", growth>>20, size>>20)
			}
			t.Logf("heap growth %d KiB, bytes %d", (int64(peak)-int64(base))>>10, res.SSH.Commands[0].Bytes)
		})
	}
}

func TestSSHKeyFileCache(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	tg := testTarget(f.srv.Port, f.cfg())
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)

	fi, err := os.Stat(f.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// Same size, same mtime, different content: the cached key is used, so
	// the file was not read again.
	if err := os.WriteFile(f.keyFile, make([]byte, fi.Size()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(f.keyFile, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)

	// A new mtime makes it read the (now broken) file, which is reported
	// while the last good key stays in use.
	events := recordFileChanges(p)
	later := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(f.keyFile, later, later); err != nil {
		t.Fatal(err)
	}
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
	if err := events.lastErr(t, f.keyFile); err == nil || !strings.Contains(err.Error(), "cannot parse private key") {
		t.Errorf("broken key file reported as %v", err)
	}

	// And a fixed file is picked up again.
	if err := os.WriteFile(f.keyFile, sshkeys.OpenSSH(t, f.user, ""), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(f.keyFile, later.Add(time.Second), later.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)

	// The known_hosts file is cached the same way.
	fi, err = os.Stat(f.knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.knownHosts, make([]byte, fi.Size()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(f.knownHosts, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
	later = fi.ModTime().Add(time.Second)
	if err := os.Chtimes(f.knownHosts, later, later); err != nil {
		t.Fatal(err)
	}
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
	if err := events.lastErr(t, f.knownHosts); err == nil {
		t.Error("broken known_hosts file not reported")
	}

	// A fresh prober has no good version to fall back on: reason config.
	checkReason(t, newProber(t).Probe(context.Background(), tg), probe.ReasonConfig)
}

func TestSSHCheckKeyFilePermissions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		mode    os.FileMode
		wantErr bool
	}{
		{"owner only", 0o600, false},
		{"owner read only", 0o400, false},
		{"group readable", 0o640, true},
		{"world readable", 0o604, true},
		{"group writable", 0o620, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, []byte("key"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := CheckKeyFilePermissions(path)
			if (err != nil) != tc.wantErr {
				t.Errorf("got %v, want error %v", err, tc.wantErr)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if err := CheckKeyFilePermissions(filepath.Join(dir, "nope")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("got %v, want not-exist error", err)
		}
	})
}

func TestSSHBannerConn(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   bool
	}{
		{"version line", []string{"SSH-2.0-x\r\n"}, true},
		{"byte by byte", strings.Split("SSH-2.0-x\n", ""), true},
		{"after text lines", []string{"hello\r\nworld\n", "SSH-2.0-x\r\n"}, true},
		{"split prefix", []string{"SS", "H-2.0", "-x\n"}, true},
		{"no newline yet", []string{"SSH-2.0-x"}, false},
		{"prefix mid-line", []string{"xSSH-2.0\n"}, false},
		{"empty", nil, false},
		{"short line", []string{"SSH\n"}, false},
		{"HTTP", []string{"HTTP/1.1 400 Bad Request\r\n\r\n"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &bannerConn{Conn: &chunkConn{chunks: tc.chunks}}
			buf := make([]byte, 64)
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
			if got := c.sawBanner(); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// chunkConn is a net.Conn whose reads return the given chunks, then EOF.
type chunkConn struct {
	net.Conn
	chunks []string
}

func (c *chunkConn) Read(b []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

// bench returns a prober and target for the benchmarks.
func bench(b *testing.B, reuse bool) (*Prober, *config.Target) {
	f := newFixture(b, sshserver.TestOptions{})
	cfg := f.cfg(config.Command{Name: "echo", Run: "echo hello"})
	cfg.ReuseConnections = reuse
	return newProber(b), testTarget(f.srv.Port, cfg)
}

func BenchmarkSSHProbe(b *testing.B) {
	p, tg := bench(b, false)
	b.ReportAllocs()
	for b.Loop() {
		if res := p.Probe(context.Background(), tg); !res.Success {
			b.Fatalf("probe failed: %s: %v", res.Reason, res.Err)
		}
	}
}

func BenchmarkSSHProbeReuse(b *testing.B) {
	p, tg := bench(b, true)
	b.ReportAllocs()
	for b.Loop() {
		if res := p.Probe(context.Background(), tg); !res.Success {
			b.Fatalf("probe failed: %s: %v", res.Reason, res.Err)
		}
	}
}
