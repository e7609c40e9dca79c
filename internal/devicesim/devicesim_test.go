package devicesim_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/internal/devicesim"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
)

func start(t *testing.T, d *devicesim.Device) *devicesim.Running {
	t.Helper()
	kind := "ed25519"
	if d.Legacy {
		kind = "rsa"
	}
	d.HostKey = sshkeys.Generate(t, kind).Signer
	d.User, d.Password = "u", "pw"
	r, err := devicesim.Start(d, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func clientConfig(auth ssh.AuthMethod) *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User: "u", Auth: []ssh.AuthMethod{auth},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
	}
}

func kbd(pw string) ssh.AuthMethod {
	return ssh.KeyboardInteractive(func(_, _ string, q []string, echo []bool) ([]string, error) {
		if len(q) != 1 || q[0] != "Password: " || echo[0] {
			return nil, errors.New("unexpected questions")
		}
		return []string{pw}, nil
	})
}

func TestDevice(t *testing.T) {
	d := &devicesim.Device{Hostname: "R1", Version: "15.2"}
	r := start(t, d)

	if _, err := ssh.Dial("tcp", r.HostPort(), clientConfig(ssh.Password("pw"))); err == nil {
		t.Error("password authentication accepted; only keyboard-interactive should be")
	}
	c, err := ssh.Dial("tcp", r.HostPort(), clientConfig(kbd("pw")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("exec closes without exit status, uptime changes", func(t *testing.T) {
		var outs []string
		for range 2 {
			s, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			out, err := s.Output("show version")
			var missing *ssh.ExitMissingError
			if !errors.As(err, &missing) {
				t.Errorf("exec ended with %v, want no exit status", err)
			}
			if !strings.Contains(string(out), "Version 15.2,") || !strings.Contains(string(out), "\r\n") {
				t.Errorf("output %q", out)
			}
			outs = append(outs, string(out))
		}
		if outs[0] == outs[1] {
			t.Error("uptime did not change between calls")
		}
	})

	t.Run("shell needs a pty", func(t *testing.T) {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Shell(); err == nil {
			t.Error("shell without pty-req accepted")
		}
	})

	t.Run("shell pages until terminal length 0", func(t *testing.T) {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		in, _ := s.StdinPipe()
		out, _ := s.StdoutPipe()
		if err := s.RequestPty("vt100", 0, 80, ssh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Shell(); err != nil {
			t.Fatal(err)
		}
		readUntil := func(marker string) string {
			t.Helper()
			var b []byte
			buf := make([]byte, 1024)
			for !strings.HasSuffix(string(b), marker) {
				n, err := out.Read(buf)
				b = append(b, buf[:n]...)
				if err != nil {
					t.Fatalf("read until %q: %v after %q", marker, err, b)
				}
			}
			return string(b)
		}
		readUntil("R1#")
		_, _ = io.WriteString(in, "show version\r")
		page := readUntil(" --More-- ")
		if !strings.HasPrefix(page, "show version\r\n") || strings.Count(page, "\r\n") != 24 {
			t.Errorf("first page has %d lines: %q", strings.Count(page, "\r\n"), page)
		}
		_, _ = io.WriteString(in, " ")
		readUntil("R1#")
		_, _ = io.WriteString(in, "terminal length 0\rshow version\r")
		rest := readUntil("R1#")
		if strings.Contains(rest, "--More--") {
			t.Errorf("paged after terminal length 0: %q", rest)
		}
		_, _ = io.WriteString(in, "exit\r")
		if err := s.Wait(); err != nil {
			t.Errorf("shell exit: %v", err)
		}
	})
}

func TestLegacyDevice(t *testing.T) {
	r := start(t, &devicesim.Device{Hostname: "OLD", Version: "12.4", Legacy: true})
	if _, err := ssh.Dial("tcp", r.HostPort(), clientConfig(kbd("pw"))); err == nil {
		t.Fatal("legacy device reached with the default algorithms")
	}
	cfg := clientConfig(kbd("pw"))
	cfg.KeyExchanges = []string{ssh.InsecureKeyExchangeDH14SHA1}
	cfg.Ciphers = []string{ssh.InsecureCipherAES128CBC}
	cfg.MACs = []string{ssh.HMACSHA1}
	cfg.HostKeyAlgorithms = []string{ssh.KeyAlgoRSA}
	c, err := ssh.Dial("tcp", r.HostPort(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}
