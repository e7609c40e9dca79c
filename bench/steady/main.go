package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
	"github.com/fleet-exporter/fleet_exporter/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options is the command line.
type options struct {
	exporter, fleetsim  string
	sshHosts, icmpHosts int
	interval            time.Duration
	duration            time.Duration
	sample              time.Duration
	profile             time.Duration
	sshConcurrency      int
	icmpConcurrency     int
	port                int
	tmp, out            string
	profileOut          string
	maxLag              time.Duration
	maxBurst            float64
	args                []string
}

// maxDuration bounds --duration: the run must end.
const maxDuration = 30 * time.Minute

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("steady", "Steady-state benchmark: one fleet_exporter process, fleetsim SSH hosts and loopback ICMP hosts.")
	app.UsageWriter(stderr)
	app.ErrorWriter(stderr)
	app.HelpFlag.Short('h')
	o := options{args: args}
	app.Flag("exporter", "fleet_exporter binary (go build).").Required().StringVar(&o.exporter)
	app.Flag("fleetsim", "fleetsim binary (go build ./cmd/fleetsim).").Required().StringVar(&o.fleetsim)
	app.Flag("ssh-hosts", "Simulated SSH hosts (fleetsim, 127.60.0.1 upwards).").Default("10000").IntVar(&o.sshHosts)
	app.Flag("icmp-hosts", "ICMP hosts (127.80.0.1 upwards, loopback).").Default("100000").IntVar(&o.icmpHosts)
	app.Flag("interval", "Probe interval of both sets.").Default("60s").DurationVar(&o.interval)
	app.Flag("duration", "How long to run the exporter (at most 30m).").Default("4m").DurationVar(&o.duration)
	app.Flag("sample", "Sampling period for CPU, RSS and /metrics.").Default("5s").DurationVar(&o.sample)
	app.Flag("profile", "Length of the CPU profile taken in the middle of the run; 0 for none.").Default("30s").DurationVar(&o.profile)
	app.Flag("ssh-concurrency", "global.limits.ssh.concurrency.").Default("128").IntVar(&o.sshConcurrency)
	app.Flag("icmp-concurrency", "global.limits.icmp.concurrency.").Default("1024").IntVar(&o.icmpConcurrency)
	app.Flag("profile-out", "Keep the CPU profile in this file (default: deleted with the temp dir).").StringVar(&o.profileOut)
	app.Flag("port", "fleetsim SSH port.").Default("42301").IntVar(&o.port)
	app.Flag("tmp", "Directory for the generated fleet, config, logs and profile.").Default(os.TempDir()).StringVar(&o.tmp)
	app.Flag("out", "Markdown file the results are appended to; empty for none.").Default("BENCHMARKS.md").StringVar(&o.out)
	app.Flag("target.lag", "Target: p99 scheduler lag.").Default("100ms").DurationVar(&o.maxLag)
	app.Flag("target.burst", "Target: no 5 s window above this times the mean probe rate.").Default("1.5").Float64Var(&o.maxBurst)
	if _, err := app.Parse(args); err != nil {
		fmt.Fprintf(stderr, "steady: %v\n", err)
		return 2
	}
	if o.duration <= 0 || o.duration > maxDuration || o.sample <= 0 || o.sample > o.duration {
		fmt.Fprintf(stderr, "steady: need 0 < --sample <= --duration <= %v\n", maxDuration)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := steady(ctx, o, stdout); err != nil {
		fmt.Fprintf(stderr, "steady: %v\n", err)
		return 1
	}
	return 0
}

// sample is one observation of the exporter.
type sample struct {
	at  time.Duration // since the exporter started
	cpu time.Duration // cumulative utime+stime, before the scrape
	// cpuAfter is cpu read again right after the scrape; the difference
	// is the scrape's cost plus the probing that ran meanwhile.
	cpuAfter time.Duration
	rss      int64
	scraped  bool
	probes   map[string]float64 // fleet_probes_total by probe type
	skipped  float64
	lag      map[string][]benchenv.Bucket // fleet_scheduler_lag_seconds by probe
	opened   float64
	scrape   time.Duration // /metrics wall time
	bytes    int64
}

func steady(ctx context.Context, o options, stdout io.Writer) error {
	start, machine := time.Now(), benchenv.DescribeMachine()
	dir, err := os.MkdirTemp(o.tmp, "steady-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The SSH fleet.
	var fleet *benchenv.Fleet
	var sshSet *config.HostSet
	if o.sshHosts > 0 {
		fdir := filepath.Join(dir, "fleet")
		if err := benchenv.FleetGen(ctx, o.fleetsim, fdir, o.sshHosts, "127.60.0.1", o.port, false); err != nil {
			return err
		}
		cfg, err := config.Load(filepath.Join(fdir, "fleet.yml"))
		if err != nil {
			return err
		}
		sshSet = &cfg.HostSets[0]
		workers := 1
		if o.sshHosts > 5000 {
			workers = 2
		}
		if fleet, err = benchenv.FleetServe(ctx, o.fleetsim, fdir, o.sshHosts, "127.60.0.1", o.port, workers); err != nil {
			return err
		}
		defer fleet.Stop()
	}
	cfgPath := filepath.Join(dir, "steady.yml")
	if err := os.WriteFile(cfgPath, []byte(steadyConfig(o, sshSet)), 0o600); err != nil {
		return err
	}

	// The exporter.
	listen, err := freeAddr()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "exporter.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(o.exporter, "--config.file", cfgPath, "--web.listen-address", listen,
		"--web.enable-pprof", "--log.level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	t0 := time.Now()
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	pid := cmd.Process.Pid
	base := "http://" + listen
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	if err := waitReady(ctx, client, base, exited); err != nil {
		b, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("%w; exporter log:\n%s", err, tail(b, 2000))
	}
	fmt.Fprintf(stdout, "exporter pid %d on %s, %d SSH + %d ICMP targets, interval %v, running %v\n",
		pid, listen, o.sshHosts, o.icmpHosts, o.interval, o.duration)

	// A CPU profile from the middle of the run.
	profPath := filepath.Join(dir, "cpu.pprof")
	if o.profileOut != "" {
		profPath = o.profileOut
	}
	profDone := make(chan error, 1)
	if o.profile > 0 {
		go func() {
			delay := max(o.duration/2-o.profile/2, 0)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				profDone <- ctx.Err()
				return
			}
			profDone <- fetchProfile(ctx, base, o.profile, profPath)
		}()
	} else {
		profDone <- errors.New("disabled")
	}

	var samples []sample
	tick := time.NewTicker(o.sample)
	defer tick.Stop()
	end := time.After(o.duration)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("exporter exited early; log:\n%s", tail(b, 2000))
		case <-end:
			done = true
		case <-tick.C:
		}
		s := observe(ctx, client, base, pid, time.Since(t0))
		samples = append(samples, s)
		fmt.Fprintf(stdout, "t=%5.0fs cpu=%6.1fs rss=%5.0fMB probes=%v skipped=%.0f scrape=%.0fms (%d bytes) load=%s\n",
			s.at.Seconds(), s.cpu.Seconds(), float64(s.rss)/(1<<20), s.probes, s.skipped, ms(s.scrape), s.bytes, benchenv.LoadAvg())
	}
	profErr := <-profDone
	var fleetCPU time.Duration
	if fleet != nil {
		fleetCPU = fleet.CPU()
	}
	body := summarize(o, samples, fleetCPU)
	if profErr == nil {
		body += profileTop(o.exporter, profPath, o.profile)
	} else {
		body += fmt.Sprintf("\nCPU profile: not taken (%v).\n", profErr)
	}
	s := benchenv.Section{
		Title: "Scenario 6: steady state, one exporter process", Start: start, Machine: machine, LoadEnd: benchenv.LoadAvg(),
		Command: "go run ./bench/steady " + strings.Join(o.args, " "), Body: body,
	}
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, s.Markdown())
	return s.Append(o.out)
}

// steadyConfig writes the exporter config: the fleetsim hosts with the SSH
// probe and the ICMP hosts, both at o.interval.
func steadyConfig(o options, sshSet *config.HostSet) string {
	var b strings.Builder
	maxPerSet := max(o.icmpHosts, o.sshHosts, 65536)
	fmt.Fprintf(&b, "global:\n  interval: %s\n  timeout: 10s\n  concurrency: %d\n  max_targets_per_set: %d\n",
		promDuration(o.interval), o.sshConcurrency+o.icmpConcurrency, maxPerSet)
	fmt.Fprintf(&b, "  limits:\n    icmp:\n      concurrency: %d\n    ssh:\n      concurrency: %d\n", o.icmpConcurrency, o.sshConcurrency)
	b.WriteString("host_sets:\n")
	if sshSet != nil {
		s := sshSet.Probes.SSH
		b.WriteString("  - name: ssh\n    labels:\n      tier: ssh\n    hosts:\n")
		for _, h := range sshSet.Hosts {
			fmt.Fprintf(&b, "      - %s\n", h)
		}
		fmt.Fprintf(&b, "    probes:\n      ssh:\n        port: %d\n        user: %s\n        private_key_file: %s\n"+
			"        known_hosts_file: %s\n        commands:\n          - name: check\n            run: check\n",
			s.Port, s.User, s.PrivateKeyFile, s.KnownHostsFile)
	}
	if o.icmpHosts > 0 {
		b.WriteString("  - name: icmp\n    labels:\n      tier: icmp\n    hosts:\n")
		for _, a := range loopbackAddrs(127, 80, o.icmpHosts) {
			fmt.Fprintf(&b, "      - %s\n", a)
		}
		b.WriteString("    probes:\n      icmp:\n        count: 1\n")
	}
	return b.String()
}

// loopbackAddrs returns n addresses a.b.x.y upwards from a.b.0.1, skipping
// .0 and .255 (as fleetsim does).
func loopbackAddrs(a, b, n int) []string {
	out := make([]string, 0, n)
	for i := 0; len(out) < n; i++ {
		x, y := b+(i>>16), (i>>8)&0xff
		z := i & 0xff
		if z == 0 || z == 255 {
			continue
		}
		out = append(out, fmt.Sprintf("%d.%d.%d.%d", a, x, y, z))
	}
	return out
}

// promDuration formats d as a Prometheus duration ("60s", "1m30s").
func promDuration(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitReady polls /-/ready for up to two minutes (a large config takes a
// while to expand).
func waitReady(ctx context.Context, c *http.Client, base string, exited <-chan struct{}) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/-/ready", nil)
		if resp, err := c.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("exporter exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("exporter not ready within 2 minutes")
}

// observe reads the exporter's CPU and RSS and scrapes its /metrics.
func observe(ctx context.Context, c *http.Client, base string, pid int, at time.Duration) sample {
	s := sample{at: at, probes: map[string]float64{}, lag: map[string][]benchenv.Bucket{}}
	if st, err := benchenv.ReadProcStat(pid); err == nil {
		s.cpu = st.CPU
	}
	s.rss, _ = benchenv.RSS(strconv.Itoa(pid))
	t0 := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := c.Do(req)
	if err != nil {
		s.cpuAfter = s.cpu
		return s
	}
	defer resp.Body.Close()
	cr := &countingReader{r: resp.Body}
	parseMetrics(cr, &s)
	s.scrape, s.bytes, s.scraped = time.Since(t0), cr.n, resp.StatusCode == http.StatusOK
	if st, err := benchenv.ReadProcStat(pid); err == nil {
		s.cpuAfter = st.CPU
	}
	return s
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// parseMetrics picks the few families it needs out of the text exposition
// without building the rest (a large fleet has millions of series).
func parseMetrics(r io.Reader, s *sample) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "fleet_probes_") && !strings.HasPrefix(line, "fleet_scheduler_lag_seconds_bucket") &&
			!strings.HasPrefix(line, "fleet_ssh_connections_opened_total") {
			continue
		}
		name, labels, value, ok := splitSample(line)
		if !ok {
			continue
		}
		switch name {
		case "fleet_probes_total":
			s.probes[labels["probe"]] += value
		case "fleet_probes_skipped_total":
			s.skipped += value
		case "fleet_ssh_connections_opened_total":
			s.opened = value
		case "fleet_scheduler_lag_seconds_bucket":
			le, err := strconv.ParseFloat(labels["le"], 64)
			if err == nil {
				s.lag[labels["probe"]] = append(s.lag[labels["probe"]], benchenv.Bucket{UpperBound: le, Count: value})
			}
		}
	}
}

// splitSample splits `name{a="b",...} value` (label values without escapes,
// which holds for the families parsed here).
func splitSample(line string) (name string, labels map[string]string, value float64, ok bool) {
	labels = map[string]string{}
	var rest string
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return "", nil, 0, false
		}
		name, rest = line[:i], line[j+1:]
		for p := range strings.SplitSeq(line[i+1:j], ",") {
			if k, v, ok := strings.Cut(p, "="); ok {
				labels[k] = strings.Trim(v, `"`)
			}
		}
	} else {
		var ok bool
		name, rest, ok = strings.Cut(line, " ")
		if !ok {
			return "", nil, 0, false
		}
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return name, labels, v, err == nil
}

// fetchProfile saves a CPU profile of length d.
func fetchProfile(ctx context.Context, base string, d time.Duration, path string) error {
	c := &http.Client{Timeout: d + time.Minute}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, int(d.Seconds())), nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// profileTop renders `go tool pprof -top` of the profile, or says why not.
func profileTop(bin, path string, d time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=20", bin, path).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("\nCPU profile: `go tool pprof` failed: %v\n", err)
	}
	return fmt.Sprintf("\nCPU profile of the exporter (%v from the middle of the run), `go tool pprof -top -nodecount=20`:\n\n```\n%s```\n",
		d, strings.TrimLeft(string(out), "\n"))
}

// tail returns at most n bytes from the end of b.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize renders the time series and the checks.
func summarize(o options, ss []sample, fleetCPU time.Duration) string {
	var b strings.Builder
	targets := o.sshHosts + o.icmpHosts
	want := float64(targets) / o.interval.Seconds()
	fmt.Fprintf(&b, "One exporter process (`--web.enable-pprof --log.level warn`), %d SSH hosts (fleetsim, fresh "+
		"connection per probe, one command, `--workers 2`) and %d ICMP hosts (127.80.x.y, count 1), interval %v, "+
		"limits ssh %d / icmp %d, for %v. Running as root in the root network namespace (ping_group_range \"1 0\"), "+
		"so the exporter uses raw ICMP sockets. CPU from /proc/PID/stat, RSS from VmRSS, the rest from a /metrics "+
		"scrape every %v (gzip-encoded, as Prometheus asks; \"scrape MB\" is the decoded size; its cost is included in the "+
		"first CPU figure and estimated separately below). Expected probe rate %d targets ÷ %v = %.0f/s.\n\n",
		o.sshHosts, o.icmpHosts, o.interval, o.sshConcurrency, o.icmpConcurrency, o.duration, o.sample, targets, o.interval, want)

	tb := benchenv.NewTable("t s", "CPU % (window)", "RSS MB", "probes/s (window)", "icmp/s", "ssh/s", "skipped", "scrape ms", "scrape MB")
	var rates []float64
	for i, s := range ss {
		cpuPct, rate, icmp, ssh := "", "", "", ""
		if i > 0 {
			p := ss[i-1]
			dt := (s.at - p.at).Seconds()
			cpuPct = fmt.Sprintf("%.0f", 100*(s.cpu-p.cpu).Seconds()/dt)
			if s.scraped && p.scraped {
				r := (sum(s.probes) - sum(p.probes)) / dt
				rates = append(rates, r)
				rate = fmt.Sprintf("%.0f", r)
				icmp = fmt.Sprintf("%.0f", (s.probes["icmp"]-p.probes["icmp"])/dt)
				ssh = fmt.Sprintf("%.0f", (s.probes["ssh"]-p.probes["ssh"])/dt)
			}
		}
		tb.Row(fmt.Sprintf("%.0f", s.at.Seconds()), cpuPct, fmt.Sprintf("%.0f", float64(s.rss)/(1<<20)), rate, icmp, ssh,
			fmt.Sprintf("%.0f", s.skipped), fmt.Sprintf("%.0f", ms(s.scrape)), fmt.Sprintf("%.1f", float64(s.bytes)/(1<<20)))
	}
	b.WriteString("<details><summary>Samples</summary>\n\n")
	b.WriteString(tb.Markdown())
	b.WriteString("\n</details>\n\n")

	first, last := ss[0], ss[len(ss)-1]
	// Steady window: from the first sample at or after one interval.
	steady := first
	for _, s := range ss {
		if s.at >= o.interval {
			steady = s
			break
		}
	}
	checks := benchenv.NewTable("check", "value", "target", "result")
	dt := (last.at - steady.at).Seconds()
	if dt > 0 {
		cores := (last.cpu - steady.cpu).Seconds() / dt
		probes := sum(last.probes) - sum(steady.probes)
		checks.Row("exporter CPU after the first interval, scrapes included", fmt.Sprintf("%.2f cores (%.0f µs per probe)", cores,
			1e6*(last.cpu-steady.cpu).Seconds()/math.Max(probes, 1)), "", "")
		// Probing alone: CPU between the end of one scrape and the start of
		// the next, over the time between them.
		var gapCPU, gapTime, scrapeCPU float64
		var scrapes int
		for i, s := range ss {
			if s.at <= steady.at {
				continue
			}
			p := ss[i-1]
			gapCPU += (s.cpu - p.cpuAfter).Seconds()
			gapTime += (s.at - p.at - p.scrape).Seconds()
		}
		if gapTime > 0 {
			rate := gapCPU / gapTime
			for _, s := range ss {
				if s.at > steady.at && s.scraped {
					scrapeCPU += (s.cpuAfter - s.cpu).Seconds() - rate*s.scrape.Seconds()
					scrapes++
				}
			}
			checks.Row("exporter CPU between scrapes (probing only)", fmt.Sprintf("%.2f cores (%.0f µs per probe)", rate,
				1e6*rate/math.Max(probes/dt, 1)), "", "")
			if scrapes > 0 {
				checks.Row("exporter CPU per /metrics scrape (estimate)", fmt.Sprintf("%.2f s", scrapeCPU/float64(scrapes)), "", "")
			}
		}
		checks.Row("probe rate after the first interval", fmt.Sprintf("%.0f/s", probes/dt), fmt.Sprintf("%.0f/s", want),
			benchenv.Verdict(probes/dt >= 0.95*want))
	}
	checks.Row("exporter RSS at end", fmt.Sprintf("%.0f MB (%.2f KiB per target)", float64(last.rss)/(1<<20),
		float64(last.rss)/1024/float64(max(targets, 1))), "", "")
	if fleetCPU > 0 {
		checks.Row("fleetsim CPU (whole run, not the exporter's)", fmt.Sprintf("%.1f s", fleetCPU.Seconds()), "", "")
	}
	checks.Row("SSH connections opened", fmt.Sprintf("%.0f", last.opened), "", "")
	for _, probe := range sortedKeys(last.lag) {
		if total(last.lag[probe]) == 0 {
			continue // a probe type with no targets
		}
		all := benchenv.HistogramQuantile(0.99, last.lag[probe])
		st := benchenv.HistogramQuantile(0.99, benchenv.SubBuckets(last.lag[probe], steady.lag[probe]))
		checks.Row("p99 scheduler lag, "+probe+" (whole run)", fmtSeconds(all), fmt.Sprintf("≤ %v", o.maxLag),
			benchenv.Verdict(!math.IsNaN(all) && all <= o.maxLag.Seconds()))
		checks.Row("p99 scheduler lag, "+probe+" (after the first interval)", fmtSeconds(st), fmt.Sprintf("≤ %v", o.maxLag),
			benchenv.Verdict(!math.IsNaN(st) && st <= o.maxLag.Seconds()))
	}
	checks.Row("fleet_probes_skipped_total at end", fmt.Sprintf("%.0f", last.skipped), "0", benchenv.Verdict(last.skipped == 0))
	if len(rates) > 0 {
		peak, where := 0.0, 0
		for i, r := range rates {
			if r > peak {
				peak, where = r, i
			}
		}
		checks.Row("busiest window ÷ expected rate", fmt.Sprintf("%.2f (window %d of %d)", peak/want, where+1, len(rates)),
			fmt.Sprintf("≤ %.1f", o.maxBurst), benchenv.Verdict(peak/want <= o.maxBurst))
		checks.Row("median window ÷ expected rate", fmt.Sprintf("%.2f", benchenv.Median(rates)/want), "", "")
	}
	b.WriteString(checks.Markdown())
	return b.String()
}

// total returns the observation count of cumulative buckets.
func total(bs []benchenv.Bucket) float64 {
	t := 0.0
	for _, b := range bs {
		t = max(t, b.Count)
	}
	return t
}

func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func fmtSeconds(s float64) string {
	if math.IsNaN(s) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f ms", s*1000)
}
