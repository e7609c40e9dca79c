package ssh

import (
	"context"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/dns"
	"github.com/fleet-exporter/fleet_exporter/internal/sshdtest"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// These tests run the SSH prober against the real OpenSSH server (Debian
// package openssh-server) through internal/sshdtest; they skip when sshd or
// ssh-keygen is missing.

// sshdLogWait bounds how long a test waits for sshd to log a line that is
// expected to be there already or within milliseconds, with room for a
// loaded machine.
const sshdLogWait = 10 * time.Second

// sshdProbeTimeout is the per-probe timeout of the integration targets.
const sshdProbeTimeout = 15 * time.Second

// sshdNoiseCommand prints "out\n" on stdout and noise on stderr; stderr must
// neither fail the probe nor count towards the output.
var sshdNoiseCommand = config.Command{Name: "noise", Run: "echo out; echo err >&2"}

// sshdNewProber returns an Prober that logs to the test output and is
// closed when the test ends.
func sshdNewProber(t *testing.T) *Prober {
	t.Helper()
	p := NewProber(dns.New(dns.Options{}), slog.New(slog.NewTextHandler(t.Output(), nil)))
	t.Cleanup(p.Close)
	return p
}

// sshdTarget returns an SSH target of the set "sshd" for s with the given
// probe settings.
func sshdTarget(s *sshdtest.Server, cfg *config.SSHProbe) *config.Target {
	return testutil.SSHTarget("sshd", s.HostPort(), testutil.WithSSH(cfg), testutil.WithTimeout(sshdProbeTimeout))
}

// sshdFingerprint returns the SHA256 fingerprint of k as sshd logs it,
// quoted for use in a regular expression.
func sshdFingerprint(t *testing.T, k sshdtest.Key) string {
	t.Helper()
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.AuthorizedKey(t)))
	if err != nil {
		t.Fatalf("parse %s: %v", k.Public, err)
	}
	return regexp.QuoteMeta(ssh.FingerprintSHA256(pub))
}

// sshdCheckSuccess fails the test unless res is a successful probe that went
// through every phase on a new connection and ran sshdNoiseCommand.
func sshdCheckSuccess(t *testing.T, s *sshdtest.Server, res probe.Result) {
	t.Helper()
	if !res.Success || res.Reason != probe.ReasonNone {
		t.Fatalf("Success = %v, probe.Reason = %q, Err = %v; want success\nsshd log:\n%s", res.Success, res.Reason, res.Err, s.Log(t))
	}
	sr := res.SSH
	if sr == nil {
		t.Fatal("SSH result is nil")
	}
	if sr.Connect <= 0 || sr.Handshake <= 0 || sr.Auth <= 0 {
		t.Errorf("phases Connect=%v Handshake=%v Auth=%v, want all > 0", sr.Connect, sr.Handshake, sr.Auth)
	}
	if !sr.NewConnection {
		t.Error("NewConnection = false, want true")
	}
	if len(sr.Commands) != 1 {
		t.Fatalf("got %d command results, want 1: %+v", len(sr.Commands), sr.Commands)
	}
	c := sr.Commands[0]
	want := probe.CommandResult{Name: sshdNoiseCommand.Name, Ran: true, ExitStatus: 0, Hash: testHash([]byte("out\n")), Bytes: 4}
	if c.Name != want.Name || c.Ran != want.Ran || c.ExitStatus != want.ExitStatus || c.Hash != want.Hash ||
		c.Bytes != want.Bytes || c.Reason != probe.ReasonNone || c.Err != nil {
		t.Errorf("command result = %+v, want %+v", c, want)
	}
	if c.Duration <= 0 {
		t.Errorf("command Duration = %v, want > 0", c.Duration)
	}
}

// TestSSHDAuthMethods logs in to one real sshd with every supported
// credential and host key verification form.
func TestSSHDAuthMethods(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{
		PasswordAuthentication: true,
		UserCA:                 true,
		HostCertificate:        true,
	})
	plainKH := s.KnownHosts(t, "known_hosts", sshdtest.KnownHostsPlain)
	hashedKH := s.KnownHosts(t, "known_hosts_hashed", sshdtest.KnownHostsHashed)
	caKH := s.KnownHosts(t, "known_hosts_ca", sshdtest.KnownHostsCertAuthority)

	// authorized returns a new authorized client key of keyType.
	authorized := func(t *testing.T, name, keyType, passphrase string) sshdtest.Key {
		k := s.ClientKey(t, name, keyType, passphrase)
		s.Authorize(t, k)
		return k
	}

	tests := []struct {
		name string
		// setup returns the probe settings (without commands) and the sshd
		// log line that proves the intended method was used.
		setup func(t *testing.T) (cfg config.SSHProbe, wantLog string)
	}{
		{
			name: "ed25519 key",
			setup: func(t *testing.T) (config.SSHProbe, string) {
				k := authorized(t, "id_ed25519", sshdtest.KeyEd25519, "")
				return config.SSHProbe{User: s.User, PrivateKeyFile: k.Private, KnownHostsFile: plainKH},
					"Accepted publickey for " + s.User + " .* ED25519 " + sshdFingerprint(t, k)
			},
		},
		{
			name: "rsa key",
			setup: func(t *testing.T) (config.SSHProbe, string) {
				k := authorized(t, "id_rsa", sshdtest.KeyRSA, "")
				return config.SSHProbe{User: s.User, PrivateKeyFile: k.Private, KnownHostsFile: plainKH},
					"Accepted publickey for " + s.User + " .* RSA " + sshdFingerprint(t, k)
			},
		},
		{
			name: "ecdsa key",
			setup: func(t *testing.T) (config.SSHProbe, string) {
				k := authorized(t, "id_ecdsa", sshdtest.KeyECDSA, "")
				return config.SSHProbe{User: s.User, PrivateKeyFile: k.Private, KnownHostsFile: plainKH},
					"Accepted publickey for " + s.User + " .* ECDSA " + sshdFingerprint(t, k)
			},
		},
		{
			name: "encrypted key with passphrase_file",
			setup: func(t *testing.T) (config.SSHProbe, string) {
				k := authorized(t, "id_encrypted", sshdtest.KeyEd25519, "correct horse battery")
				pass := s.WriteSecret(t, "passphrase", k.Passphrase)
				return config.SSHProbe{User: s.User, PrivateKeyFile: k.Private, PassphraseFile: pass, KnownHostsFile: plainKH},
					"Accepted publickey for " + s.User + " .* ED25519 " + sshdFingerprint(t, k)
			},
		},
		{
			name: "user certificate",
			setup: func(t *testing.T) (config.SSHProbe, string) {
				// The key itself is not authorized: only the CA admits it.
				k := s.ClientKey(t, "id_cert", sshdtest.KeyEd25519, "")
				cert := s.SignUserKey(t, k)
				return config.SSHProbe{User: s.User, PrivateKeyFile: k.Private, CertificateFile: cert, KnownHostsFile: plainKH},
					"Accepted publickey for " + s.User + " .* ED25519-CERT " + sshdFingerprint(t, k) + " ID sshdtest-user"
			},
		},
		{
			name: "password",
			setup: func(t *testing.T) (config.SSHProbe, string) {
				user, password := sshdtest.PasswordUser(t)
				pw := s.WriteSecret(t, "password", password)
				return config.SSHProbe{User: user, PasswordFile: pw, KnownHostsFile: plainKH},
					"Accepted password for " + user + " "
			},
		},
		{
			name: "host certificate via cert-authority line",
			setup: func(t *testing.T) (config.SSHProbe, string) {
				// known_hosts lists only the host CA, so only a host
				// certificate signed by it can verify.
				k := authorized(t, "id_hostcert", sshdtest.KeyEd25519, "")
				return config.SSHProbe{User: s.User, PrivateKeyFile: k.Private, KnownHostsFile: caKH},
					"Accepted publickey for " + s.User + " .* ED25519 " + sshdFingerprint(t, k)
			},
		},
		{
			name: "hashed known_hosts",
			setup: func(t *testing.T) (config.SSHProbe, string) {
				k := authorized(t, "id_hashed", sshdtest.KeyEd25519, "")
				return config.SSHProbe{User: s.User, PrivateKeyFile: k.Private, KnownHostsFile: hashedKH},
					"Accepted publickey for " + s.User + " .* ED25519 " + sshdFingerprint(t, k)
			},
		},
	}
	p := sshdNewProber(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, wantLog := tt.setup(t)
			cfg.Commands = []config.Command{sshdNoiseCommand}
			res := p.Probe(context.Background(), sshdTarget(s, &cfg))
			sshdCheckSuccess(t, s, res)
			re := regexp.MustCompile(wantLog)
			s.WaitLog(t, sshdLogWait, re.MatchString)
		})
	}
}

// TestSSHDKnownHostsFiles checks that the known_hosts forms written by the
// harness are what the test cases above rely on.
func TestSSHDKnownHostsFiles(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{HostKeyTypes: []string{sshdtest.KeyEd25519}, HostCertificate: true})
	tests := []struct {
		name string
		form sshdtest.KnownHostsForm
		want *regexp.Regexp
	}{
		{"plain", sshdtest.KnownHostsPlain, regexp.MustCompile(`^` + regexp.QuoteMeta(s.KnownHostsPattern()) + ` ssh-ed25519 `)},
		{"hashed", sshdtest.KnownHostsHashed, regexp.MustCompile(`^\|1\|[^ ]+ ssh-ed25519 `)},
		{"cert authority", sshdtest.KnownHostsCertAuthority, regexp.MustCompile(`^@cert-authority ` + regexp.QuoteMeta(s.KnownHostsPattern()) + ` ssh-ed25519 `)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := os.ReadFile(s.KnownHosts(t, "kh_"+strings.ReplaceAll(tt.name, " ", "_"), tt.form))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want.Match(b) {
				t.Errorf("known_hosts = %q, want match of %s", b, tt.want)
			}
		})
	}
}

// sshdAuthLine matches sshd log lines (LogLevel VERBOSE) that show a client
// sent an authentication request.
var sshdAuthLine = regexp.MustCompile(`Accepted |Postponed |Failed |Invalid user|authenticating user|Disconnected from user`)

// sshdConnLines returns sshd's log lines about the client connection from
// local port port.
func sshdConnLines(t *testing.T, s *sshdtest.Server, port int) []string {
	t.Helper()
	var out []string
	for _, l := range s.LogLines(t) {
		if sshdClientPort(s, l) == port {
			out = append(out, l)
		}
	}
	return out
}

// sshdPortRE finds "port N" in an sshd log line.
var sshdPortRE = regexp.MustCompile(`\bport (\d+)`)

// sshdClientPort returns the client's port named in an sshd log line, or 0.
// The client's source address need not be the listen address (a connection
// to 127.0.0.5 comes from 127.0.0.1), so the line is matched by port, after
// dropping the server side of "Connection from A port N on B port P".
func sshdClientPort(s *sshdtest.Server, line string) int {
	line = strings.Replace(line, " on "+s.Addr+" port "+strconv.Itoa(s.Port), "", 1)
	m := sshdPortRE.FindStringSubmatch(line)
	if m == nil {
		return 0
	}
	p, err := strconv.Atoi(m[1])
	if err != nil {
		return 0
	}
	return p
}

// TestSSHDHostKeyMismatch checks that a host key rejected by known_hosts
// fails the probe with reason hostkey before any credential is offered:
// sshd's log must show no authentication request on that connection.
func TestSSHDHostKeyMismatch(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{HostKeyTypes: []string{sshdtest.KeyEd25519}, HostCertificate: true})
	k := s.ClientKey(t, "id", sshdtest.KeyEd25519, "")
	s.Authorize(t, k)
	p := sshdNewProber(t)

	// Control: a good probe's connection does show up as authenticating,
	// so the check below can tell the difference.
	good := &config.SSHProbe{
		User: s.User, PrivateKeyFile: k.Private, Commands: []config.Command{sshdNoiseCommand},
		KnownHostsFile: s.KnownHosts(t, "known_hosts_good", sshdtest.KnownHostsPlain),
	}
	sshdCheckSuccess(t, s, p.Probe(context.Background(), sshdTarget(s, good)))
	acceptRE := regexp.MustCompile(`^Accepted publickey for ` + regexp.QuoteMeta(s.User) + ` from `)
	controlPort := sshdClientPort(s, s.WaitLog(t, sshdLogWait, acceptRE.MatchString))
	if controlPort == 0 {
		t.Fatalf("no client port in the accept line; log:\n%s", s.Log(t))
	}
	seen := map[int]bool{controlPort: true}

	otherKey := sshdtest.GenerateKey(t, t.TempDir(), "other_host_key", sshdtest.KeyEd25519, "")
	otherCA := sshdtest.GenerateKey(t, t.TempDir(), "other_host_ca", sshdtest.KeyEd25519, "")
	tests := []struct {
		name string
		kh   func(t *testing.T) string
	}{
		{"another host key", func(t *testing.T) string {
			return s.KnownHosts(t, "known_hosts_other", sshdtest.KnownHostsPlain, otherKey)
		}},
		{"another host key hashed", func(t *testing.T) string {
			return s.KnownHosts(t, "known_hosts_other_hashed", sshdtest.KnownHostsHashed, otherKey)
		}},
		{"another host ca", func(t *testing.T) string {
			return s.KnownHosts(t, "known_hosts_other_ca", sshdtest.KnownHostsCertAuthority, otherCA)
		}},
	}
	// preauthEnd matches the line sshd logs when an unauthenticated
	// connection ends.
	preauthEnd := regexp.MustCompile(`^(Connection closed|Connection reset|Disconnected from|Received disconnect from) .*\[preauth\]$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.SSHProbe{
				User: s.User, PrivateKeyFile: k.Private, Commands: []config.Command{sshdNoiseCommand},
				KnownHostsFile: tt.kh(t),
			}
			res := p.Probe(context.Background(), sshdTarget(s, cfg))
			if res.Success || res.Reason != probe.ReasonHostKey {
				t.Fatalf("Success = %v, probe.Reason = %q, Err = %v; want reason %q", res.Success, res.Reason, res.Err, probe.ReasonHostKey)
			}
			if res.SSH == nil || res.SSH.Connect <= 0 || res.SSH.Handshake <= 0 || res.SSH.Auth != 0 {
				t.Errorf("SSH result = %+v, want Connect and Handshake > 0 and no Auth phase", res.SSH)
			}
			if len(res.SSH.Commands) != 1 || res.SSH.Commands[0].Ran {
				t.Errorf("commands = %+v, want one that did not run", res.SSH.Commands)
			}
			// The connection of this probe is the one whose pre-auth end
			// sshd logs next. If the prober had sent a credential, sshd
			// would log "... authenticating user ..." instead and this
			// times out.
			line := s.WaitLog(t, sshdLogWait, func(l string) bool {
				return preauthEnd.MatchString(l) && !seen[sshdClientPort(s, l)]
			})
			port := sshdClientPort(s, line)
			seen[port] = true
			for _, l := range sshdConnLines(t, s, port) {
				if sshdAuthLine.MatchString(l) {
					t.Errorf("sshd saw an authentication attempt on the rejected connection (port %d): %q", port, l)
				}
			}
		})
	}

	// The detector itself: the control connection did authenticate.
	var controlAuth bool
	for _, l := range sshdConnLines(t, s, controlPort) {
		controlAuth = controlAuth || sshdAuthLine.MatchString(l)
	}
	if !controlAuth {
		t.Errorf("no authentication line for the control connection (port %d); log:\n%s", controlPort, s.Log(t))
	}
}

// TestSSHDCommands checks exit status and stream handling of commands run
// by the login shell of a real sshd.
func TestSSHDCommands(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{HostKeyTypes: []string{sshdtest.KeyEd25519}})
	k := s.ClientKey(t, "id", sshdtest.KeyEd25519, "")
	s.Authorize(t, k)
	kh := s.KnownHosts(t, "known_hosts", sshdtest.KnownHostsPlain)
	p := sshdNewProber(t)

	tests := []struct {
		name        string
		commands    []config.Command
		wantSuccess bool
		wantReason  probe.Reason
		want        []probe.CommandResult // compared on Name, Ran, ExitStatus, Hash, Bytes, probe.Reason
	}{
		{
			name:        "stderr noise is not a failure",
			commands:    []config.Command{sshdNoiseCommand},
			wantSuccess: true,
			want:        []probe.CommandResult{{Name: "noise", Ran: true, Hash: testHash([]byte("out\n")), Bytes: 4}},
		},
		{
			name:       "non-zero exit",
			commands:   []config.Command{{Name: "exit3", Run: "exit 3"}},
			wantReason: probe.ReasonCommand,
			want:       []probe.CommandResult{{Name: "exit3", Ran: true, ExitStatus: 3, Hash: testHash([]byte("")), Reason: probe.ReasonCommand}},
		},
		{
			name: "output before a non-zero exit",
			commands: []config.Command{
				sshdNoiseCommand,
				{Name: "partial", Run: "printf abc; exit 7"},
			},
			wantReason: probe.ReasonCommand,
			want: []probe.CommandResult{
				{Name: "noise", Ran: true, Hash: testHash([]byte("out\n")), Bytes: 4},
				{Name: "partial", Ran: true, ExitStatus: 7, Hash: testHash([]byte("abc")), Bytes: 3, Reason: probe.ReasonCommand},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.SSHProbe{User: s.User, PrivateKeyFile: k.Private, KnownHostsFile: kh, Commands: tt.commands}
			res := p.Probe(context.Background(), sshdTarget(s, cfg))
			if res.Success != tt.wantSuccess || res.Reason != tt.wantReason {
				t.Fatalf("Success = %v, probe.Reason = %q, Err = %v; want %v, %q", res.Success, res.Reason, res.Err, tt.wantSuccess, tt.wantReason)
			}
			if res.SSH == nil || len(res.SSH.Commands) != len(tt.want) {
				t.Fatalf("SSH result = %+v, want %d commands", res.SSH, len(tt.want))
			}
			for i, w := range tt.want {
				g := res.SSH.Commands[i]
				if g.Name != w.Name || g.Ran != w.Ran || g.ExitStatus != w.ExitStatus || g.Hash != w.Hash ||
					g.Bytes != w.Bytes || g.Reason != w.Reason {
					t.Errorf("command %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// TestSSHDConcurrentProbes runs the same probe 20 times at once against one
// sshd (on a non-default loopback address); all must succeed, which needs
// the harness's MaxStartups above OpenSSH's default of 10 unauthenticated
// connections.
func TestSSHDConcurrentProbes(t *testing.T) {
	const n = 20
	s := sshdtest.Start(t, sshdtest.Options{Addr: "127.0.0.5", HostKeyTypes: []string{sshdtest.KeyEd25519}})
	k := s.ClientKey(t, "id", sshdtest.KeyEd25519, "")
	s.Authorize(t, k)
	cfg := &config.SSHProbe{
		User: s.User, PrivateKeyFile: k.Private, Commands: []config.Command{sshdNoiseCommand},
		KnownHostsFile: s.KnownHosts(t, "known_hosts", sshdtest.KnownHostsPlain),
	}
	target := sshdTarget(s, cfg)
	p := sshdNewProber(t)

	results := make([]probe.Result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i] = p.Probe(context.Background(), target)
		})
	}
	close(start)
	wg.Wait()
	for i, res := range results {
		t.Run("probe "+strconv.Itoa(i), func(t *testing.T) {
			sshdCheckSuccess(t, s, res)
		})
	}
	if got := p.ConnectionsOpened(); got != n {
		t.Errorf("ConnectionsOpened = %d, want %d", got, n)
	}
}
