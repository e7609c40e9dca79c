package ssh

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/sshdtest"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// processesWith returns the command lines of running processes whose
// argument list contains marker.
func processesWith(marker string) []string {
	var out []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(marker)) {
			out = append(out, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// TestSSHDCommandTimeout runs commands that outlive their timeout on a real
// sshd: each fails with reason timeout within the timeout plus the kill
// grace, publishes no hash, and leaves no process behind, also when the
// command ignores TERM. The first line of stderr is kept. sshd honours
// signal requests only for sessions of users other than root.
func TestSSHDCommandTimeout(t *testing.T) {
	sshdtest.RequireOpenSSH(t)
	// sshd signals only privilege-separated sessions, which a root login
	// is not: log in as an ordinary user.
	name, password := sshdtest.PasswordUser(t)
	s := sshdtest.Start(t, sshdtest.Options{HostKeyTypes: []string{sshdtest.KeyEd25519}, User: name, PasswordAuthentication: true})
	pw := s.WriteSecret(t, "password", password)
	kh := s.KnownHosts(t, "known_hosts", sshdtest.KnownHostsPlain)
	p := sshdNewProber(t)
	marker := fmt.Sprintf("%d.%d", 40+os.Getpid()%50, time.Now().UnixNano()%1000)

	// finisher ends about 20 ms after its 1s timeout, between the TERM it
	// ignores and the KILL: it exits 0 with all its output, and is still
	// a timeout.
	finisher := fmt.Sprintf("1.02%d", os.Getpid()%1000)
	for _, tc := range []struct{ name, run, marker string }{
		{"sleep", "echo started; echo first-err >&2; echo second-err >&2; sleep " + marker, marker},
		{"ignoring TERM", "trap '' TERM; echo started; echo first-err >&2; sleep " + marker + "1; echo late", marker + "1"},
		{"finishing after the timeout", "trap '' TERM; echo started; echo first-err >&2; sleep " + finisher + "; echo late", finisher},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = time.Second
			cfg := &config.SSHProbe{
				User: s.User, PasswordFile: pw, KnownHostsFile: kh,
				Commands: []config.Command{{Name: "slow", Run: tc.run, Timeout: config.Duration(timeout)}},
			}
			res := p.Probe(context.Background(), sshdTarget(s, cfg))
			if res.Success || res.Reason != probe.ReasonTimeout {
				t.Fatalf("success=%v reason=%q err=%v, want reason timeout", res.Success, res.Reason, res.Err)
			}
			c := res.SSH.Commands[0]
			if c.Reason != probe.ReasonTimeout || c.Hash != 0 || c.SHA256 != "" || c.Bytes != 0 {
				t.Errorf("command reason=%q hash=%d sha256=%q bytes=%d, want timeout without hash", c.Reason, c.Hash, c.SHA256, c.Bytes)
			}
			if c.Duration > timeout+killGrace+2*time.Second {
				t.Errorf("command took %v with a %v timeout", c.Duration, timeout)
			}
			// sshd itself may write the first line: the test account has
			// no home directory.
			if l := c.StderrFirstLine; l != "first-err" && !strings.HasPrefix(l, "Could not chdir to home directory") {
				t.Errorf("StderrFirstLine = %q, want first-err", l)
			}
			// The remote process group got TERM, then KILL: give sshd a
			// moment to reap it, but no orphan may remain.
			deadline := time.Now().Add(5 * time.Second)
			for {
				left := processesWith("sleep " + tc.marker)
				if len(left) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("orphan processes after the timeout: %q\nsshd log:\n%s", left, s.Log(t))
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestSSHDLegacyAlgorithms reaches an sshd that offers only SHA-1 key
// exchange, a CBC cipher, hmac-sha1 and ssh-rsa host key signatures: a
// handshake failure naming the offer without the opt-in, a success with
// it, and the negotiated algorithms in the result.
func TestSSHDLegacyAlgorithms(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{
		HostKeyTypes: []string{sshdtest.KeyRSA},
		ExtraConfig: []string{
			"KexAlgorithms diffie-hellman-group14-sha1",
			"Ciphers aes128-cbc",
			"MACs hmac-sha1",
			"HostKeyAlgorithms ssh-rsa",
		},
	})
	k := s.ClientKey(t, "id", sshdtest.KeyEd25519, "")
	s.Authorize(t, k)
	kh := s.KnownHosts(t, "known_hosts", sshdtest.KnownHostsPlain)
	p := sshdNewProber(t)
	cfg := &config.SSHProbe{
		User: s.User, PrivateKeyFile: k.Private, KnownHostsFile: kh,
		Commands: []config.Command{sshdNoiseCommand},
	}
	res := p.Probe(context.Background(), sshdTarget(s, cfg))
	if res.Reason != probe.ReasonHandshake || !strings.Contains(res.Err.Error(), "diffie-hellman-group14-sha1") {
		t.Fatalf("without opt-in: success=%v reason=%q err=%v, want handshake naming the server's kex", res.Success, res.Reason, res.Err)
	}
	cfg.Algorithms = config.Algorithms{
		KEX: []string{"+diffie-hellman-group14-sha1"}, Ciphers: []string{"+aes128-cbc"}, HostKey: []string{"+ssh-rsa"},
	}
	res = p.Probe(context.Background(), sshdTarget(s, cfg))
	sshdCheckSuccess(t, s, res)
	ci := res.SSH.Conn
	if ci == nil || ci.KEX != "diffie-hellman-group14-sha1" || ci.Cipher != "aes128-cbc" || ci.MAC != "hmac-sha1" ||
		ci.HostKeyAlgorithm != "ssh-rsa" || !strings.HasPrefix(ci.ServerVersion, "SSH-2.0-OpenSSH_") {
		t.Errorf("connection info %+v", ci)
	}
}

// TestSSHDKeyboardInteractiveWithoutPAM logs in with a password to an sshd
// that offers only public key and keyboard-interactive, without PAM: sshd
// refuses keyboard-interactive without asking, which is reason auth, not
// handshake.
func TestSSHDKeyboardInteractiveWithoutPAM(t *testing.T) {
	s := sshdtest.Start(t, sshdtest.Options{HostKeyTypes: []string{sshdtest.KeyEd25519}, KbdInteractiveAuthentication: true})
	kh := s.KnownHosts(t, "known_hosts", sshdtest.KnownHostsPlain)
	cfg := &config.SSHProbe{
		User: s.User, PasswordFile: s.WriteSecret(t, "password", "not-this"), KnownHostsFile: kh,
		Commands: []config.Command{sshdNoiseCommand},
	}
	res := sshdNewProber(t).Probe(context.Background(), sshdTarget(s, cfg))
	if res.Success || res.Reason != probe.ReasonAuth {
		t.Fatalf("success=%v reason=%q err=%v, want reason auth\nsshd log:\n%s", res.Success, res.Reason, res.Err, s.Log(t))
	}
	t.Logf("error: %v", res.Err)
}
