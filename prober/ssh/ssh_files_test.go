package ssh

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/fileload"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// fileWait bounds every check and probe in these tests: refusing a file
// must not wait for anything.
const fileWait = 2 * time.Second

// fileSettings returns, for each file setting, how to point a probe config at
// path while every other file stays valid.
func fileSettings(t *testing.T, f *fixture, dir string) []struct {
	what  string
	limit int64
	set   func(c *config.SSHProbe, path string)
} {
	enc := writeFile(t, dir, "id_enc", sshkeys.OpenSSH(t, f.user, "passphrase"))
	return []struct {
		what  string
		limit int64
		set   func(c *config.SSHProbe, path string)
	}{
		{"private_key_file", fileload.MaxSecretSize, func(c *config.SSHProbe, p string) { c.PrivateKeyFile = p }},
		{"passphrase_file", fileload.MaxSecretSize, func(c *config.SSHProbe, p string) {
			c.PrivateKeyFile, c.PassphraseFile = enc, p
		}},
		{"certificate_file", fileload.MaxSecretSize, func(c *config.SSHProbe, p string) { c.CertificateFile = p }},
		{"password_file", fileload.MaxSecretSize, func(c *config.SSHProbe, p string) { c.PasswordFile = p }},
		{"known_hosts_file", fileload.MaxKnownHostsSize, func(c *config.SSHProbe, p string) { c.KnownHostsFile = p }},
	}
}

// TestSSHCheckFilesRefusesUnsafeFiles points each file setting at a FIFO,
// /dev/zero, an oversized file and a directory: CheckFiles, which start,
// reload and --config.check run, must refuse each at once and say which
// set, setting and file, and what the file is.
func TestSSHCheckFilesRefusesUnsafeFiles(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	for _, s := range fileSettings(t, f, t.TempDir()) {
		dir := t.TempDir()
		for _, u := range testutil.UnsafeFiles(t, dir, s.limit) {
			t.Run(s.what+"/"+u.Name, func(t *testing.T) {
				c := f.cfg()
				s.set(c, u.Path)
				cfg := &config.Config{HostSets: []config.HostSet{{Name: "s", Probes: config.Probes{SSH: c}}}}
				err := testutil.Quickly(t, fileWait, []string{u.Path}, func() error { return CheckFiles(cfg) })
				if err == nil {
					t.Fatal("CheckFiles accepted the file")
				}
				for _, w := range []string{`host set "s"`, s.what, u.Path, u.Want} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			})
		}
	}
}

// TestSSHCheckFilesRefusesUnsafeHopAndAnswerFiles is the same for the files
// of a proxy_jump hop (its key, password and known_hosts files) and for
// keyboard_interactive answer files, of the ssh block and of a hop.
func TestSSHCheckFilesRefusesUnsafeHopAndAnswerFiles(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	hop := func(c *config.SSHProbe) *config.ProxyJump {
		c.ProxyJump = []config.ProxyJump{{Host: "127.0.0.1:22", User: "u", PrivateKeyFile: f.keyFile, KnownHostsFile: f.knownHosts}}
		return &c.ProxyJump[0]
	}
	answer := func(p string) []config.KeyboardInteractiveAnswer {
		return []config.KeyboardInteractiveAnswer{{Prompt: "(?i)code", AnswerFile: p}}
	}
	const viaHop = "proxy_jump[0] (127.0.0.1:22)"
	settings := []struct {
		hop, what string
		limit     int64
		set       func(c *config.SSHProbe, path string)
	}{
		{"", "keyboard_interactive answer_file", fileload.MaxSecretSize, func(c *config.SSHProbe, p string) { c.KeyboardInteractive = answer(p) }},
		{viaHop, "private_key_file", fileload.MaxSecretSize, func(c *config.SSHProbe, p string) { hop(c).PrivateKeyFile = p }},
		{viaHop, "password_file", fileload.MaxSecretSize, func(c *config.SSHProbe, p string) { hop(c).PasswordFile = p }},
		{viaHop, "keyboard_interactive answer_file", fileload.MaxSecretSize, func(c *config.SSHProbe, p string) {
			hop(c).KeyboardInteractive = answer(p)
		}},
		{viaHop, "known_hosts_file", fileload.MaxKnownHostsSize, func(c *config.SSHProbe, p string) { hop(c).KnownHostsFile = p }},
	}
	for _, s := range settings {
		dir := t.TempDir()
		for _, u := range testutil.UnsafeFiles(t, dir, s.limit) {
			t.Run(s.hop+" "+s.what+"/"+u.Name, func(t *testing.T) {
				c := f.cfg()
				s.set(c, u.Path)
				cfg := &config.Config{HostSets: []config.HostSet{{Name: "s", Probes: config.Probes{SSH: c}}}}
				err := testutil.Quickly(t, fileWait, []string{u.Path}, func() error { return CheckFiles(cfg) })
				if err == nil {
					t.Fatal("CheckFiles accepted the file")
				}
				for _, w := range []string{`host set "s"`, s.hop, s.what, u.Path, u.Want} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			})
		}
	}
}

// TestSSHProbeRefusesUnsafeFiles is the same through a probe, whose
// credential cache loads the files: each must fail at once with reason
// config, naming the file, without dialling the server.
func TestSSHProbeRefusesUnsafeFiles(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	for _, s := range fileSettings(t, f, t.TempDir()) {
		dir := t.TempDir()
		for _, u := range testutil.UnsafeFiles(t, dir, s.limit) {
			t.Run(s.what+"/"+u.Name, func(t *testing.T) {
				c := f.cfg()
				s.set(c, u.Path)
				res := testutil.Quickly(t, fileWait, []string{u.Path}, func() probe.Result {
					return p.Probe(context.Background(), testTarget(f.srv.Port, c))
				})
				checkReason(t, res, probe.ReasonConfig)
				if !errors.Is(res.Err, errConfig) {
					t.Errorf("error %v does not wrap errConfig", res.Err)
				}
				for _, w := range []string{s.what, u.Path, u.Want} {
					if !strings.Contains(res.Err.Error(), w) {
						t.Errorf("error %q lacks %q", res.Err, w)
					}
				}
			})
		}
	}
	if n := f.srv.Accepted(); n != 0 {
		t.Errorf("refused files dialled the server %d times", n)
	}
}

// TestSSHCacheRereadRefusesUnsafeFiles replaces the key and known_hosts
// files of a working target by a FIFO and by a link to /dev/zero: the
// cache notices the change and re-reads through the same bounded load, so
// the replacement is refused at once, the last good version stays in use
// (the probe still succeeds) and the failure is reported to the file hook;
// the real file's return is reported too.
func TestSSHCacheRereadRefusesUnsafeFiles(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	events := recordFileChanges(p)
	tg := testTarget(f.srv.Port, f.cfg())
	checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []struct{ what, path string }{
		{"private_key_file", f.keyFile},
		{"known_hosts_file", f.knownHosts},
	} {
		good, err := os.ReadFile(file.path)
		if err != nil {
			t.Fatal(err)
		}
		for _, repl := range []struct{ name, target, want string }{
			{"fifo", fifo, "named pipe (FIFO)"},
			{"dev zero", "/dev/zero", "character device"},
		} {
			t.Run(file.what+"/"+repl.name, func(t *testing.T) {
				// Swap the file atomically, as a deployment tool would.
				tmp := file.path + ".new"
				if err := os.Symlink(repl.target, tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, file.path); err != nil {
					t.Fatal(err)
				}
				events.reset()
				res := testutil.Quickly(t, fileWait, []string{fifo}, func() probe.Result { return p.Probe(context.Background(), tg) })
				checkReason(t, res, probe.ReasonNone)
				err := events.lastErr(t, file.path)
				for _, w := range []string{file.what, file.path, repl.want} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("reported error %q lacks %q", err, w)
					}
				}
				// Reported once per version, not once per probe.
				checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
				if n := events.count(); n != 1 {
					t.Errorf("%d reports for one broken version, want 1", n)
				}
				writeFile(t, filepath.Dir(file.path), filepath.Base(tmp), good)
				if err := os.Rename(tmp, file.path); err != nil {
					t.Fatal(err)
				}
				checkReason(t, p.Probe(context.Background(), tg), probe.ReasonNone)
				if err := events.lastErr(t, file.path); err != nil {
					t.Errorf("the good file's return was reported as %v", err)
				}
			})
		}
	}
}

// TestSSHCertificateFileBounded checks that a certificate file of exactly
// the cap is still read (and refused only for what it holds), so the cap is
// where the documentation puts it.
func TestSSHCertificateFileBounded(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	ca := sshkeys.Generate(t, "ed25519")
	line := ssh.MarshalAuthorizedKey(sshkeys.SignCert(t, ca, f.user.Pub, ssh.UserCert, sshserver.DefaultUser))
	pad := make([]byte, fileload.MaxSecretSize-len(line))
	for i := range pad {
		pad[i] = '\n'
	}
	atCap := writeFile(t, t.TempDir(), "cert.pub", append(line, pad...))
	c := f.cfg()
	c.CertificateFile = atCap
	cfg := &config.Config{HostSets: []config.HostSet{{Name: "s", Probes: config.Probes{SSH: c}}}}
	if err := CheckFiles(cfg); err != nil {
		t.Fatalf("certificate file of exactly %d bytes refused: %v", fileload.MaxSecretSize, err)
	}
	if err := os.WriteFile(atCap, append(append(line, pad...), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckFiles(cfg); err == nil || !strings.Contains(err.Error(), "larger than 1 MiB") {
		t.Fatalf("certificate file one byte over the cap: %v, want refused as larger than 1 MiB", err)
	}
}

// fileChanges records what a prober tells its OnFileChange hook.
type fileChanges struct {
	mu     sync.Mutex
	events []fileChange
}

type fileChange struct {
	paths []string
	err   error
}

// recordFileChanges sets a recorder as p's file hook.
func recordFileChanges(p *Prober) *fileChanges {
	fc := &fileChanges{}
	p.OnFileChange(func(paths []string, err error) {
		fc.mu.Lock()
		fc.events = append(fc.events, fileChange{paths, err})
		fc.mu.Unlock()
	})
	return fc
}

func (fc *fileChanges) reset() {
	fc.mu.Lock()
	fc.events = nil
	fc.mu.Unlock()
}

func (fc *fileChanges) count() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.events)
}

// lastErr returns the error of the last report, which must name path.
func (fc *fileChanges) lastErr(t *testing.T, path string) error {
	t.Helper()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.events) == 0 {
		t.Fatalf("no change of %s reported", path)
	}
	e := fc.events[len(fc.events)-1]
	if !slices.Contains(e.paths, path) {
		t.Fatalf("last report is about %v, want %s", e.paths, path)
	}
	return e.err
}
