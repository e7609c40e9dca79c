package ssh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/devicesim"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

const devicePassword = "cisco-ish"

// startDevice serves d on a free loopback port with a fresh host key (RSA
// for a legacy device, ed25519 otherwise: RSA keys are slow to generate)
// and returns the port and a known_hosts file for it.
func startDevice(t *testing.T, d *devicesim.Device) (int, string) {
	t.Helper()
	kind := "ed25519"
	if d.Legacy {
		kind = "rsa"
	}
	host := sshkeys.Generate(t, kind)
	d.HostKey = host.Signer
	if d.User == "" {
		d.User = "netops"
	}
	if d.Password == "" {
		d.Password = devicePassword
	}
	r, err := devicesim.Start(d, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r.Port, writeFile(t, t.TempDir(), "known_hosts", []byte(knownHostsFor(r.Port, host.Pub)))
}

// deviceCfg is an ssh block for a simulated device in mode.
func deviceCfg(t *testing.T, knownHosts, mode string, cmds ...config.Command) *config.SSHProbe {
	t.Helper()
	for i := range cmds {
		if cmds[i].Timeout == 0 {
			cmds[i].Timeout = config.Duration(5 * time.Second)
		}
	}
	return &config.SSHProbe{
		User:           "netops",
		PasswordFile:   writeFile(t, t.TempDir(), "password", []byte(devicePassword+"\n")),
		KnownHostsFile: knownHosts,
		MaxOutputBytes: config.DefaultMaxOutputBytes,
		Timeout:        config.Duration(5 * time.Second),
		Mode:           mode,
		Shell: config.Shell{
			Term: config.DefaultShellTerm, Width: config.DefaultShellWidth,
			Prompt: config.DefaultShellPrompt, Pager: config.DefaultShellPager, Exit: config.DefaultShellExit,
		},
		Commands: cmds,
	}
}

func showVersion() config.Command {
	return config.Command{Name: "version", Run: "show version", IgnoreLines: []string{"uptime is"}}
}

// lineHash is the documented hash of output in line mode: every kept line
// followed by LF.
func lineHash(lines ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n") + "\n"))
	return hex.EncodeToString(sum[:])
}

func probeDevice(t *testing.T, p *Prober, port int, cfg *config.SSHProbe) probe.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Probe(ctx, testTarget(port, cfg))
}

// TestDeviceModes runs show version against IOS-class simulated devices in
// exec and shell mode, with and without paging disabled, and checks that
// the hash ignores the uptime line: stable across polls, equal across
// devices of one version, different for another version.
func TestDeviceModes(t *testing.T) {
	p := newProber(t)
	r1, r2, r3 := &devicesim.Device{Hostname: "R1", Version: "15.2(4)M11"},
		&devicesim.Device{Hostname: "R2", Version: "15.2(4)M11"},
		&devicesim.Device{Hostname: "R3", Version: "15.7(3)M8"}
	port1, kh1 := startDevice(t, r1)
	port2, kh2 := startDevice(t, r2)
	port3, kh3 := startDevice(t, r3)

	for _, tc := range []struct {
		name  string
		mode  string
		setup []string
	}{
		{"exec", config.SSHModeExec, nil},
		{"shell with terminal length 0", config.SSHModeShell, []string{"terminal length 0"}},
		{"shell answering the pager", config.SSHModeShell, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hashes := map[string]string{}
			for _, d := range []struct {
				name string
				port int
				kh   string
			}{{"R1", port1, kh1}, {"R1 again", port1, kh1}, {"R2", port2, kh2}, {"R3", port3, kh3}} {
				cfg := deviceCfg(t, d.kh, tc.mode, showVersion())
				cfg.Shell.Setup = tc.setup
				res := probeDevice(t, p, d.port, cfg)
				checkReason(t, res, probe.ReasonNone)
				c := res.SSH.Commands[0]
				if c.ExitStatus != -1 || c.SHA256 == "" || c.Bytes < 500 {
					t.Fatalf("%s: exit=%d sha256=%q bytes=%d", d.name, c.ExitStatus, c.SHA256, c.Bytes)
				}
				hashes[d.name] = c.SHA256
			}
			if hashes["R1"] != hashes["R1 again"] {
				t.Errorf("hash of R1 drifted between polls: %s, %s", hashes["R1"], hashes["R1 again"])
			}
			if hashes["R1"] != hashes["R2"] {
				t.Errorf("same version, different hashes: R1 %s, R2 %s", hashes["R1"], hashes["R2"])
			}
			if hashes["R1"] == hashes["R3"] {
				t.Errorf("other version, same hash %s", hashes["R1"])
			}
		})
	}
	// Exec and shell mode see the same text, so they hash alike.
	execRes := probeDevice(t, p, port1, deviceCfg(t, kh1, config.SSHModeExec, showVersion()))
	shellRes := probeDevice(t, p, port1, deviceCfg(t, kh1, config.SSHModeShell, showVersion()))
	if a, b := execRes.SSH.Commands[0].SHA256, shellRes.SSH.Commands[0].SHA256; a != b || a == "" {
		t.Errorf("exec hash %s, shell hash %s", a, b)
	}
	if r1.Shells() == 0 || r1.Execs() == 0 {
		t.Errorf("device served %d shells and %d execs", r1.Shells(), r1.Execs())
	}
}

// TestDeviceShellOutput checks the extracted text of one short command
// exactly: no echo, no prompt, LF line ends, and the value label.
func TestDeviceShellOutput(t *testing.T) {
	p := newProber(t)
	port, kh := startDevice(t, &devicesim.Device{Hostname: "edge-1", Version: "1"})
	cfg := deviceCfg(t, kh, config.SSHModeShell,
		config.Command{Name: "host", Run: "show hostname", OutputLabel: true},
		config.Command{Name: "bad", Run: "show nonsense"})
	res := probeDevice(t, p, port, cfg)
	checkReason(t, res, probe.ReasonNone)
	host, bad := res.SSH.Commands[0], res.SSH.Commands[1]
	if want := lineHash("edge-1"); host.SHA256 != want || host.Bytes != int64(len("edge-1\n")) || host.Value != "edge-1" {
		t.Errorf("show hostname: sha256=%s bytes=%d value=%q, want sha256 %s of \"edge-1\\n\"", host.SHA256, host.Bytes, host.Value, want)
	}
	if want := lineHash("show nonsense", "^", "% Invalid input detected at '^' marker."); bad.SHA256 != want {
		t.Errorf("invalid command: sha256=%s, want %s", bad.SHA256, want)
	}
	if bad.Value != "" {
		t.Errorf("value %q without output_label", bad.Value)
	}
}

// TestDeviceFailures covers the device-mode failure reasons.
func TestDeviceFailures(t *testing.T) {
	p := newProber(t)

	t.Run("missing prompt is reason prompt within the timeout", func(t *testing.T) {
		port, kh := startDevice(t, &devicesim.Device{Hostname: "R9", Version: "1", NoPrompt: true})
		cfg := deviceCfg(t, kh, config.SSHModeShell, showVersion())
		cfg.Timeout = config.Duration(time.Second)
		cfg.Commands[0].Timeout = cfg.Timeout
		tg := testTarget(port, cfg)
		tg.Timeout = time.Second
		start := time.Now()
		res := p.Probe(context.Background(), tg)
		checkReason(t, res, probe.ReasonPrompt)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %v with a 1s timeout", took)
		}
		if c := res.SSH.Commands[0]; c.Ran || c.SHA256 != "" {
			t.Errorf("command ran=%v sha256=%q", c.Ran, c.SHA256)
		}
	})

	t.Run("exec without exit status and require_exit_status", func(t *testing.T) {
		port, kh := startDevice(t, &devicesim.Device{Hostname: "R8", Version: "1"})
		cfg := deviceCfg(t, kh, config.SSHModeExec, showVersion())
		cfg.RequireExitStatus = true
		res := probeDevice(t, p, port, cfg)
		checkReason(t, res, probe.ReasonSession)
		if c := res.SSH.Commands[0]; c.SHA256 != "" || c.Hash != 0 {
			t.Errorf("failed command published hash %q", c.SHA256)
		}
	})

	t.Run("legacy algorithms need the opt-in", func(t *testing.T) {
		port, kh := startDevice(t, &devicesim.Device{Hostname: "OLD", Version: "12.4", Legacy: true})
		cfg := deviceCfg(t, kh, config.SSHModeExec, showVersion())
		res := probeDevice(t, p, port, cfg)
		checkReason(t, res, probe.ReasonHandshake)
		if msg := res.Err.Error(); !strings.Contains(msg, "diffie-hellman-group14-sha1") || !strings.Contains(msg, "algorithms: {kex:") {
			t.Errorf("handshake error does not name the offered algorithm and the fix: %v", res.Err)
		}
		cfg.Algorithms = config.Algorithms{
			KEX: []string{"+diffie-hellman-group14-sha1"}, Ciphers: []string{"+aes128-cbc"}, HostKey: []string{"+ssh-rsa"},
		}
		res = probeDevice(t, p, port, cfg)
		checkReason(t, res, probe.ReasonNone)
		want := probe.ConnInfo{
			ServerVersion: "SSH-2.0-Cisco-1.25", KEX: "diffie-hellman-group14-sha1",
			Cipher: "aes128-cbc", MAC: "hmac-sha1", HostKeyAlgorithm: "ssh-rsa",
		}
		if res.SSH.Conn == nil || *res.SSH.Conn != want {
			t.Errorf("connection info %+v, want %+v", res.SSH.Conn, want)
		}
	})

	t.Run("wrong password is auth", func(t *testing.T) {
		port, kh := startDevice(t, &devicesim.Device{Hostname: "R7", Version: "1", Password: "other"})
		res := probeDevice(t, p, port, deviceCfg(t, kh, config.SSHModeExec, showVersion()))
		checkReason(t, res, probe.ReasonAuth)
	})
}

// TestDeviceShellReuse runs shell mode on a pooled connection: one new
// shell per probe, the connection kept.
func TestDeviceShellReuse(t *testing.T) {
	p := newProber(t)
	d := &devicesim.Device{Hostname: "R5", Version: "1"}
	port, kh := startDevice(t, d)
	cfg := deviceCfg(t, kh, config.SSHModeShell, showVersion())
	cfg.ReuseConnections = true
	cfg.Shell.Setup = []string{"terminal length 0"}
	var first string
	for i := range 3 {
		res := probeDevice(t, p, port, cfg)
		checkReason(t, res, probe.ReasonNone)
		if res.SSH.NewConnection != (i == 0) {
			t.Errorf("probe %d: NewConnection=%v", i, res.SSH.NewConnection)
		}
		if i == 0 {
			first = res.SSH.Commands[0].SHA256
		} else if got := res.SSH.Commands[0].SHA256; got != first {
			t.Errorf("probe %d: hash %s, first %s", i, got, first)
		}
	}
	if d.Shells() != 3 {
		t.Errorf("%d shells, want 3", d.Shells())
	}
}

// TestCommandTimeoutNoHash runs a command that never ends on a server that
// ignores signal requests: it fails with reason timeout soon after its
// timeout, publishes no hash, and the probe goes on with the next command.
func TestCommandTimeoutNoHash(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	const timeout = 300 * time.Millisecond
	cfg := f.cfg(
		config.Command{Name: "hang", Run: "sleep", Timeout: config.Duration(timeout)},
		config.Command{Name: "after", Run: "echo after", Timeout: config.Duration(5 * time.Second)},
	)
	res := newProber(t).Probe(context.Background(), testTarget(f.srv.Port, cfg))
	checkReason(t, res, probe.ReasonTimeout)
	hang, after := res.SSH.Commands[0], res.SSH.Commands[1]
	if hang.Reason != probe.ReasonTimeout || hang.Hash != 0 || hang.SHA256 != "" || hang.Bytes != 0 {
		t.Errorf("hang: reason=%q hash=%d sha256=%q bytes=%d", hang.Reason, hang.Hash, hang.SHA256, hang.Bytes)
	}
	if hang.Duration > timeout+2*killGrace+3*time.Second {
		t.Errorf("hang took %v with a %v timeout", hang.Duration, timeout)
	}
	// The in-process server ends the channel on close, so the connection
	// survives and the next command runs.
	if !after.Ran || after.Reason != probe.ReasonNone || after.SHA256 == "" {
		t.Errorf("after: ran=%v reason=%q err=%v", after.Ran, after.Reason, after.Err)
	}
}
