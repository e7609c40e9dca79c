package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// runOnceArgs runs the command line args with stdin and returns the exit
// code, stdout and stderr.
func runOnceArgs(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runContextIn(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// tableRows splits table output into rows of fields, header first.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func TestOnceHostsOnTheCommandLine(t *testing.T) {
	// A listener on 127.0.0.1 only: the same port on 127.0.0.2 and
	// 127.0.0.10 refuses.
	open := testutil.TCPListener(t, "127.0.0.1")
	closed := testutil.FreePort(t, "127.0.0.1")
	hosts := []string{"127.0.0.10", "127.0.0.2", "127.0.0.1"}
	tcp := fmt.Sprintf("--once.probe=tcp:%d", open)

	t.Run("natural order, one row per port", func(t *testing.T) {
		code, out, errb := runOnceArgs(t, "", append([]string{"--once", fmt.Sprintf("--once.probe=tcp:%d,%d", max(open, closed), min(open, closed))}, hosts...)...)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, out, errb)
		}
		rows := tableRows(out)
		if got := strings.Join(rows[0], " "); got != "SET HOST PROBE RESULT LATENCY REASON DETAIL" {
			t.Errorf("header %q", got)
		}
		lo, hi := min(open, closed), max(open, closed)
		var got []string
		for _, r := range rows[1:] {
			got = append(got, r[1]+" "+r[2]+" "+r[3])
		}
		res := func(host string, port int) string {
			if host == "127.0.0.1" && port == open {
				return "ok"
			}
			return "FAIL"
		}
		var want []string
		for _, h := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.10"} {
			for _, p := range []int{lo, hi} {
				want = append(want, fmt.Sprintf("%s tcp:%d %s", h, p, res(h, p)))
			}
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if strings.Contains(errb, "ICMP socket mode") || strings.Contains(errb, "ICMP sockets") {
			t.Errorf("a run without ICMP targets logs the ICMP socket mode: %s", errb)
		}
	})
	for _, tc := range []struct {
		filter string
		want   []string
	}{
		{"up", []string{"127.0.0.1"}},
		{"down", []string{"127.0.0.2", "127.0.0.10"}},
	} {
		t.Run("filter "+tc.filter, func(t *testing.T) {
			code, out, errb := runOnceArgs(t, "", append([]string{"--once", tcp, "--once.filter=" + tc.filter}, hosts...)...)
			if code != 1 {
				t.Fatalf("exit %d, want 1 whatever the filter shows; stderr %q", code, errb)
			}
			var got []string
			for _, r := range tableRows(out)[1:] {
				got = append(got, r[1])
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("hosts %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		code, out, _ := runOnceArgs(t, "", "--once", "--once.format=json", tcp, "127.0.0.[1-2]")
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		var rows []onceResult
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(rows) != 2 || rows[0].Host != "127.0.0.1" || !rows[0].Success || rows[0].Port != open || rows[0].Set != cliSet ||
			rows[1].Host != "127.0.0.2" || rows[1].Success || rows[1].Reason != "refused" {
			t.Errorf("rows %+v", rows)
		}
		if !strings.Contains(out, `"port": `+strconv.Itoa(open)) {
			t.Errorf("no port field in %s", out)
		}
	})
	t.Run("grouped", func(t *testing.T) {
		code, out, _ := runOnceArgs(t, "", append([]string{"--once", tcp, "--once.output=grouped", "127.0.0.3"}, hosts...)...)
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		want := fmt.Sprintf(`== cli tcp:%d
----------------
127.0.0.[2-3,10] (3 hosts)
----------------
FAIL refused
----------------
127.0.0.1 (1 host)
----------------
ok
`, open)
		if out != want {
			t.Errorf("output:\n%s\nwant:\n%s", out, want)
		}
	})
	t.Run("grouped json", func(t *testing.T) {
		_, out, _ := runOnceArgs(t, "", append([]string{"--once", tcp, "--once.output=grouped", "--once.format=json"}, hosts...)...)
		var groups []onceGroup
		if err := json.Unmarshal([]byte(out), &groups); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(groups) != 2 || groups[0].Hosts != "127.0.0.[2,10]" || groups[0].Count != 2 || groups[0].Success || groups[0].Reason != "refused" ||
			groups[1].Hosts != "127.0.0.1" || !groups[1].Success || groups[1].Port != open || groups[1].Probe != "tcp" {
			t.Errorf("groups %+v", groups)
		}
	})
}

// sshFleet is a few in-process SSH servers on 127.0.0.1 to 127.0.0.4 that
// answer "uname -r" differently, a known_hosts file and a client key.
type sshFleet struct {
	hosts      []string
	refused    string
	key, known string
}

func newSSHFleet(t *testing.T) *sshFleet {
	t.Helper()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	host, err := ssh.NewSignerFromSigner(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
	user, err := ssh.NewSignerFromSigner(userPriv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(userPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &sshFleet{key: writeFile(t, dir, "id_ed25519", string(pem.EncodeToMemory(block)))}
	var known strings.Builder
	for i, addr := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		old := i == 3
		srv := testutil.StartSSHServer(t, sshserver.TestOptions{
			Addr: addr, HostSigners: []ssh.Signer{host}, AuthorizedKeys: []ssh.PublicKey{user.PublicKey()},
			Exec: func(cmd string) func(*sshserver.Session) {
				if cmd != "uname -r" {
					return sshserver.Builtin(cmd)
				}
				return func(s *sshserver.Session) {
					if old {
						_, _ = s.Write([]byte("5.10.0\n"))
						_, _ = s.Stderr().Write([]byte("uname: kernel too old\nsecond line\n"))
						s.Exit(2)
						return
					}
					_, _ = s.Write([]byte("6.1.0\n"))
					s.Exit(0)
				}
			},
		})
		hp := net.JoinHostPort(addr, strconv.Itoa(srv.Port))
		f.hosts = append(f.hosts, hp)
		known.WriteString(knownhosts.Line([]string{knownhosts.Normalize(hp)}, host.PublicKey()) + "\n")
	}
	f.refused = net.JoinHostPort("127.0.0.5", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")))
	f.known = writeFile(t, dir, "known_hosts", known.String())
	return f
}

func (f *sshFleet) args(extra ...string) []string {
	args := []string{
		"--once", "--once.probe=ssh", "--once.ssh.user=" + sshserver.DefaultUser, "--once.ssh.key=" + f.key,
		"--once.ssh.known-hosts=" + f.known, "--once.ssh.command=uname -r", "--once.timeout=10s",
	}
	return append(append(args, extra...), append([]string{f.refused}, f.hosts...)...)
}

func TestOnceSSH(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	f := newSSHFleet(t)

	t.Run("table names the failing command", func(t *testing.T) {
		code, out, errb := runOnceArgs(t, "", f.args()...)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, out, errb)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 6 {
			t.Fatalf("want header and 5 rows, got\n%s", out)
		}
		for i, host := range append(f.hosts, f.refused) {
			if !strings.Contains(lines[1+i], host) {
				t.Errorf("row %d %q, want host %s (natural order)", i, lines[1+i], host)
			}
		}
		if !strings.Contains(lines[4], "FAIL") || !strings.Contains(lines[4], "uname: exit 2: uname: kernel too old") {
			t.Errorf("row of the old host %q: want the failing command, its exit status and first stderr line", lines[4])
		}
		if !strings.Contains(lines[5], "refused") {
			t.Errorf("row of the refusing host %q", lines[5])
		}
		if strings.Contains(errb, "ICMP socket mode") {
			t.Errorf("an SSH-only run logs the ICMP socket mode: %s", errb)
		}
	})
	t.Run("grouped", func(t *testing.T) {
		code, out, errb := runOnceArgs(t, "", f.args("--once.output=grouped")...)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr %q", code, errb)
		}
		want := `== cli ssh uname (uname -r)
----------------
127.0.0.[1-3] (3 hosts)
----------------
6.1.0
----------------
127.0.0.4 (1 host)
----------------
5.10.0
FAIL exit 2: uname: kernel too old
----------------
127.0.0.5 (1 host)
----------------
FAIL not run: ssh refused
`
		// The hosts carry their ports; fold them out for the comparison.
		got := out
		for _, h := range append(f.hosts, f.refused) {
			hh, _, _ := net.SplitHostPort(h)
			got = strings.ReplaceAll(got, h, hh)
		}
		if got != want && !strings.Contains(out, "127.0.0.[1-3]") {
			// With distinct ports the hosts are not foldable: compare the
			// blocks without the host lines.
			got = dropHostLines(out)
			want = dropHostLines(want)
		}
		if got != want {
			t.Errorf("output:\n%s\nwant:\n%s", out, want)
		}
	})
	t.Run("grouped json", func(t *testing.T) {
		_, out, _ := runOnceArgs(t, "", f.args("--once.output=grouped", "--once.format=json")...)
		var groups []onceGroup
		if err := json.Unmarshal([]byte(out), &groups); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(groups) != 3 {
			t.Fatalf("want 3 groups, got %+v", groups)
		}
		g := groups[0]
		if g.Count != 3 || g.Output != "6.1.0\n" || !g.Success || g.Command != "uname" || g.Run != "uname -r" || g.ExitStatus == nil || *g.ExitStatus != 0 {
			t.Errorf("majority group %+v", g)
		}
		g = groups[1]
		if g.Count != 1 || g.Output != "5.10.0\n" || g.Success || g.Reason != "command" || *g.ExitStatus != 2 || g.StderrFirstLine != "uname: kernel too old" || g.Hosts != f.hosts[3] {
			t.Errorf("minority group %+v", g)
		}
		g = groups[2]
		if g.Count != 1 || g.Ran || g.Reason != "refused" || g.Hosts != f.refused {
			t.Errorf("refusing host's group %+v", g)
		}
	})
	t.Run("grouped from a config on stdin", func(t *testing.T) {
		cfg := fmt.Sprintf(`host_sets:
  - name: fleet
    hosts: [%q, %q]
    probes:
      ssh:
        user: %s
        private_key_file: %s
        known_hosts_file: %s
        commands: [{name: kernel, run: "uname -r"}]
`, f.hosts[0], f.hosts[3], sshserver.DefaultUser, f.key, f.known)
		_, out, errb := runOnceArgs(t, cfg, "--once", "--config.file=-", "--once.output=grouped", "--once.format=json")
		var groups []onceGroup
		if err := json.Unmarshal([]byte(out), &groups); err != nil {
			t.Fatalf("not JSON: %v\n%s\n%s", err, out, errb)
		}
		if len(groups) != 2 || groups[0].Set != "fleet" || groups[0].Command != "kernel" || groups[0].Output != "6.1.0\n" || groups[1].Output != "5.10.0\n" {
			t.Errorf("groups %+v", groups)
		}
	})
	t.Run("json rows carry stderr", func(t *testing.T) {
		_, out, _ := runOnceArgs(t, "", f.args("--once.format=json")...)
		var rows []onceResult
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(rows) != 5 || rows[3].SSH == nil || len(rows[3].SSH.Commands) != 1 {
			t.Fatalf("rows %+v", rows)
		}
		if c := rows[3].SSH.Commands[0]; c.StderrFirstLine != "uname: kernel too old" || c.ExitStatus != 2 || c.Run != "uname -r" {
			t.Errorf("command %+v", c)
		}
	})
}

// dropHostLines removes the host lines of grouped output.
func dropHostLines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, " host") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestOnceFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"hosts without --once", []string{"127.0.0.1"}, 2, "unexpected 127.0.0.1: hosts as arguments need --once"},
		{"once flag without --once", []string{"--once.probe=ssh"}, 2, "--once.probe needs --once"},
		{"hosts and a config file", []string{"--once", "--config.file=x.yml", "127.0.0.1"}, 2, "not both"},
		{"probe flag with a config file", []string{"--once", "--config.file=x.yml", "--once.probe=icmp"}, 2, "--once.probe applies to hosts given as arguments"},
		{"unknown probe", []string{"--once", "--once.probe=udp", "127.0.0.1"}, 1, "--once.probe=udp: want icmp, tcp:PORT[,PORT...] or ssh"},
		{"bad port", []string{"--once", "--once.probe=tcp:22,x", "127.0.0.1"}, 1, `"x" is not a port`},
		{"duplicate port", []string{"--once", "--once.probe=tcp:22", "--once.probe=tcp:22", "127.0.0.1"}, 1, "port 22 is listed twice"},
		{"bad host", []string{"--once", "web[01-"}, 1, `command line: hosts[0]: entry "web[01-" has an unclosed '['`},
		{"ssh flag without ssh probe", []string{"--once", "--once.ssh.command=uptime", "127.0.0.1"}, 1, "--once.ssh.command needs --once.probe=ssh"},
		{"zero timeout", []string{"--once", "--once.timeout=0s", "127.0.0.1"}, 2, "--once.timeout must be positive"},
		{"zero concurrency", []string{"--once", "--once.concurrency=0", "127.0.0.1"}, 2, "--once.concurrency must be between 1 and"},
		{"bad filter", []string{"--once", "--once.filter=sideways", "127.0.0.1"}, 2, "must be one of up,down"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errb := runOnceArgs(t, "", tc.args...)
			if code != tc.code || !strings.Contains(errb, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q (stdout %q)", code, errb, tc.code, tc.want, out)
			}
		})
	}
}

func TestConfigFromStdin(t *testing.T) {
	open := testutil.TCPListener(t, "127.0.0.1")
	good := fmt.Sprintf("host_sets:\n  - name: web\n    hosts: [\"127.0.0.1:%d\"]\n    probes: {tcp: {}}\n", open)
	code, out, errb := runOnceArgs(t, good, "--once", "--config.file=-")
	if code != 0 || !strings.Contains(out, "web") || !strings.Contains(out, "ok") {
		t.Errorf("exit %d, stdout %q, stderr %q; want the set probed ok", code, out, errb)
	}
	code, _, errb = runOnceArgs(t, "host_sets:\n  - name: web\n    hosts: [h]\n    probes: {tcp: {port: 0}}\n    bogus: 1\n", "--config.check", "--config.file=-")
	if code != 1 || !strings.Contains(errb, "<stdin>:5:") {
		t.Errorf("exit %d, stderr %q; want exit 1 naming <stdin>:5", code, errb)
	}
}

func TestCommandNames(t *testing.T) {
	got := commandNames([]string{"uname -r", "/usr/bin/df -h", "uname -a", "  ", "echo $HOME", "./run.sh"})
	want := []string{"uname", "df", "uname_2", "cmd", "echo", "run.sh"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("commandNames = %q, want %q", got, want)
	}
}

func TestReloadOfStdinConfigRefused(t *testing.T) {
	rl := newReloader(stdinConfig, config.Default(), nil, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err := rl.reload(); !errors.Is(err, errStdinConfig) {
		t.Errorf("reload of a config read from stdin: %v, want errStdinConfig", err)
	}
}
