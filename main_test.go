package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunVersionAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != 0 {
		t.Fatalf("--version exit %d, stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "fleet_exporter") {
		t.Errorf("--version output %q lacks the program name", out.String())
	}
	out.Reset()
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, flag := range []string{"config.file", "config.check", "once.format", "web.listen-address", "web.config.file", "log.level", "icmp.privileged"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("--help does not mention %s", flag)
		}
	}
	errb.Reset()
	if code := run([]string{"--no-such-flag"}, &out, &errb); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
}

func TestRunConfigCheck(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yml", "global:\n  interval: 30s\nhost_sets:\n  - name: a\n    hosts: [127.0.0.1]\n    probes:\n      tcp:\n        port: 22\n        prot: 1\n")
	pw := writeFile(t, dir, "pw", "secret\n")
	missingKey := writeFile(t, dir, "missing-key.yml", "host_sets:\n  - name: k\n    hosts: [127.0.0.1]\n    probes:\n"+
		"      ssh:\n        user: u\n        insecure_skip_host_key_verification: true\n        commands: [{name: x, run: x}]\n"+
		"        private_key_file: "+filepath.Join(dir, "nope_id")+"\n")
	risky := writeFile(t, dir, "risky.yml", "global:\n  interval: 1s\n  timeout: 900ms\n  limits:\n    tcp: {rate: 1, burst: 1}\n"+
		"host_sets:\n  - name: a\n    hosts: [127.0.0.0/28]\n    probes:\n      tcp: {port: 22}\n"+
		"  - name: b\n    hosts: [127.0.0.1]\n    probes:\n      ssh:\n        user: u\n        password_file: "+pw+
		"\n        insecure_skip_host_key_verification: true\n        commands: [{name: x, run: x}]\n")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		// An unusable file is reported at the line of the key naming it.
		{
			name: "missing key file", args: []string{"--config.file=" + missingKey}, wantCode: 1,
			wantStderr: []string{"missing-key.yml:9: host set \"k\": ", "private_key_file", "nope_id"},
		},
		// The warnings a start logs are printed, and the check still passes.
		{
			name: "warnings", args: []string{"--config.file=" + risky}, wantCode: 0, wantStdout: []string{"is valid"},
			wantStderr: []string{`warning: host set "b": Host key verification is disabled`, "warning: Pool limits cannot cover the fleet within one interval"},
		},
		{name: "embedded default", args: nil, wantCode: 0, wantStdout: []string{"<embedded>", "localhost"}},
		{name: "example config", args: []string{"--config.file=config.example.yml"}, wantCode: 0, wantStdout: []string{"config.example.yml", "is valid"}},
		{name: "misspelt key", args: []string{"--config.file=" + bad}, wantCode: 1, wantStderr: []string{"bad.yml", ":9", "prot"}},
		{name: "missing file", args: []string{"--config.file=" + filepath.Join(dir, "nope.yml")}, wantCode: 1, wantStderr: []string{"nope.yml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"--config.check"}, tc.args...), &out, &errb)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.wantCode, out.String(), errb.String())
			}
			for _, w := range tc.wantStdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout %q lacks %q", out.String(), w)
				}
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr %q lacks %q", errb.String(), w)
				}
			}
		})
	}
}

func TestRunOnce(t *testing.T) {
	open := testutil.TCPListener(t, "127.0.0.1")
	closed := testutil.FreePort(t, "127.0.0.1")
	dir := t.TempDir()
	cfg := writeFile(t, dir, "once.yml", fmt.Sprintf(`
global:
  timeout: 2s
host_sets:
  - name: web
    labels: {env: test}
    hosts: ["127.0.0.1:%d", "127.0.0.2:%d"]
    probes:
      tcp: {}
`, open, closed))
	okCfg := writeFile(t, dir, "ok.yml", fmt.Sprintf(`
host_sets:
  - name: web
    hosts: ["127.0.0.1:%d"]
    probes:
      tcp: {}
`, open))

	t.Run("table", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := run([]string{"--once", "--config.file=" + cfg}, &out, &errb)
		if code != 1 {
			t.Fatalf("exit %d, want 1 (one probe fails); stdout %q stderr %q", code, out.String(), errb.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 3 {
			t.Fatalf("want header + 2 rows, got %q", out.String())
		}
		for _, want := range []string{"SET", "HOST", "PROBE", "RESULT", "LATENCY", "REASON"} {
			if !strings.Contains(lines[0], want) {
				t.Errorf("header %q lacks %s", lines[0], want)
			}
		}
		if f := strings.Fields(lines[1]); f[3] != "ok" || f[5] != "-" {
			t.Errorf("open port row %q: want ok with no reason", lines[1])
		}
		if f := strings.Fields(lines[2]); f[3] != "FAIL" || f[5] != "refused" {
			t.Errorf("closed port row %q: want FAIL refused", lines[2])
		}
	})
	t.Run("json", func(t *testing.T) {
		var out, errb bytes.Buffer
		code := run([]string{"--once", "--once.format=json", "--config.file=" + cfg}, &out, &errb)
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		var rows []map[string]any
		if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out.String())
		}
		if len(rows) != 2 {
			t.Fatalf("want 2 objects, got %d", len(rows))
		}
		if rows[1]["reason"] != "refused" || rows[1]["success"] != false || rows[1]["probe"] != "tcp" || rows[1]["set"] != "web" {
			t.Errorf("closed port object %v", rows[1])
		}
		if rows[0]["success"] != true || rows[0]["labels"].(map[string]any)["env"] != "test" {
			t.Errorf("open port object %v", rows[0])
		}
	})
	t.Run("all ok", func(t *testing.T) {
		var out, errb bytes.Buffer
		if code := run([]string{"--once", "--config.file=" + okCfg}, &out, &errb); code != 0 {
			t.Fatalf("exit %d, want 0; %s %s", code, out.String(), errb.String())
		}
	})
}

// daemon runs runContext in the background on a free port.
type daemon struct {
	addr   string
	cancel context.CancelFunc
	done   chan int
	stderr *testutil.Buffer
}

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{addr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))}
	args = append([]string{"--web.listen-address=" + d.addr}, args...)
	startDaemonWith(t, d, args, func() bool {
		resp, err := http.Get("http://" + d.addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return d
}

// startDaemonWith runs runContext(args) in the background until the test
// ends and waits until ready reports true.
func startDaemonWith(t *testing.T, d *daemon, args []string, ready func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done, d.stderr = cancel, make(chan int, 1), &testutil.Buffer{}
	go func() { d.done <- runContext(ctx, args, io.Discard, d.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop within 30s")
		}
	})
	// A daemon that exited (a config it refused, a port in use) will never
	// be ready: say so with its log instead of waiting out the timeout.
	// The timeout itself is generous: the start checks every file the
	// config names, and decrypting a bcrypt-protected key under the race
	// detector on a loaded 2-core machine alone took over 10s.
	deadline := time.Now().Add(30 * time.Second)
	for !ready() {
		select {
		case code := <-d.done:
			d.done <- code
			t.Fatalf("daemon exited with %d before it was ready:\n%s", code, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready within 30s:\n%s", d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpDo(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDaemonRoutesAndReload(t *testing.T) {
	open := testutil.TCPListener(t, "127.0.0.1")
	dir := t.TempDir()
	cfgText := func(set string) string {
		return fmt.Sprintf(`
global:
  interval: 1s
  timeout: 500ms
host_sets:
  - name: %s
    hosts: ["127.0.0.1:%d"]
    probes:
      tcp: {}
`, set, open)
	}
	cfgFile := writeFile(t, dir, "fleet.yml", cfgText("alpha"))
	d := startDaemon(t, "--config.file="+cfgFile)
	base := "http://" + d.addr

	metricsContain := func(s string) func() bool {
		return func() bool {
			_, body := httpDo(t, "GET", base+"/metrics")
			return strings.Contains(body, s)
		}
	}
	waitFor(t, 5*time.Second, metricsContain(`fleet_probe_success{host="127.0.0.1:`+fmt.Sprint(open)+`",port="`+fmt.Sprint(open)+`",probe="tcp",set="alpha"} 1`))

	routes := []struct {
		method, path string
		want         int
		body         string
	}{
		{"GET", "/-/healthy", 200, "Healthy"},
		{"GET", "/-/ready", 200, "Ready"},
		{"GET", "/-/reload", 405, ""},
		{"GET", "/", 200, "fleet_exporter"},
		{"GET", "/nope", 404, ""},
		{"GET", "/debug/pprof/", 404, ""},
	}
	for _, r := range routes {
		code, body := httpDo(t, r.method, base+r.path)
		if code != r.want || !strings.Contains(body, r.body) {
			t.Errorf("%s %s: %d %q, want %d containing %q", r.method, r.path, code, body, r.want, r.body)
		}
	}

	// A good reload replaces the set: the old series disappear.
	writeFile(t, dir, "fleet.yml", cfgText("beta"))
	if code, body := httpDo(t, "POST", base+"/-/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	waitFor(t, 5*time.Second, metricsContain(`set="beta"} 1`))
	if metricsContain(`set="alpha"`)() {
		t.Error("series of the removed set alpha are still exported")
	}
	if !metricsContain("fleet_config_last_reload_successful 1")() {
		t.Error("reload metric is not 1 after a good reload")
	}

	// A bad reload keeps the running config and says so.
	writeFile(t, dir, "fleet.yml", "host_sets: [ {name: x, hostz: []} ]\n")
	code, body := httpDo(t, "POST", base+"/-/reload")
	if code != 500 || !strings.Contains(body, "fleet.yml:1") {
		t.Errorf("bad reload: %d %q, want 500 naming fleet.yml:1", code, body)
	}
	if !metricsContain("fleet_config_last_reload_successful 0")() {
		t.Error("reload metric is not 0 after a bad reload")
	}
	if !metricsContain(`set="beta"} 1`)() {
		t.Error("the running config was dropped by a bad reload")
	}
	// A deleted file also keeps the running config.
	if err := os.Remove(cfgFile); err != nil {
		t.Fatal(err)
	}
	if code, _ := httpDo(t, "POST", base+"/-/reload"); code != 500 {
		t.Errorf("reload of a deleted file: %d, want 500", code)
	}
	if !strings.Contains(d.stderr.String(), "keeping the running configuration") {
		t.Errorf("log does not say why the reload failed:\n%s", d.stderr.String())
	}

	d.cancel()
	select {
	case code := <-d.done:
		if code != 0 {
			t.Errorf("exit code %d after cancel, want 0", code)
		}
		d.done <- code
	case <-time.After(5 * time.Second):
		t.Fatal("daemon did not stop within 5s of cancellation")
	}
}

func TestDaemonEmbeddedDefaultServesMetrics(t *testing.T) {
	d := startDaemon(t, "--web.enable-pprof")
	code, body := httpDo(t, "GET", "http://"+d.addr+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`fleet_targets{probe="icmp",set="localhost"} 1`,
		`fleet_targets{probe="tcp",set="localhost"} 1`,
		"fleet_exporter_build_info",
		"fleet_config_last_reload_successful 1",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := httpDo(t, "GET", "http://"+d.addr+"/debug/pprof/"); code != 200 {
		t.Errorf("/debug/pprof/ with --web.enable-pprof: %d", code)
	}
	// The embedded default cannot be reloaded: say so, keep running.
	if code, body := httpDo(t, "POST", "http://"+d.addr+"/-/reload"); code != 500 || !strings.Contains(body, "embedded default") {
		t.Errorf("reload without --config.file: %d %q", code, body)
	}
}

// TestReloadKeepsConfigWhenKeyFileVanishes changes the config while the
// private key it names is gone: the reload must fail, keep the running
// config and say which file is missing.
func TestReloadKeepsConfigWhenKeyFileVanishes(t *testing.T) {
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writeFile(t, dir, "id_ed25519", string(pem.EncodeToMemory(block)))
	writeFile(t, dir, "known_hosts", "")
	closed := testutil.FreePort(t, "127.0.0.1")
	cfgText := func(interval string) string {
		return fmt.Sprintf(`
global: {interval: %s, timeout: 500ms}
host_sets:
  - name: ssh
    hosts: ["127.0.0.1:%d"]
    probes:
      ssh:
        user: monitor
        private_key_file: id_ed25519
        known_hosts_file: known_hosts
`, interval, closed)
	}
	cfgFile := writeFile(t, dir, "fleet.yml", cfgText("1s"))
	d := startDaemon(t, "--config.file="+cfgFile)
	base := "http://" + d.addr
	waitFor(t, 5*time.Second, func() bool {
		_, body := httpDo(t, "GET", base+"/metrics")
		return strings.Contains(body, `fleet_probe_failure_info{host="127.0.0.1:`+fmt.Sprint(closed)+`",port="",probe="ssh",reason="refused",set="ssh"} 1`)
	})

	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "fleet.yml", cfgText("2s"))
	code, body := httpDo(t, "POST", base+"/-/reload")
	if code != 500 || !strings.Contains(body, "id_ed25519") {
		t.Errorf("reload with a vanished key file: %d %q, want 500 naming the key file", code, body)
	}
	_, metrics := httpDo(t, "GET", base+"/metrics")
	if !strings.Contains(metrics, "fleet_config_last_reload_successful 0") {
		t.Error("reload metric is not 0")
	}
	if !strings.Contains(metrics, `fleet_targets{probe="ssh",set="ssh"} 1`) {
		t.Error("the running config was dropped")
	}
	if logs := d.stderr.String(); !strings.Contains(logs, "keeping the running configuration") || !strings.Contains(logs, "id_ed25519") {
		t.Errorf("log does not say why the reload failed:\n%s", logs)
	}
}

// TestStartupWarnsWhenLimitsCannotCoverFleet: 200 TCP targets with a 1s
// timeout every 2s need up to 100 slots; one slot must draw a warning.
func TestStartupWarnsWhenLimitsCannotCoverFleet(t *testing.T) {
	cfg := writeFile(t, t.TempDir(), "fleet.yml", `
global:
  interval: 2s
  timeout: 1s
  limits:
    tcp: {concurrency: 1}
host_sets:
  - name: big
    hosts: ["127.2.0.[1-200]"]
    probes:
      tcp: {port: 9}
`)
	d := startDaemon(t, "--config.file="+cfg)
	logs := d.stderr.String()
	if !strings.Contains(logs, "Pool limits cannot cover the fleet within one interval") || !strings.Contains(logs, "limits.tcp.concurrency is 1") {
		t.Errorf("no capacity warning at startup:\n%s", logs)
	}
}
