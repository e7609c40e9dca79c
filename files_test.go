package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// fileRefusal bounds how long refusing a config that names a FIFO or a
// device may take, for a reload or a --config.check alike: nothing may
// wait on such a file.
const fileRefusal = 2 * time.Second

// sshFiles writes a private key, a password file and an empty known_hosts
// file into dir, and a FIFO without writer.
func sshFiles(t *testing.T, dir string) (fifo string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "id_ed25519", string(pem.EncodeToMemory(block)))
	writeFile(t, dir, "password", "not-the-password\n")
	writeFile(t, dir, "known_hosts", "")
	fifo = filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Should anything open the FIFO for reading despite the fix, a writer
	// opened at cleanup releases it, so no goroutine outlives the test.
	t.Cleanup(func() {
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
	})
	return fifo
}

// sshConfig is a config probing a closed loopback port over SSH with the
// files sshFiles wrote, except that setting (when not empty) is path.
func sshConfig(port int, setting, path string) string {
	files := map[string]string{
		"private_key_file": "id_ed25519",
		"password_file":    "password",
		"known_hosts_file": "known_hosts",
	}
	if setting != "" {
		files[setting] = path
	}
	return fmt.Sprintf(`
global: {interval: 1s, timeout: 500ms}
host_sets:
  - name: ssh
    hosts: ["127.0.0.1:%d"]
    probes:
      ssh:
        user: monitor
        private_key_file: %q
        password_file: %q
        known_hosts_file: %q
`, port, files["private_key_file"], files["password_file"], files["known_hosts_file"])
}

// unsafeTargets are what a file setting may be pointed at that used to
// hang (FIFO) or exhaust memory (/dev/zero) on a plain read, with the word
// the refusal must use.
func unsafeTargets(fifo string) []struct{ name, path, want string } {
	return []struct{ name, path, want string }{
		{"fifo", fifo, "named pipe (FIFO)"},
		{"dev zero", "/dev/zero", "character device"},
	}
}

// TestReloadRefusesUnsafeFiles points password_file and private_key_file
// of a running daemon's config at a FIFO and at /dev/zero. Each reload,
// by SIGHUP and by POST /-/reload, must fail at once naming the file, set
// fleet_config_last_reload_successful to 0 and leave the reloader free: a
// later reload still answers, a good config is taken again, and cancelling
// the daemon ends it within a few seconds.
func TestReloadRefusesUnsafeFiles(t *testing.T) {
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(t *testing.T, url string) (int, string, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, err := client.Post(url, "", nil)
		if err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
	metrics := func(t *testing.T, base string) string {
		t.Helper()
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for _, setting := range []string{"password_file", "private_key_file"} {
		dir := t.TempDir()
		fifo := sshFiles(t, dir)
		for _, u := range unsafeTargets(fifo) {
			t.Run(setting+"/"+u.name, func(t *testing.T) {
				closed := testutil.FreePort(t, "127.0.0.1")
				cfgFile := writeFile(t, dir, "fleet.yml", sshConfig(closed, "", ""))
				d := startDaemon(t, "--config.file="+cfgFile)
				base := "http://" + d.addr
				if m := metrics(t, base); !strings.Contains(m, `fleet_targets{probe="ssh",set="ssh"} 1`) {
					t.Fatalf("the valid config is not running:\n%s", m)
				}

				writeFile(t, dir, "fleet.yml", sshConfig(closed, setting, u.path))
				// SIGHUP first: runDaemon has registered for it before it
				// reports ready, so the signal reaches its reloader.
				if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
				waitFor(t, fileRefusal, func() bool {
					logs := d.stderr.String()
					return strings.Contains(logs, "keeping the running configuration") && strings.Contains(logs, u.path)
				})
				if m := metrics(t, base); !strings.Contains(m, "fleet_config_last_reload_successful 0") {
					t.Error("reload metric is not 0 after the SIGHUP reload")
				}
				// Then over HTTP, twice: the reloader is not wedged.
				for i := range 2 {
					code, body, took := post(t, base+"/-/reload")
					if code != http.StatusInternalServerError || !strings.Contains(body, setting) ||
						!strings.Contains(body, u.path) || !strings.Contains(body, u.want) {
						t.Errorf("reload %d: %d %q, want 500 naming %s, %s and %q", i+1, code, body, setting, u.path, u.want)
					}
					if took > fileRefusal {
						t.Errorf("reload %d took %v, want under %v", i+1, took, fileRefusal)
					}
				}
				m := metrics(t, base)
				if !strings.Contains(m, "fleet_config_last_reload_successful 0") {
					t.Error("reload metric is not 0")
				}
				if !strings.Contains(m, `fleet_targets{probe="ssh",set="ssh"} 1`) {
					t.Error("the running config was dropped")
				}
				// A good file again is taken at once.
				writeFile(t, dir, "fleet.yml", sshConfig(closed, "", "")+"# changed\n")
				if code, body, took := post(t, base+"/-/reload"); code != http.StatusOK || took > fileRefusal {
					t.Errorf("good reload after the refused ones: %d %q in %v", code, body, took)
				}
				if m := metrics(t, base); !strings.Contains(m, "fleet_config_last_reload_successful 1") {
					t.Error("reload metric is not 1 after the good reload")
				}

				start := time.Now()
				d.cancel()
				select {
				case code := <-d.done:
					if code != 0 {
						t.Errorf("exit code %d after cancel, want 0", code)
					}
					d.done <- code // for the cleanup startDaemon registered
				case <-time.After(5 * time.Second):
					t.Fatal("daemon did not stop within 5s of cancellation")
				}
				t.Logf("stopped %v after cancellation", time.Since(start))
			})
		}
	}
}

// TestConfigCheckRefusesUnsafeFiles runs --config.check, and a plain start,
// on configs whose password_file or private_key_file is a FIFO or
// /dev/zero: both must exit 1 at once and say which file is what.
func TestConfigCheckRefusesUnsafeFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := sshFiles(t, dir)
	port := testutil.FreePort(t, "127.0.0.1")
	for _, setting := range []string{"password_file", "private_key_file"} {
		for _, u := range unsafeTargets(fifo) {
			cfgFile := writeFile(t, dir, strings.ReplaceAll(setting+"-"+u.name, " ", "-")+".yml", sshConfig(port, setting, u.path))
			for _, mode := range []struct {
				name string
				args []string
			}{
				{"config check", []string{"--config.check", "--config.file=" + cfgFile}},
				{"start", []string{"--config.file=" + cfgFile, fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port)}},
			} {
				t.Run(setting+"/"+u.name+"/"+mode.name, func(t *testing.T) {
					var out, errb bytes.Buffer
					done := make(chan int, 1)
					start := time.Now()
					go func() { done <- run(mode.args, &out, &errb) }()
					var code int
					select {
					case code = <-done:
					case <-time.After(10 * time.Second):
						t.Fatal("still running after 10s")
					}
					if took := time.Since(start); took > fileRefusal {
						t.Errorf("took %v, want under %v", took, fileRefusal)
					}
					if code != 1 {
						t.Errorf("exit %d, want 1; stdout %q", code, out.String())
					}
					for _, w := range []string{setting, u.path, u.want} {
						if !strings.Contains(errb.String(), w) {
							t.Errorf("stderr %q lacks %q", errb.String(), w)
						}
					}
					if mode.name == "config check" && !strings.Contains(errb.String(), "config check failed") {
						t.Errorf("stderr %q does not say the check failed", errb.String())
					}
				})
			}
		}
	}
}
