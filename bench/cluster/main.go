package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/fleet-exporter/fleet_exporter/bench/internal/benchenv"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	app := kingpin.New("clusterbench", "Benchmarks fleet_exporter clusters of real processes on loopback.")
	exporter := app.Flag("exporter", "fleet_exporter binary.").Required().String()
	tmp := app.Flag("tmp", "Scratch directory.").Required().String()
	gossip := app.Command("gossip", "Membership convergence and gossip cost.")
	members := gossip.Flag("members", "Cluster size.").Default("3").Int()
	window := gossip.Flag("window", "Quiet window for CPU and bandwidth.").Default("30s").Duration()
	million := app.Command("million", "1,000,000 ICMP targets over 4 replicas.")
	replicas := million.Flag("replicas", "Replicas.").Default("4").Int()
	steady := million.Flag("steady", "Measured window after the first interval.").Default("4m").Duration()
	after := million.Flag("after-kill", "Measured window after one replica is killed (from one interval after the kill).").Default("2m").Duration()
	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := benchenv.RaiseNofile(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	switch cmd {
	case gossip.FullCommand():
		if *members < 2 || *members > 64 || *window <= 0 || *window > 10*time.Minute {
			fmt.Fprintln(os.Stderr, "members 2..64, window up to 10m")
			return 2
		}
		err = runGossip(ctx, *exporter, *tmp, *members, *window)
	case million.FullCommand():
		if *replicas < 2 || *replicas > 8 || *steady > 20*time.Minute || *after > 20*time.Minute {
			fmt.Fprintln(os.Stderr, "replicas 2..8, windows up to 20m")
			return 2
		}
		err = runMillion(ctx, *exporter, *tmp, *replicas, *steady, *after)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterbench:", err)
		return 1
	}
	return 0
}

// gossipPortBase and webPortBase number the members' ports; nftables in
// cluster.sh counts the gossip range.
const (
	gossipPortBase = 21000
	webPortBase    = 22000
)

// member is one exporter process.
type member struct {
	name, web string
	cmd       *exec.Cmd
	done      chan struct{}
}

func startMember(dir, bin, cfg string, i int, peers []string, extra ...string) (*member, error) {
	name := fmt.Sprintf("m%d", i)
	m := &member{name: name, web: fmt.Sprintf("127.0.0.1:%d", webPortBase+i), done: make(chan struct{})}
	args := []string{
		"--config.file=" + cfg, "--web.listen-address=" + m.web, "--log.level=warn",
		fmt.Sprintf("--cluster.listen-address=127.0.0.1:%d", gossipPortBase+i),
		"--cluster.name=" + name,
	}
	for _, p := range peers {
		args = append(args, "--cluster.peer="+p)
	}
	args = append(args, extra...)
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		_ = m.cmd.Wait()
		logf.Close()
		close(m.done)
	}()
	return m, nil
}

// stop ends the member by its PID: SIGTERM, SIGKILL after 10 s.
func (m *member) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

func (m *member) kill() {
	_ = m.cmd.Process.Kill()
	<-m.done
}

func (m *member) cpu() time.Duration {
	st, err := benchenv.ReadProcStat(m.cmd.Process.Pid)
	if err != nil {
		return 0
	}
	return st.CPU
}

var client = &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{DisableCompression: true}}

// scrapeResult holds the families the benchmark reads and the cost of one
// scrape.
type scrapeResult struct {
	members        float64
	owned          float64
	skipped        float64
	probes         float64
	lag            []benchenv.Bucket
	cpuSeconds     float64
	rss            float64
	duration       time.Duration
	gzipBytes      int64
	plainBytes     int64
	series         int
	ownershipMoved float64
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// scrape fetches /metrics gzip-compressed, as Prometheus does, and parses
// only the self-metrics while counting every line.
func scrape(ctx context.Context, addr string) (scrapeResult, error) {
	var r scrapeResult
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		return r, err
	}
	req.Header.Set("Accept-Encoding", "gzip")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("%s: %s", addr, resp.Status)
	}
	raw := &countingReader{r: resp.Body}
	var body io.Reader = raw
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(raw)
		if err != nil {
			return r, err
		}
		body = zr
	}
	plain := &countingReader{r: body}
	sc := bufio.NewScanner(plain)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		r.series++
		switch {
		case strings.HasPrefix(line, "fleet_icmp_"), strings.HasPrefix(line, "fleet_probe_"), strings.HasPrefix(line, "fleet_host_up"):
			// Per-target series: counted only.
		case strings.HasPrefix(line, "fleet_cluster_members "):
			r.members = value(line)
		case strings.HasPrefix(line, "fleet_cluster_owned_targets "):
			r.owned = value(line)
		case strings.HasPrefix(line, "fleet_cluster_ownership_changes_total "):
			r.ownershipMoved = value(line)
		case strings.HasPrefix(line, "fleet_probes_skipped_total"):
			r.skipped += value(line)
		case strings.HasPrefix(line, "fleet_probes_total"):
			r.probes += value(line)
		case strings.HasPrefix(line, `fleet_scheduler_lag_seconds_bucket{probe="icmp"`):
			le := leRE.FindStringSubmatch(line)
			if le != nil {
				ub, err := strconv.ParseFloat(le[1], 64)
				if le[1] == "+Inf" {
					ub, err = math.Inf(1), nil
				}
				if err == nil {
					r.lag = append(r.lag, benchenv.Bucket{UpperBound: ub, Count: value(line)})
				}
			}
		case strings.HasPrefix(line, "process_cpu_seconds_total "):
			r.cpuSeconds = value(line)
		case strings.HasPrefix(line, "process_resident_memory_bytes "):
			r.rss = value(line)
		}
	}
	if err := sc.Err(); err != nil {
		return r, err
	}
	r.duration = time.Since(start)
	r.gzipBytes, r.plainBytes = raw.n, plain.n
	return r, nil
}

var leRE = regexp.MustCompile(`le="([^"]+)"`)

func value(line string) float64 {
	i := strings.LastIndexByte(line, ' ')
	v, _ := strconv.ParseFloat(line[i+1:], 64)
	return v
}

// nftCounters reads packets and bytes of the gossip counters cluster.sh
// installed (table inet clusterbench).
func nftCounters() (packets, bytes int64, err error) {
	out, err := exec.Command("nft", "list", "table", "inet", "clusterbench").CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("nft: %v: %s", err, out)
	}
	for _, m := range regexp.MustCompile(`counter packets (\d+) bytes (\d+)`).FindAllStringSubmatch(string(out), -1) {
		p, _ := strconv.ParseInt(m[1], 10, 64)
		b, _ := strconv.ParseInt(m[2], 10, 64)
		packets += p
		bytes += b
	}
	return packets, bytes, nil
}

// membersRE reads the member count off the /cluster page, which costs the
// member nothing, unlike a scrape of a large fleet's /metrics.
var membersRE = regexp.MustCompile(`<h2>Members \((\d+)\)</h2>`)

// members returns how many members the member at addr sees.
func members(ctx context.Context, addr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/cluster", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	m := membersRE.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("%s: no member count on /cluster", addr)
	}
	return strconv.Atoi(string(m[1]))
}

// waitMembers polls every member until each sees want members.
func waitMembers(ctx context.Context, ms []*member, want int, limit, every time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		all := true
		for _, m := range ms {
			n, err := members(ctx, m.web)
			if err != nil || n != want {
				all = false
				break
			}
		}
		if all {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("members not at %d after %v", want, limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(every):
		}
	}
}

type gossipResult struct {
	Bench              string  `json:"bench"`
	Members            int     `json:"members"`
	ConvergeSeconds    float64 `json:"converge_seconds"`
	WindowSeconds      float64 `json:"window_seconds"`
	CPUPerMemberMillis float64 `json:"cpu_per_member_millicores"`
	BytesPerSecond     float64 `json:"gossip_bytes_per_second"`
	PacketsPerSecond   float64 `json:"gossip_packets_per_second"`
	DetectDeadSeconds  float64 `json:"detect_dead_seconds"`
	Load               string  `json:"load"`
}

func runGossip(ctx context.Context, bin, tmp string, n int, window time.Duration) error {
	dir, err := os.MkdirTemp(tmp, fmt.Sprintf("gossip-%d-", n))
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "fleet.yml")
	if err := os.WriteFile(cfg, []byte("global: {interval: 60s, timeout: 1s}\nhost_sets:\n  - name: one\n    hosts: [\"127.0.0.1\"]\n    probes:\n      tcp: {port: 9}\n"), 0o644); err != nil {
		return err
	}
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", gossipPortBase+i))
	}
	var ms []*member
	defer func() {
		for _, m := range ms {
			m.stop()
		}
	}()
	// All members at once, as a StatefulSet with podManagementPolicy
	// Parallel starts them; each lists every member, itself included.
	for i := range n {
		m, err := startMember(dir, bin, cfg, i, peers)
		if err != nil {
			return err
		}
		ms = append(ms, m)
	}
	conv, err := waitMembers(ctx, ms, n, 2*time.Minute, 50*time.Millisecond)
	if err != nil {
		return err
	}
	// Let the join traffic pass, then measure a quiet window.
	time.Sleep(5 * time.Second)
	cpu0 := make([]time.Duration, n)
	for i, m := range ms {
		cpu0[i] = m.cpu()
	}
	p0, b0, err := nftCounters()
	if err != nil {
		return err
	}
	start := time.Now()
	time.Sleep(window)
	p1, b1, err := nftCounters()
	if err != nil {
		return err
	}
	elapsed := time.Since(start).Seconds()
	var cpu time.Duration
	for i, m := range ms {
		cpu += m.cpu() - cpu0[i]
	}
	ms[n-1].kill()
	ms = ms[:n-1]
	detect, err := waitMembers(ctx, ms, n-1, 2*time.Minute, 50*time.Millisecond)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(gossipResult{
		Bench: "gossip", Members: n, ConvergeSeconds: conv.Seconds(), WindowSeconds: elapsed,
		CPUPerMemberMillis: cpu.Seconds() / elapsed / float64(n) * 1000,
		BytesPerSecond:     float64(b1-b0) / elapsed, PacketsPerSecond: float64(p1-p0) / elapsed,
		DetectDeadSeconds: detect.Seconds(), Load: benchenv.LoadAvg(),
	})
}

type replicaResult struct {
	Bench           string  `json:"bench"`
	Phase           string  `json:"phase"`
	Replica         string  `json:"replica"`
	Owned           float64 `json:"owned_targets"`
	WindowSeconds   float64 `json:"window_seconds"`
	Probes          float64 `json:"probes"`
	Skipped         float64 `json:"skipped"`
	LagP99Seconds   float64 `json:"lag_p99_seconds"`
	CPUCores        float64 `json:"cpu_cores"`
	RSSBytes        float64 `json:"rss_bytes"`
	ScrapeSeconds   float64 `json:"scrape_seconds"`
	ScrapeGzipBytes int64   `json:"scrape_gzip_bytes"`
	ScrapePlainByte int64   `json:"scrape_plain_bytes"`
	Series          int     `json:"series"`
	OwnershipMoved  float64 `json:"ownership_changes"`
	Load            string  `json:"load"`
	Note            string  `json:"note,omitempty"`
}

func millionConfig(replicas int) string {
	var b strings.Builder
	b.WriteString("global:\n  interval: 60s\n  timeout: 2s\n  max_targets: 1000000\n  max_targets_per_set: 262144\n  concurrency: 8192\n  limits:\n    icmp: {concurrency: 8192}\nhost_sets:\n")
	for s := range 4 {
		fmt.Fprintf(&b, "  - name: m%d\n    hosts: [\"127.[%d-%d].[0-249].[0-249]\"]\n    probes:\n      icmp: {count: 1}\n", s, 16+4*s, 19+4*s)
	}
	return b.String()
}

// scrapeRetry scrapes once more after a failure: a scrape cut short on a
// loaded machine says nothing about the cluster.
func scrapeRetry(ctx context.Context, addr string) (scrapeResult, error) {
	r, err := scrape(ctx, addr)
	if err == nil {
		return r, nil
	}
	fmt.Fprintf(os.Stderr, "clusterbench: scrape of %s failed (%v); retrying\n", addr, err)
	time.Sleep(5 * time.Second)
	return scrape(ctx, addr)
}

// measure scrapes every live replica at the start and the end of window
// and emits one result per replica.
func measure(ctx context.Context, ms []*member, phase string, window time.Duration, note string) error {
	begin := make([]scrapeResult, len(ms))
	for i, m := range ms {
		r, err := scrapeRetry(ctx, m.web)
		if err != nil {
			return err
		}
		begin[i] = r
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(window):
	}
	for i, m := range ms {
		rss, _ := benchenv.RSS(strconv.Itoa(m.cmd.Process.Pid))
		end, err := scrapeRetry(ctx, m.web)
		if err != nil {
			return err
		}
		elapsed := time.Since(start).Seconds()
		lag := benchenv.HistogramQuantile(0.99, benchenv.SubBuckets(end.lag, begin[i].lag))
		if err := json.NewEncoder(os.Stdout).Encode(replicaResult{
			Bench: "million", Phase: phase, Replica: m.name, Owned: end.owned, WindowSeconds: elapsed,
			Probes: end.probes - begin[i].probes, Skipped: end.skipped - begin[i].skipped, LagP99Seconds: lag,
			CPUCores: (end.cpuSeconds - begin[i].cpuSeconds) / elapsed, RSSBytes: float64(rss),
			ScrapeSeconds: end.duration.Seconds(), ScrapeGzipBytes: end.gzipBytes, ScrapePlainByte: end.plainBytes,
			Series: end.series, OwnershipMoved: end.ownershipMoved, Load: benchenv.LoadAvg(), Note: note,
		}); err != nil {
			return err
		}
	}
	return nil
}

func runMillion(ctx context.Context, bin, tmp string, n int, steady, after time.Duration) error {
	dir, err := os.MkdirTemp(tmp, "million-")
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "fleet.yml")
	if err := os.WriteFile(cfg, []byte(millionConfig(n)), 0o644); err != nil {
		return err
	}
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", gossipPortBase+i))
	}
	var ms []*member
	defer func() {
		for _, m := range ms {
			m.stop()
		}
	}()
	t0 := time.Now()
	for i := range n {
		// A scrape of a quarter million targets on a loaded machine can
		// take longer than the default write timeout of 60 s.
		m, err := startMember(dir, bin, cfg, i, peers, "--web.max-requests=4", "--web.write-timeout=5m")
		if err != nil {
			return err
		}
		ms = append(ms, m)
	}
	_, err = waitMembers(ctx, ms, n, 15*time.Minute, time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "clusterbench: %d replicas up and agreeing on %d members %v after start\n", n, n, time.Since(t0).Round(time.Millisecond))
	// The first interval spreads every target over its phase; measure after it.
	time.Sleep(70 * time.Second)
	if err := measure(ctx, ms, "steady", steady, ""); err != nil {
		return err
	}
	victim := ms[n-1]
	victim.kill()
	killedAt := time.Now()
	ms = ms[:n-1]
	detect, err := waitMembers(ctx, ms, n-1, 5*time.Minute, 200*time.Millisecond)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "clusterbench: %s SIGKILLed; survivors agree on %d members after %v\n", victim.name, n-1, detect.Round(time.Millisecond))
	// The takeover window: from the kill to one interval after the
	// survivors noticed, while they start the absorbed quarter.
	if err := measure(ctx, ms, "takeover", time.Until(killedAt.Add(detect+60*time.Second)), fmt.Sprintf("from %v after the kill; detection took %v", time.Since(killedAt).Round(time.Second), detect.Round(time.Millisecond))); err != nil {
		return err
	}
	return measure(ctx, ms, "after", after, "")
}
