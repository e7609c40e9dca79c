package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"go.yaml.in/yaml/v3"

	"github.com/fleet-exporter/fleet_exporter/deploy"
	"github.com/fleet-exporter/fleet_exporter/internal/promtest"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// Set names, static labels and SSH commands of the test fleet.
const (
	setTCP  = "e2e_tcp"
	setICMP = "e2e_icmp"
	setSSH  = "e2e_ssh"

	// setRegex selects the test sets, as Grafana's $set variable would.
	setRegex = setTCP + "|" + setICMP + "|" + setSSH

	// cmdCheck prints the same output on every healthy fleetsim host;
	// cmdHost prints the host's address, so its hash differs per host.
	cmdCheck = "check"
	cmdHost  = "host"
)

// Timeouts of the polling loops. Probes run every second, Prometheus scrapes
// and evaluates every second, so anything not seen within these is a bug.
const (
	startTimeout  = 20 * time.Second
	settleTimeout = 30 * time.Second
	pollEvery     = 200 * time.Millisecond
)

// builds holds the binaries built once per package run. TestMain owns dir;
// the tests share the result through the once.
type builds struct {
	dir  string
	once sync.Once
	// exporter and fleetsim are the binaries' paths, err why building failed.
	exporter, fleetsim string
	out                string
	err                error
}

// bins is the one piece of package state: TestMain creates the directory,
// the first test to need a binary builds both, later tests reuse them.
var bins builds

// TestMain checks every test for leaked goroutines and removes the build
// directory after the run.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleet-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot create the build directory:", err)
		os.Exit(1)
	}
	bins.dir = dir
	testutil.Main(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// repoRoot is the module root: the e2e package lives one level below it.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s has no go.mod: %v", root, err)
	}
	return root
}

// binaries builds the exporter and fleetsim on first use and returns their
// paths. A build failure fails every test that needs them.
func binaries(t *testing.T) (exporter, fleetsim string) {
	t.Helper()
	root := repoRoot(t)
	bins.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = "/usr/local/go/bin/go"
		}
		exporterBin := filepath.Join(bins.dir, "fleet_exporter")
		fleetsimBin := filepath.Join(bins.dir, "fleetsim")
		for _, b := range []struct{ out, pkg string }{
			{exporterBin, "."},
			{fleetsimBin, "./cmd/fleetsim"},
		} {
			cmd := exec.Command(goTool, "build", "-o", b.out, b.pkg)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				bins.out = string(out)
				bins.err = fmt.Errorf("go build -o %s %s: %w", b.out, b.pkg, err)
				return
			}
		}
		bins.exporter, bins.fleetsim = exporterBin, fleetsimBin
	})
	if bins.err != nil {
		t.Fatalf("%v\n%s", bins.err, bins.out)
	}
	return bins.exporter, bins.fleetsim
}

// needTool returns the path of an installed tool or skips the test, naming the
// Debian package that provides it.
func needTool(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not found: install the Debian package %s (scripts/install-test-deps.sh)", path, pkg)
	}
	return path
}

// eventually calls cond until it reports true or timeout passes, then fails
// the test with what cond last said. It is the only way the tests wait.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %s", what, timeout, detail)
		}
		time.Sleep(pollEvery)
	}
}

// process is a subprocess the test started; its output goes to a log file
// that is printed when the test fails.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid once done is closed
}

// startProcess starts bin with args, stdout and stderr to <dir>/<name>.log,
// and registers a cleanup that stops it: SIGTERM, then SIGKILL after 10s.
// Only this PID is signalled.
func startProcess(t *testing.T, dir, name, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// A test binary killed by -timeout must not leave its peers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s (pid %d) log %s:\n%s", name, cmd.Process.Pid, logPath, tail(logPath, 60))
		}
	})
	return p
}

// stop ends the process by its PID and waits for it.
func (p *process) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) ignored SIGTERM for 10s; killing it", p.name, p.cmd.Process.Pid)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports whether the process ended, and how.
func (p *process) exited() (bool, string) {
	select {
	case <-p.done:
		return true, fmt.Sprintf("%s exited early (%v); log:\n%s", p.name, p.err, tail(p.log, 40))
	default:
		return false, ""
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stablePort returns a free port on ip below the kernel's ephemeral range.
// A host the test takes down and brings back must get its port again: a
// port from the ephemeral range may meanwhile be the source port of one of
// the many connections the exporter, Prometheus and other tests open.
func stablePort(t *testing.T, ip string) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const from = 10000
	if low <= from+100 {
		return testutil.FreePort(t, ip)
	}
	for range 100 {
		port := from + rand.IntN(low-from)
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err == nil {
			_ = l.Close()
			return port
		}
	}
	t.Fatalf("no free port below %d on %s", low, ip)
	return 0
}

// tcpHost is a loopback TCP listener the test can take down and bring back on
// the same address. It accepts and closes every connection.
type tcpHost struct {
	addr string // ip:port, the host entry in the config

	mu sync.Mutex // guards l and wg
	l  net.Listener
	wg sync.WaitGroup
}

func newTCPHost(t *testing.T, ip string) *tcpHost {
	t.Helper()
	h := &tcpHost{addr: net.JoinHostPort(ip, strconv.Itoa(stablePort(t, ip)))}
	h.up(t)
	t.Cleanup(h.down)
	return h
}

// up listens on the host's address again.
func (h *tcpHost) up(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.l != nil {
		return
	}
	l, err := net.Listen("tcp", h.addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", h.addr, err)
	}
	h.l = l
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
}

// down closes the listener: connections to the address are refused.
func (h *tcpHost) down() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.l == nil {
		return
	}
	_ = h.l.Close()
	h.wg.Wait()
	h.l = nil
}

// envOptions selects the parts of an environment.
type envOptions struct {
	// prometheus starts a Prometheus scraping the exporter.
	prometheus bool
	// hostUnreachableFor replaces the `for:` of FleetHostUnreachable in the
	// temporary copy of alerts.yml when not empty.
	hostUnreachableFor string
	// scrapeAddr is the address the fleet job scrapes instead of the
	// exporter's (a recording proxy in front of it).
	scrapeAddr string
	// jobExtra is YAML appended to the fleet job (indented to its level).
	jobExtra string
	// promArgs are extra Prometheus flags.
	promArgs []string
	// promBinary is the Prometheus to run; empty means Debian's.
	promBinary string
}

// env is one running fleet: TCP listeners, a fleetsim SSH fleet, the
// exporter and optionally Prometheus, all on loopback.
type env struct {
	t      *testing.T
	dir    string
	client *http.Client

	tcp      []*tcpHost       // hosts of setTCP
	icmp     []string         // hosts of setICMP
	ssh      []string         // hosts of setSSH (fleetsim addresses)
	exporter string           // host:port
	prom     *promtest.Server // the latest Prometheus started, nil without one
}

// staticLabels returns the static labels of a test set. e2e_icmp lacks
// "team", so the exporter gives its series team="", which Prometheus drops.
func staticLabels(set string) map[string]string {
	switch set {
	case setTCP:
		return map[string]string{"env": "e2e", "team": "net"}
	case setSSH:
		return map[string]string{"env": "e2e", "team": "ssh"}
	default:
		return map[string]string{"env": "e2e"}
	}
}

// startEnv starts a fleet: 3 TCP hosts on 127.0.0.{1,2,3}, ICMP to 127.0.0.1
// and 127.0.0.2, 2 fleetsim SSH hosts on a random 127.x.y.0/24, every probe
// every second with a 500ms timeout. It returns once every host has a result.
func startEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	exporterBin, fleetsimBin := binaries(t)
	e := &env{
		t:   t,
		dir: t.TempDir(),
		// No keep-alive: no idle connection goroutines for goleak to find.
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		icmp:   []string{"127.0.0.1", "127.0.0.2"},
	}
	for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		e.tcp = append(e.tcp, newTCPHost(t, ip))
	}

	// fleetsim: a random /24 in 127.100-199.x keeps concurrent test runs
	// apart; gen and serve get the same shared flags.
	base := fmt.Sprintf("127.%d.%d.1", 100+rand.IntN(100), 1+rand.IntN(254))
	simPort := strconv.Itoa(stablePort(t, base))
	simDir := filepath.Join(e.dir, "fleetsim")
	shared := []string{"--n", "2", "--base", base, "--port", simPort, "--seed", "e2e"}
	gen := exec.Command(fleetsimBin, append([]string{
		"gen", "--out", simDir,
		"--command", cmdCheck + "=check", "--command", cmdHost + "=hostname",
	}, shared...)...)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("fleetsim gen: %v\n%s", err, out)
	}
	sim := startProcess(t, e.dir, "fleetsim", fleetsimBin, append([]string{
		"serve",
		"--authorized-key", filepath.Join(simDir, "id_ed25519.pub"),
	}, shared...)...)
	eventually(t, startTimeout, "fleetsim ready", func() (bool, string) {
		if gone, why := sim.exited(); gone {
			t.Fatal(why)
		}
		b, _ := os.ReadFile(sim.log)
		return bytes.Contains(b, []byte("ready 2")), "no \"ready 2\" line yet"
	})
	baseIP := net.ParseIP(base).To4()
	for i := range 2 {
		ip := slices.Clone(baseIP)
		ip[3] += byte(i)
		e.ssh = append(e.ssh, ip.String())
	}

	cfgPath := filepath.Join(e.dir, "fleet.yml")
	if err := os.WriteFile(cfgPath, []byte(e.exporterConfig(simDir, simPort)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.exporter = net.JoinHostPort("127.0.0.1", strconv.Itoa(stablePort(t, "127.0.0.1")))
	exp := startProcess(t, e.dir, "exporter", exporterBin,
		"--config.file="+cfgPath, "--web.listen-address="+e.exporter)
	eventually(t, startTimeout, "exporter ready", func() (bool, string) {
		if gone, why := exp.exited(); gone {
			t.Fatal(why)
		}
		code, _, err := e.get("http://" + e.exporter + "/-/ready")
		return err == nil && code == http.StatusOK, fmt.Sprintf("status %d, err %v", code, err)
	})
	// Every host has a result: fleet_host_up is exported for each of them.
	eventually(t, settleTimeout, "every host probed", func() (bool, string) {
		fams, err := e.scrape()
		if err != nil {
			return false, err.Error()
		}
		got := len(fams["fleet_host_up"])
		want := len(e.tcp) + len(e.icmp) + len(e.ssh)
		return got == want, fmt.Sprintf("%d fleet_host_up series, want %d", got, want)
	})

	if opts.prometheus {
		e.startPrometheus(opts)
	}
	return e
}

// exporterConfig is the exporter's configuration for the fleet.
func (e *env) exporterConfig(simDir, simPort string) string {
	var b strings.Builder
	b.WriteString("global:\n  interval: 1s\n  timeout: 500ms\nhost_sets:\n")
	set := func(name string, hosts []string) {
		fmt.Fprintf(&b, "  - name: %s\n    hosts:\n", name)
		for _, h := range hosts {
			fmt.Fprintf(&b, "      - %q\n", h)
		}
		b.WriteString("    labels:\n")
		labels := staticLabels(name)
		for _, k := range sortedKeys(labels) {
			fmt.Fprintf(&b, "      %s: %q\n", k, labels[k])
		}
	}
	set(setTCP, e.tcpAddrs())
	b.WriteString("    probes:\n      tcp: {}\n")
	set(setICMP, e.icmp)
	b.WriteString("    probes:\n      icmp:\n        count: 1\n")
	set(setSSH, e.ssh)
	fmt.Fprintf(&b, `    probes:
      ssh:
        port: %s
        user: fleet
        private_key_file: %q
        known_hosts_file: %q
        commands:
          - {name: %s, run: check}
          - {name: %s, run: hostname}
`, simPort, filepath.Join(simDir, "id_ed25519"), filepath.Join(simDir, "known_hosts"), cmdCheck, cmdHost)
	return b.String()
}

func (e *env) tcpAddrs() []string {
	var out []string
	for _, h := range e.tcp {
		out = append(out, h.addr)
	}
	return out
}

// hostsBySet lists the host label values of every test set.
func (e *env) hostsBySet() map[string][]string {
	return map[string][]string{setTCP: e.tcpAddrs(), setICMP: e.icmp, setSSH: e.ssh}
}

// startPrometheus runs a Prometheus (internal/promtest) scraping the
// exporter every second as job "fleet" and evaluating copies of the shipped
// rule files every second; queries go to it from then on. It returns once
// the fleet target is up.
func (e *env) startPrometheus(opts envOptions) *promtest.Server {
	t := e.t
	t.Helper()
	root := repoRoot(t)
	target := opts.scrapeAddr
	if target == "" {
		target = e.exporter
	}
	alerts := filepath.Join(root, "deploy", "prometheus", "alerts.yml")
	if opts.hostUnreachableFor != "" {
		edited := filepath.Join(t.TempDir(), "alerts.yml")
		writeAlertsWithFor(t, alerts, edited, "FleetHostUnreachable", opts.hostUnreachableFor)
		alerts = edited
	}
	e.prom = promtest.Start(t, promtest.Options{
		Targets:   []string{target},
		RuleFiles: []string{alerts, filepath.Join(root, "deploy", "prometheus", "rules.yml")},
		JobConfig: opts.jobExtra,
		Args:      opts.promArgs,
		Binary:    opts.promBinary,
	})
	eventually(t, settleTimeout, "exporter target up in prometheus", func() (bool, string) {
		targets, err := e.targets()
		if err != nil {
			return false, err.Error()
		}
		for _, tg := range targets {
			if tg.Labels["job"] == "fleet" && tg.Labels["instance"] == target && tg.Health == "up" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("targets: %+v", targets)
	})
	return e.prom
}

// writeAlertsWithFor copies the alert rule file src to dst with the `for:` of
// the named alert replaced. It goes through deploy.LoadRules, which rejects
// unknown fields, so the copy cannot silently lose a field of the original.
func writeAlertsWithFor(t *testing.T, src, dst, alert, forDur string) {
	t.Helper()
	f, err := deploy.LoadRules(src)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for gi := range f.Groups {
		for ri := range f.Groups[gi].Rules {
			if f.Groups[gi].Rules[ri].Alert == alert {
				f.Groups[gi].Rules[ri].For = forDur
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("%s has no alert %s", src, alert)
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// get fetches url and returns the status code and body.
func (e *env) get(u string) (int, []byte, error) {
	resp, err := e.client.Get(u)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// sample is one series of a scrape or a query result.
type sample struct {
	labels map[string]string
	value  float64
}

// scrapeText fetches the exporter's /metrics in the text format.
func (e *env) scrapeText() ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+e.exporter+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	return b, nil
}

// scrape fetches /metrics and returns the fleet_* samples by metric name.
func (e *env) scrape() (map[string][]sample, error) {
	b, err := e.scrapeText()
	if err != nil {
		return nil, err
	}
	return parseExposition(b)
}

// parseExposition parses the samples of the fleet_* families of a text
// exposition. It handles what the exporter emits: no timestamps, quoted
// label values with \\, \" and \n escapes.
func parseExposition(b []byte) (map[string][]sample, error) {
	out := map[string][]sample{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "fleet_") {
			continue
		}
		name, rest := line, ""
		labels := map[string]string{}
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			var err error
			rest, err = parseLabels(rest[1:], labels)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", line, err)
			}
		}
		fields := strings.Fields(rest)
		if len(fields) != 1 {
			return nil, fmt.Errorf("%q: want exactly one value after the labels", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		out[name] = append(out[name], sample{labels: labels, value: v})
	}
	return out, nil
}

// parseLabels reads `name="value",...}` into labels and returns the rest.
func parseLabels(s string, labels map[string]string) (string, error) {
	for {
		s = strings.TrimLeft(s, ",")
		if strings.HasPrefix(s, "}") {
			return s[1:], nil
		}
		eq := strings.Index(s, `="`)
		if eq < 0 {
			return "", errors.New("label without =\"")
		}
		name := s[:eq]
		s = s[eq+2:]
		var v strings.Builder
		for {
			if s == "" {
				return "", errors.New("unterminated label value")
			}
			c := s[0]
			s = s[1:]
			if c == '"' {
				break
			}
			if c == '\\' && s != "" {
				switch s[0] {
				case 'n':
					v.WriteByte('\n')
				default:
					v.WriteByte(s[0])
				}
				s = s[1:]
				continue
			}
			v.WriteByte(c)
		}
		labels[name] = v.String()
	}
}

// api calls a Prometheus HTTP API endpoint (form values as a POST when not
// nil) and decodes data into out.
func (e *env) api(path string, form url.Values, out any) error {
	return e.prom.API(path, form, out)
}

// query evaluates expr at the current time. Scalars come back as one
// sample without labels.
func (e *env) query(expr string) ([]sample, error) {
	got, err := e.prom.Query(expr)
	if err != nil {
		return nil, err
	}
	out := make([]sample, 0, len(got))
	for _, s := range got {
		out = append(out, sample{labels: s.Labels, value: s.Value})
	}
	return out, nil
}

// promTarget is one active target of /api/v1/targets.
type promTarget struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
}

func (e *env) targets() ([]promTarget, error) {
	var data struct {
		ActiveTargets []promTarget `json:"activeTargets"`
	}
	err := e.api("/api/v1/targets?state=active", nil, &data)
	return data.ActiveTargets, err
}

// promAlert is one alert of /api/v1/alerts.
type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func (e *env) alerts() ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	err := e.api("/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

// promRule is one rule of /api/v1/rules.
type promRule struct {
	Name      string      `json:"name"`
	Type      string      `json:"type"`
	State     string      `json:"state"` // alerting rules: inactive, pending, firing
	Health    string      `json:"health"`
	LastError string      `json:"lastError"`
	Alerts    []promAlert `json:"alerts"`
}

func (e *env) rules() ([]promRule, error) {
	var data struct {
		Groups []struct {
			Name  string     `json:"name"`
			Rules []promRule `json:"rules"`
		} `json:"groups"`
	}
	if err := e.api("/api/v1/rules", nil, &data); err != nil {
		return nil, err
	}
	var out []promRule
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// hostCounts is what /metrics says about one set: hosts with a fleet_host_up
// series and the sum of their values.
type hostCounts struct {
	Hosts, Up int
}

// Down is the number of hosts whose fleet_host_up is 0.
func (c hostCounts) Down() int { return c.Hosts - c.Up }

// countsBySet sums fleet_host_up per set.
func countsBySet(fams map[string][]sample) map[string]hostCounts {
	out := map[string]hostCounts{}
	for _, s := range fams["fleet_host_up"] {
		c := out[s.labels["set"]]
		c.Hosts++
		c.Up += int(s.value)
		out[s.labels["set"]] = c
	}
	return out
}

// hostUp returns fleet_host_up of one host from a scrape, and whether it was
// there.
func hostUp(fams map[string][]sample, set, host string) (float64, bool) {
	for _, s := range fams["fleet_host_up"] {
		if s.labels["set"] == set && s.labels["host"] == host {
			return s.value, true
		}
	}
	return 0, false
}

// waitHostUp waits until the exporter reports fleet_host_up == want for host.
func (e *env) waitHostUp(set, host string, want float64) {
	e.t.Helper()
	eventually(e.t, settleTimeout, fmt.Sprintf("exporter: fleet_host_up{set=%q,host=%q} == %v", set, host, want), func() (bool, string) {
		fams, err := e.scrape()
		if err != nil {
			return false, err.Error()
		}
		v, ok := hostUp(fams, set, host)
		return ok && v == want, fmt.Sprintf("present %v, value %v", ok, v)
	})
}

// outputHash is the exporter's fleet_ssh_command_output_hash of out: the
// first 8 bytes of SHA-256 as a big-endian uint64, shifted right by 12.
func outputHash(out string) float64 {
	sum := sha256.Sum256([]byte(out))
	return float64(binary.BigEndian.Uint64(sum[:8]) >> 12)
}

// labelKey renders a label set in a stable order, for comparisons and
// messages.
func labelKey(l map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(l) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, l[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// runWithTimeout runs a command with a deadline and returns its stdout and
// stderr separately.
func runWithTimeout(timeout time.Duration, stdin []byte, name string, args ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err = cmd.Run()
	return o.Bytes(), e.Bytes(), err
}
