package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// alertmanagerBinary is where the Debian package prometheus-alertmanager
// installs the server.
const alertmanagerBinary = "/usr/bin/prometheus-alertmanager"

// alertmanager is one running Alertmanager with the shipped configuration.
type alertmanager struct {
	t      *testing.T
	base   string
	client *http.Client
	done   chan struct{}
	log    string
}

// startAlertmanager runs Alertmanager on a loopback port with
// alertmanagerFile, its webhook URLs pointed at a loopback server (so that
// no notification leaves the machine) and gossip off, and stops it by its
// PID at cleanup.
func startAlertmanager(t *testing.T) *alertmanager {
	t.Helper()
	if _, err := os.Stat(alertmanagerBinary); err != nil {
		t.Skipf("%s not found: %s", alertmanagerBinary, amtoolHint)
	}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	t.Cleanup(hook.Close)
	b, err := os.ReadFile(alertmanagerFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(b), "https://alerts.example.invalid/", hook.URL+"/")
	if strings.Contains(cfg, "example.invalid") {
		t.Fatalf("%s: a receiver URL outside https://alerts.example.invalid/ would leave the machine", alertmanagerFile)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "127.0.0.1")))
	am := &alertmanager{
		t: t, base: "http://" + addr, done: make(chan struct{}), log: filepath.Join(dir, "alertmanager.log"),
		// No keep-alive: no idle connection goroutines for goleak to find.
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	logf, err := os.Create(am.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(alertmanagerBinary,
		"--config.file="+cfgPath,
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--cluster.listen-address=",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed by -timeout must not leave Alertmanager behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start alertmanager: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(am.done)
	}()
	t.Cleanup(func() {
		select {
		case <-am.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-am.done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-am.done
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(am.log)
			t.Logf("alertmanager log:\n%s", b)
		}
	})
	am.wait(30*time.Second, "alertmanager ready", func() (bool, string) {
		resp, err := am.client.Get(am.base + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return am
}

// wait polls cond every 100ms until it holds, failing the test with cond's
// last explanation after timeout or when Alertmanager exits.
func (am *alertmanager) wait(timeout time.Duration, what string, cond func() (bool, string)) {
	am.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		select {
		case <-am.done:
			am.t.Fatalf("%s: alertmanager exited", what)
		default:
		}
		if time.Now().After(deadline) {
			am.t.Fatalf("%s: not after %v: %s", what, timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// post sends firing alerts, each given as its labels.
func (am *alertmanager) post(alerts ...map[string]string) {
	am.t.Helper()
	type postable struct {
		Labels   map[string]string `json:"labels"`
		StartsAt time.Time         `json:"startsAt"`
	}
	var body []postable
	for _, a := range alerts {
		body = append(body, postable{Labels: a, StartsAt: time.Now()})
	}
	b, err := json.Marshal(body)
	if err != nil {
		am.t.Fatal(err)
	}
	resp, err := am.client.Post(am.base+"/api/v2/alerts", "application/json", bytes.NewReader(b))
	if err != nil {
		am.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		am.t.Fatalf("POST /api/v2/alerts: %s: %s", resp.Status, msg)
	}
}

// inhibited returns, for every alert Alertmanager holds, whether it is
// inhibited, keyed by alertKey.
func (am *alertmanager) inhibited() (map[string]bool, error) {
	resp, err := am.client.Get(am.base + "/api/v2/alerts")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v2/alerts: %s", resp.Status)
	}
	var got []struct {
		Labels map[string]string `json:"labels"`
		Status struct {
			State       string   `json:"state"`
			InhibitedBy []string `json:"inhibitedBy"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, a := range got {
		out[alertKey(a.Labels)] = len(a.Status.InhibitedBy) > 0
	}
	return out, nil
}

// alertKey names an alert by its sorted labels.
func alertKey(labels map[string]string) string {
	var parts []string
	for k, v := range labels {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// alert returns the labels of a fleet alert: name, then label pairs.
func alert(name string, kv ...string) map[string]string {
	l := map[string]string{"alertname": name, "job": "fleet"}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

// TestAlertmanagerInhibition posts alerts to a real Alertmanager running
// the shipped configuration and checks which of them its inhibition rules
// mute: a bastion down mutes the SSH alerts of its set (the per-host ones
// only for the exporter whose connections are down) but not the host,
// TCP, output or host key alerts; the set-level alerts mute their per-host
// alerts; and an exporter down mutes every other fleet alert.
func TestAlertmanagerInhibition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Alertmanager")
	}
	am := startAlertmanager(t)
	const exp1, exp2 = "exp1:9922", "exp2:9922"
	tests := []struct {
		name      string
		alert     map[string]string
		inhibited bool
	}{
		// exp1 has no connection through jump@b1:22, which sets dmz and
		// dmz2 go through.
		{"bastion down dmz", alert("FleetBastionDown", "instance", exp1, "bastion", "jump@b1:22", "set", "dmz", "severity", "critical"), false},
		{"bastion down dmz2", alert("FleetBastionDown", "instance", exp1, "bastion", "jump@b1:22", "set", "dmz2", "severity", "critical"), false},
		{"ssh down behind the bastion", alert("FleetSSHDownICMPUp", "instance", exp1, "set", "dmz", "host", "d1", "probe", "ssh", "severity", "warning"), true},
		{"login slow behind the bastion", alert("FleetSSHLoginSlow", "instance", exp1, "set", "dmz", "host", "d1", "severity", "warning"), true},
		{"command failing behind the bastion", alert("FleetCommandFailing", "instance", exp1, "set", "dmz", "host", "d1", "command", "uptime", "severity", "warning"), true},
		{"set ssh failing behind the bastion", alert("FleetSetSSHFailing", "set", "dmz2", "severity", "warning"), true},
		{"ssh down from another exporter", alert("FleetSSHDownICMPUp", "instance", exp2, "set", "dmz", "host", "d2", "probe", "ssh", "severity", "warning"), false},
		{"ssh down in another set", alert("FleetSSHDownICMPUp", "instance", exp1, "set", "lan", "host", "l1", "probe", "ssh", "severity", "warning"), false},
		{"host unreachable behind the bastion", alert("FleetHostUnreachable", "instance", exp1, "set", "dmz", "host", "d3", "severity", "critical"), false},
		{"tcp port down behind the bastion", alert("FleetTCPPortDown", "instance", exp1, "set", "dmz", "host", "d3", "probe", "tcp", "port", "443", "severity", "warning"), false},
		{"output drift behind the bastion", alert("FleetCommandOutputDrift", "instance", exp1, "set", "dmz", "host", "d1", "command", "uptime", "hash", "1", "severity", "warning"), false},
		{"host key changed behind the bastion", alert("FleetSSHHostKeyChanged", "instance", exp1, "set", "dmz", "host", "d1", "severity", "warning"), false},
		// More than half of rack is down.
		{"set mostly down", alert("FleetSetMostlyDown", "set", "rack", "severity", "critical"), false},
		{"host unreachable in a mostly down set", alert("FleetHostUnreachable", "instance", exp1, "set", "rack", "host", "r1", "severity", "critical"), true},
		{"ssh down in a mostly down set", alert("FleetSSHDownICMPUp", "instance", exp1, "set", "rack", "host", "r2", "probe", "ssh", "severity", "warning"), true},
		{"command failing in a mostly down set", alert("FleetCommandFailing", "instance", exp1, "set", "rack", "host", "r1", "command", "uptime", "severity", "warning"), false},
		// SSH fails on most of logins.
		{"set ssh failing", alert("FleetSetSSHFailing", "set", "logins", "severity", "warning"), false},
		{"ssh down in a set failing ssh", alert("FleetSSHDownICMPUp", "instance", exp1, "set", "logins", "host", "g1", "probe", "ssh", "severity", "warning"), true},
		{"login slow in a set failing ssh", alert("FleetSSHLoginSlow", "instance", exp1, "set", "logins", "host", "g1", "severity", "warning"), false},
	}
	var alerts []map[string]string
	for _, tc := range tests {
		alerts = append(alerts, tc.alert)
	}
	check := func(what string, want func(i int) bool) {
		t.Helper()
		// The inhibitor learns of a source alert asynchronously: poll until
		// every alert has its expected state, then report the differences.
		var got map[string]bool
		deadline := time.Now().Add(10 * time.Second)
		for {
			var err error
			if got, err = am.inhibited(); err != nil {
				t.Fatal(err)
			}
			ok := true
			for i, tc := range tests {
				if s, found := got[alertKey(tc.alert)]; !found || s != want(i) {
					ok = false
				}
			}
			if ok || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for i, tc := range tests {
			s, found := got[alertKey(tc.alert)]
			switch {
			case !found:
				t.Errorf("%s: %s: alert %s not held by alertmanager", what, tc.name, alertKey(tc.alert))
			case s != want(i):
				t.Errorf("%s: %s: inhibited = %v, want %v (%s)", what, tc.name, s, want(i), alertKey(tc.alert))
			}
		}
	}

	am.post(alerts...)
	check("fleet alerts", func(i int) bool { return tests[i].inhibited })

	am.post(alert("FleetExporterDown", "instance", exp1, "severity", "critical"))
	check("exporter down", func(int) bool { return true })
	got, err := am.inhibited()
	if err != nil {
		t.Fatal(err)
	}
	if s := got[alertKey(alert("FleetExporterDown", "instance", exp1, "severity", "critical"))]; s {
		t.Error("FleetExporterDown inhibits itself")
	}
}
