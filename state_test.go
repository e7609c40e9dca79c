package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/storage"
)

// stateSeries returns the value of every series of family name by its
// set/host/probe labels, e.g. "a/127.0.0.1:80/tcp".
func stateSeries(fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fams[name].GetMetric() {
		var set, host, probe string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "set":
				set = l.GetValue()
			case "host":
				host = l.GetValue()
			case "probe":
				probe = l.GetValue()
			}
		}
		v := m.GetGauge().GetValue()
		if m.GetCounter() != nil {
			v = m.GetCounter().GetValue()
		}
		out[set+"/"+host+"/"+probe] = v
	}
	return out
}

// unixSecondsOf is the conversion the collector uses for timestamps, so
// values compare exactly.
func unixSecondsOf(t time.Time) float64 { return float64(t.Unix()) + float64(t.Nanosecond())/1e9 }

// TestDaemonStateSurvivesRestart starts the daemon with --storage.path,
// waits for results, stops it cleanly and starts it again with an interval
// so long that no probe runs: the first scrape serves the old results,
// timestamps and counters.
func TestDaemonStateSurvivesRestart(t *testing.T) {
	open := testutil.TCPListener(t, "127.0.0.1")
	closed := testutil.FreePort(t, "127.0.0.1")
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	cfgText := func(interval string) string {
		return fmt.Sprintf("global: {interval: %s, timeout: 500ms}\nhost_sets:\n  - name: a\n    hosts: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n    probes:\n      tcp: {}\n", interval, open, closed)
	}
	cfgFile := writeFile(t, dir, "fleet.yml", cfgText("1s"))
	args := []string{"--config.file=" + cfgFile, "--storage.path=" + stateDir, "--storage.snapshot-interval=1h"}

	d := startDaemon(t, args...)
	url := "http://" + d.addr + "/metrics"
	var before map[string]*dto.MetricFamily
	waitFor(t, 10*time.Second, func() bool {
		fams, err := scrapeFamilies(url)
		before = fams
		return err == nil && len(stateSeries(fams, "fleet_probe_last_run_timestamp_seconds")) == 2 &&
			len(stateSeries(fams, "fleet_probe_last_success_timestamp_seconds")) == 1
	})
	d.cancel()
	if code := <-d.done; code != 0 {
		t.Fatalf("first run exited %d:\n%s", code, d.stderr)
	}
	d.done <- 0 // for the cleanup registered by startDaemon
	if !strings.Contains(d.stderr.String(), "Wrote the final state snapshot") {
		t.Errorf("no final snapshot logged:\n%s", d.stderr)
	}
	restart := time.Now()

	writeFile(t, dir, "fleet.yml", cfgText("24h"))
	d2 := startDaemon(t, args...)
	after, err := scrapeFamilies("http://" + d2.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"fleet_probe_last_run_timestamp_seconds", "fleet_probe_last_success_timestamp_seconds",
		"fleet_probe_consecutive_failures", "fleet_probe_success", "fleet_probes_total",
	} {
		old, got := stateSeries(before, name), stateSeries(after, name)
		if len(got) != len(old) {
			t.Errorf("%s: %d series after the restart, %d before: %v", name, len(got), len(old), got)
		}
		for k, was := range old {
			v, ok := got[k]
			if !ok {
				continue
			}
			// The final snapshot may hold one more probe than the last
			// scrape saw, never anything from after the restart.
			switch name {
			case "fleet_probe_success":
				if v != was {
					t.Errorf("%s{%s} = %v after the restart, %v before", name, k, v, was)
				}
			default:
				if v < was {
					t.Errorf("%s{%s} = %v after the restart, below %v before", name, k, v, was)
				}
			}
			if strings.HasSuffix(name, "_timestamp_seconds") && v >= unixSecondsOf(restart) {
				t.Errorf("%s{%s} = %v is after the restart at %v: not the saved result", name, k, v, unixSecondsOf(restart))
			}
		}
	}
	if _, ok := after["fleet_probe_failure_info"]; !ok {
		t.Error("no fleet_probe_failure_info for the refused target after the restart")
	}
	if !strings.Contains(d2.stderr.String(), "Restored state snapshot") || !strings.Contains(d2.stderr.String(), "clean=true") {
		t.Errorf("second run did not log a clean restore:\n%s", d2.stderr)
	}
}

// TestBinaryKill9MidSnapshot runs the real binary with a few thousand
// targets, snapshots every second and a write slowed by the test hook, kills
// it with SIGKILL while a temporary snapshot file is being written, and
// starts it again with a 24 h interval: the first scrape serves the last
// complete snapshot, with its timestamps, and the unfinished file is gone.
func TestBinaryKill9MidSnapshot(t *testing.T) {
	bin := buildBinary(t)
	open := testutil.TCPListener(t, "127.0.0.1")
	closed := testutil.FreePort(t, "127.0.0.1")
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	const targets = 1 + 20*250
	cfgText := func(interval string) string {
		return fmt.Sprintf("global: {interval: %s, timeout: 1s}\nhost_sets:\n  - name: big\n    hosts: [\"127.0.0.1:%d\", \"127.1.[0-19].[1-250]:%d\"]\n    probes:\n      tcp: {}\n", interval, open, closed)
	}
	cfgFile := writeFile(t, dir, "fleet.yml", cfgText("5s"))

	start := func(extraEnv ...string) (addr string, cmd *exec.Cmd, logs *testutil.Buffer, exited <-chan struct{}) {
		t.Helper()
		addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
		cmd = exec.Command(bin, "--config.file="+cfgFile, "--web.listen-address="+addr,
			"--storage.path="+stateDir, "--storage.snapshot-interval=1s")
		cmd.Env = append(os.Environ(), extraEnv...)
		logs = &testutil.Buffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(done)
		}()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
		})
		waitFor(t, 20*time.Second, func() bool {
			code, _, err := tryGet("http://" + addr + "/-/ready")
			return err == nil && code == 200
		})
		return addr, cmd, logs, done
	}

	addr, cmd, logs, exited := start(storage.SlowWriteEnv + "=3s")
	url := "http://" + addr + "/metrics"
	var allSeen time.Time
	waitFor(t, 30*time.Second, func() bool {
		fams, err := scrapeFamilies(url)
		allSeen = time.Now()
		return err == nil && len(stateSeries(fams, "fleet_probe_last_run_timestamp_seconds")) == targets
	})
	// A snapshot taken after every target had a result is on disk.
	waitFor(t, 20*time.Second, func() bool {
		fams, err := scrapeFamilies(url)
		if err != nil {
			return false
		}
		g := fams["fleet_storage_last_snapshot_timestamp_seconds"].GetMetric()
		return len(g) == 1 && g[0].GetGauge().GetValue() > unixSecondsOf(allSeen)
	})
	// The next one is being written: kill the process in its slowed window.
	var temps []string
	waitFor(t, 10*time.Second, func() bool {
		temps, _ = filepath.Glob(filepath.Join(stateDir, storage.FileName+".tmp-*"))
		return len(temps) == 1
	})
	committed, err := os.ReadFile(filepath.Join(stateDir, storage.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if _, err := os.Stat(temps[0]); err != nil {
		t.Fatalf("the temporary snapshot is gone, so the kill did not land mid-write: %v\n%s", err, logs)
	}
	if now, _ := os.ReadFile(filepath.Join(stateDir, storage.FileName)); !bytes.Equal(now, committed) {
		t.Fatal("the snapshot file changed between reading it and the kill")
	}
	h, saved, err := storage.Unmarshal(committed)
	if err != nil {
		t.Fatalf("the last complete snapshot does not decode: %v", err)
	}
	if h.Clean || len(saved.Targets) != targets {
		t.Fatalf("last complete snapshot: clean=%v, %d targets; want an unclean one of %d", h.Clean, len(saved.Targets), targets)
	}
	want := map[string]float64{}
	for _, st := range saved.Targets {
		want[st.Key.Set+"/"+st.Key.Host+"/"+st.Key.Probe] = unixSecondsOf(st.State.LastRun)
	}

	writeFile(t, dir, "fleet.yml", cfgText("24h"))
	restart := time.Now()
	addr, cmd, logs, _ = start()
	fams, err := scrapeFamilies("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	got := stateSeries(fams, "fleet_probe_last_run_timestamp_seconds")
	if len(got) != targets {
		t.Errorf("first scrape after the restart has %d last-run series, want %d", len(got), targets)
	}
	// With a 24 h interval a probe of a few thousand targets falls into the
	// seconds since the restart only rarely; such a target shows a new
	// time, never a wrong old one.
	ranSince := 0
	for k, w := range want {
		switch v, ok := got[k]; {
		case !ok:
			t.Errorf("%s: no series after the restart", k)
		case v == w:
		case v >= unixSecondsOf(restart):
			ranSince++
		default:
			t.Errorf("%s: last run %v after the restart, %v in the snapshot", k, v, w)
		}
	}
	if ranSince > 5 {
		t.Errorf("%d targets show a run after the restart; a 24 h interval should allow a handful at most", ranSince)
	}
	if v := stateSeries(fams, "fleet_probe_success")["big/127.0.0.1:"+fmt.Sprint(open)+"/tcp"]; v != 1 {
		t.Errorf("the open port's fleet_probe_success = %v after the restart, want 1", v)
	}
	if _, err := os.Stat(temps[0]); !os.IsNotExist(err) {
		t.Errorf("the unfinished snapshot of the killed process is still there: %v", err)
	}
	for _, s := range []string{"Removed an unfinished state snapshot", "Restored state snapshot", "clean=false", fmt.Sprintf("restored=%d", targets)} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("restart log lacks %q:\n%s", s, logs)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}
