package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// dockerBuildLine extracts the `go build` command of the Dockerfile's build
// stage, so the test builds exactly what the image would contain.
func dockerBuildLine(t *testing.T) string {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^RUN (CGO_ENABLED=0 go build .*) -o /out/fleet_exporter \.$`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			return m[1]
		}
	}
	t.Fatal("Dockerfile has no `RUN CGO_ENABLED=0 go build ... -o /out/fleet_exporter .` line")
	return ""
}

// buildBinary builds fleet_exporter as the Dockerfile does, once per test
// binary run.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	line := dockerBuildLine(t)
	out := filepath.Join(t.TempDir(), "fleet_exporter")
	cmd := exec.Command("sh", "-c", line+` -o "$OUT" .`)
	cmd.Env = append(os.Environ(), "OUT="+out, "VERSION=1.2.3-test", "REVISION=abc123")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build as in Dockerfile (%s): %v\n%s", line, err, b)
	}
	return out
}

func TestDockerfileBuild(t *testing.T) {
	bin := buildBinary(t)

	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has an ELF interpreter: it is not static")
		}
	}
	ef.Close()

	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1.2.3-test") || !strings.Contains(string(out), "abc123") {
		t.Errorf("--version: %v %q, want version 1.2.3-test revision abc123 from -ldflags", err, out)
	}
	out, err = exec.Command(bin, "--config.check", "--config.file=config.example.yml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is valid") {
		t.Errorf("--config.check on config.example.yml: %v %q", err, out)
	}
	bad := writeFile(t, t.TempDir(), "bad.yml", "global:\n  intervall: 1s\n")
	cmd := exec.Command(bin, "--config.check", "--config.file="+bad)
	out, err = cmd.CombinedOutput()
	if err == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "bad.yml:2") {
		t.Errorf("--config.check on a bad file: %v %q, want exit 1 naming bad.yml:2", err, out)
	}
}

// TestBinarySignals runs the real binary: SIGHUP reloads, SIGTERM exits
// within 5 s, and a real scrape passes `promtool check metrics`.
func TestBinarySignals(t *testing.T) {
	bin := buildBinary(t)
	open := testutil.TCPListener(t, "127.0.0.1")
	dir := t.TempDir()
	cfgText := func(set string) string {
		return fmt.Sprintf("global: {interval: 1s, timeout: 500ms}\nhost_sets:\n  - name: %s\n    labels: {env: ci}\n    hosts: [\"127.0.0.1:%d\", \"127.0.0.3:%d\"]\n    probes:\n      tcp: {}\n      icmp: {count: 2, packet_interval: 10ms}\n", set, open, testutil.FreePort(t, "127.0.0.1"))
	}
	cfgFile := writeFile(t, dir, "fleet.yml", cfgText("one"))
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfgFile, "--web.listen-address="+addr)
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	scrape := func() string {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return b.String()
	}
	waitFor(t, 10*time.Second, func() bool {
		s := scrape()
		return strings.Contains(s, `fleet_probe_success{env="ci",host="127.0.0.1:`) && strings.Contains(s, `probe="icmp",set="one"}`) &&
			strings.Contains(s, `reason="refused"`)
	})

	if promtool, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool not found (Debian package prometheus); skipping promtool check metrics")
	} else {
		c := exec.Command(promtool, "check", "metrics")
		c.Stdin = strings.NewReader(scrape())
		if out, err := c.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}

	writeFile(t, dir, "fleet.yml", cfgText("two"))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		s := scrape()
		return strings.Contains(s, `set="two"}`) && !strings.Contains(s, `set="one"}`)
	})

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("exit took %v after SIGTERM, want < 5s", d)
		}
	case <-time.After(6 * time.Second):
		t.Fatalf("still running 6s after SIGTERM\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "ICMP socket mode") {
		t.Errorf("startup log does not say which ICMP mode is in use:\n%s", logs.String())
	}
}

// openPTY returns the master and slave ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open slave: %v", err)
	}
	return m, s
}

// TestOnceProgressOnTerminal runs --once with stderr on a pseudo-terminal:
// a progress line must appear there, and never in piped output.
func TestOnceProgressOnTerminal(t *testing.T) {
	bin := buildBinary(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root for ICMP to loopback (raw sockets when ping_group_range excludes us)")
	}
	var hosts []string
	for i := 1; i <= 20; i++ {
		hosts = append(hosts, fmt.Sprintf("127.0.9.%d", i))
	}
	cfg := writeFile(t, t.TempDir(), "fleet.yml", "global: {timeout: 5s}\nhost_sets:\n  - name: slow\n    hosts: ["+
		strings.Join(hosts, ", ")+"]\n    probes:\n      icmp: {count: 4, packet_interval: 500ms}\n")

	master, slave := openPTY(t)
	defer master.Close()
	var stdout bytes.Buffer
	cmd := exec.Command(bin, "--once", "--config.file="+cfg)
	cmd.Stdout = &stdout
	cmd.Stderr = slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var tty bytes.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = tty.ReadFrom(master) // ends with EIO once the child exits
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("--once: %v\nstdout %s\ntty %q", err, stdout.String(), tty.String())
	}
	master.Close()
	<-copied
	if !strings.Contains(tty.String(), "/20 probes done, 0 failed") {
		t.Errorf("no progress line on the terminal: %q", tty.String())
	}
	if strings.Contains(stdout.String(), "probes done") {
		t.Error("progress line leaked into stdout")
	}
	if n := strings.Count(stdout.String(), "\nslow "); n != 20 {
		t.Errorf("want 20 result rows, got %d:\n%s", n, stdout.String())
	}

	// Piped stderr gets no progress line.
	out, err := exec.Command(bin, "--once", "--config.file="+cfg).CombinedOutput()
	if err != nil || strings.Contains(string(out), "probes done") {
		t.Errorf("piped run: %v, progress present: %v", err, strings.Contains(string(out), "probes done"))
	}
}

// TestBinaryWarnsWhenFDLimitIsLow runs the real binary under a hard
// RLIMIT_NOFILE of 1024 (prlimit, so the Go runtime cannot raise it) with
// 5,000 TCP targets and limits.tcp.concurrency 4096: without a warning,
// about a fifth of the healthy targets used to fail with reason error once
// descriptors ran out. --config.check must print the warning and still
// pass, and a start must log it.
func TestBinaryWarnsWhenFDLimitIsLow(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	bin := buildBinary(t)
	cfg := writeFile(t, t.TempDir(), "fleet.yml", `
global:
  interval: 1h
  timeout: 1s
  limits:
    tcp: {concurrency: 4096}
host_sets:
  - name: many
    hosts: ["127.3.[0-19].[1-250]"]
    probes:
      tcp: {port: 9}
`)
	const want = "RLIMIT_NOFILE is 1024, but probes in flight"
	out, err := exec.Command(prlimit, "--nofile=1024:1024", "--", bin, "--config.check", "--config.file="+cfg).CombinedOutput()
	if strings.HasPrefix(string(out), "prlimit: ") {
		t.Skipf("prlimit cannot set the limit here: %s", out)
	}
	if err != nil || !strings.Contains(string(out), "is valid") || !strings.Contains(string(out), "warning: The open-files limit cannot cover") || !strings.Contains(string(out), want) {
		t.Errorf("--config.check under RLIMIT_NOFILE 1024: %v\n%s\nwant it valid with a warning containing %q", err, out, want)
	}

	logs := &testutil.Buffer{}
	cmd := exec.Command(prlimit, "--nofile=1024:1024", "--", bin, "--config.file="+cfg,
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1")))
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	waitFor(t, 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), want)
	})
}
