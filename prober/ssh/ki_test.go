package ssh

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// startKIServer serves an SSH server whose only authentication is the
// keyboard-interactive callback ki, and returns its port and a
// known_hosts file.
func startKIServer(t *testing.T, ki func(ssh.ConnMetadata, ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error)) (int, string) {
	t.Helper()
	host := sshkeys.Generate(t, "ed25519")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := sshserver.New(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln, &sshserver.Host{
			Name: "ki",
			Config: func() (*ssh.ServerConfig, error) {
				cfg := &ssh.ServerConfig{KeyboardInteractiveCallback: ki}
				cfg.AddHostKey(host.Signer)
				return cfg, nil
			},
			Exec: sshserver.Builtin,
		})
	}()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	port := ln.Addr().(*net.TCPAddr).Port
	return port, writeFile(t, t.TempDir(), "known_hosts", []byte(knownHostsFor(port, host.Pub)))
}

// TestKeyboardInteractiveRounds answers a TACACS-like dialogue: a visible
// username question, then a hidden password and a token question in a
// second round.
func TestKeyboardInteractiveRounds(t *testing.T) {
	const user, password, token = "tacuser", "s3cret", "424242"
	port, kh := startKIServer(t, func(meta ssh.ConnMetadata, ch ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
		a, err := ch("", "", []string{"Username: "}, []bool{true})
		if err != nil || len(a) != 1 || a[0] != user {
			return nil, errors.New("bad username")
		}
		a, err = ch("", "", []string{"Password: ", "Token code: "}, []bool{false, false})
		if err != nil || len(a) != 2 || a[0] != password || a[1] != token {
			return nil, errors.New("bad answers")
		}
		return &ssh.Permissions{}, nil
	})
	dir := t.TempDir()
	base := func() *config.SSHProbe {
		return &config.SSHProbe{
			User:           "netops",
			PasswordFile:   writeFile(t, dir, "password", []byte(password+"\n")),
			KnownHostsFile: kh,
			Commands:       []config.Command{{Name: "echo", Run: "echo hi"}},
		}
	}
	p := newProber(t)

	cfg := base()
	cfg.KeyboardInteractive = []config.KeyboardInteractiveAnswer{
		{Prompt: "(?i)^username", AnswerFile: writeFile(t, dir, "user", []byte(user+"\n"))},
		{Prompt: "(?i)token", AnswerFile: writeFile(t, dir, "token", []byte(token))},
	}
	res := p.Probe(context.Background(), testTarget(port, cfg))
	checkReason(t, res, probe.ReasonNone)

	// Without an answer for the token question: auth, naming the question
	// and never an answer.
	cfg = base()
	cfg.KeyboardInteractive = cfg.KeyboardInteractive[:0]
	cfg.KeyboardInteractive = append(cfg.KeyboardInteractive,
		config.KeyboardInteractiveAnswer{Prompt: "(?i)^username", AnswerFile: writeFile(t, dir, "user", []byte(user))})
	res = p.Probe(context.Background(), testTarget(port, cfg))
	checkReason(t, res, probe.ReasonAuth)
	msg := res.Err.Error()
	if !strings.Contains(msg, `"Token code:"`) {
		t.Errorf("error does not name the unanswered question: %v", res.Err)
	}
	for _, secret := range []string{password, token, user} {
		if strings.Contains(msg, secret) {
			t.Errorf("error reveals an answer: %v", res.Err)
		}
	}
}

// TestKeyboardInteractiveOnlyRefusal is a server that offers only
// keyboard-interactive and refuses it without asking anything, as OpenSSH
// without PAM does: that is an authentication failure, not a handshake one.
func TestKeyboardInteractiveOnlyRefusal(t *testing.T) {
	port, kh := startKIServer(t, func(ssh.ConnMetadata, ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
		return nil, errors.New("no PAM")
	})
	cfg := &config.SSHProbe{
		User:           "netops",
		PasswordFile:   writeFile(t, t.TempDir(), "password", []byte("pw")),
		KnownHostsFile: kh,
	}
	res := newProber(t).Probe(context.Background(), testTarget(port, cfg))
	checkReason(t, res, probe.ReasonAuth)
	t.Logf("error: %v", res.Err)
}

// TestAlgorithmNames pins config's copy of the algorithm names to what
// x/crypto/ssh implements.
func TestAlgorithmNames(t *testing.T) {
	s, ins := ssh.SupportedAlgorithms(), ssh.InsecureAlgorithms()
	for _, tc := range []struct {
		kind config.AlgorithmKind
		lib  []string
	}{
		{config.AlgorithmKEX, append(append(s.KeyExchanges, "curve25519-sha256@libssh.org"), ins.KeyExchanges...)},
		{config.AlgorithmCiphers, append(s.Ciphers, ins.Ciphers...)},
		{config.AlgorithmMACs, append(s.MACs, ins.MACs...)},
		{config.AlgorithmHostKey, append(s.HostKeys, ins.HostKeys...)},
	} {
		known := config.KnownAlgorithms(tc.kind)
		for _, n := range tc.lib {
			if !contains(known, n) {
				t.Errorf("%s: x/crypto/ssh implements %q, config does not know it", tc.kind, n)
			}
		}
		for _, n := range known {
			if !contains(tc.lib, n) {
				t.Errorf("%s: config knows %q, x/crypto/ssh does not implement it", tc.kind, n)
			}
		}
	}
	for _, n := range append(append(append(ins.KeyExchanges, ins.Ciphers...), ins.MACs...), ins.HostKeys...) {
		if !config.IsWeakAlgorithm(n) {
			t.Errorf("x/crypto/ssh calls %q insecure, config does not call it weak", n)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
