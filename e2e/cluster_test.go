package e2e

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/internal/promtest"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// clusterSet is the host set of the cluster tests.
const clusterSet = "cluster"

// takeoverBound is the bound docs/scale-out.md gives for survivors to own a
// SIGKILLed member's targets: memberlist's failure detection (at most 30 s
// with its LAN defaults) plus one probe interval (1 s here). The poll adds
// one scrape round on top.
const takeoverBound = 30*time.Second + time.Second + 2*time.Second

// clusterFleet is one config of loopback TCP targets shared by replicas.
type clusterFleet struct {
	t       *testing.T
	dir     string
	bin     string
	cfg     string
	hosts   []string
	gossip  []string // gossip address of replica i
	web     []string // web address of replica i
	k       int
	procs   []*process
	client  *http.Client
	started int
}

// newClusterFleet starts n TCP listeners, one per loopback address
// 127.0.4.1..n on one port, and writes the config naming them.
func newClusterFleet(t *testing.T, n, replicas, k int) *clusterFleet {
	t.Helper()
	exporter, _ := binaries(t)
	dir := t.TempDir()
	port := testutil.TCPListener(t, "127.0.4.1")
	hosts := []string{"127.0.4.1"}
	for i := 2; i <= n; i++ {
		ip := fmt.Sprintf("127.0.4.%d", i)
		testutil.TCPListenerOn(t, ip, port)
		hosts = append(hosts, ip)
	}
	quoted := make([]string, len(hosts))
	for i, h := range hosts {
		quoted[i] = strconv.Quote(h)
	}
	cfg := filepath.Join(dir, "fleet.yml")
	text := fmt.Sprintf("global: {interval: 1s, timeout: 500ms}\nhost_sets:\n  - name: %s\n    hosts: [%s]\n    probes:\n      tcp: {port: %d}\n", clusterSet, strings.Join(quoted, ", "), port)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &clusterFleet{t: t, dir: dir, bin: exporter, cfg: cfg, hosts: hosts, k: k, client: &http.Client{Timeout: 5 * time.Second}}
	for range replicas + 1 {
		f.gossip = append(f.gossip, net.JoinHostPort("127.0.0.1", strconv.Itoa(stablePort(t, "127.0.0.1"))))
		f.web = append(f.web, net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "127.0.0.1"))))
	}
	f.procs = make([]*process, replicas+1)
	return f
}

// start runs replica i. Every replica gets the peer list of the first
// three, its own address included, as a StatefulSet renders it.
func (f *clusterFleet) start(i int) {
	f.t.Helper()
	args := []string{
		"--config.file=" + f.cfg,
		"--web.listen-address=" + f.web[i],
		"--cluster.listen-address=" + f.gossip[i],
		"--cluster.name=" + fmt.Sprintf("r%d", i),
		"--cluster.replication-factor=" + strconv.Itoa(f.k),
	}
	for _, p := range f.gossip[:3] {
		args = append(args, "--cluster.peer="+p)
	}
	f.started++
	f.procs[i] = startProcess(f.t, f.dir, fmt.Sprintf("r%d-%d", i, f.started), f.bin, args...)
}

// kill SIGKILLs replica i by its PID and waits for it.
func (f *clusterFleet) kill(i int) {
	f.t.Helper()
	p := f.procs[i]
	if err := p.cmd.Process.Kill(); err != nil {
		f.t.Fatal(err)
	}
	<-p.done
	f.procs[i] = nil
}

// view is what one replica's /metrics says.
type view struct {
	members int
	hosts   []string // hosts with a probe result, sorted
	owned   int
	targets int
}

func (f *clusterFleet) scrape(i int) (view, error) {
	resp, err := f.client.Get("http://" + f.web[i] + "/metrics")
	if err != nil {
		return view{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return view{}, err
	}
	fam, err := parseExposition(b)
	if err != nil {
		return view{}, err
	}
	var v view
	for _, s := range fam["fleet_probe_success"] {
		if s.labels["set"] == clusterSet {
			v.hosts = append(v.hosts, s.labels["host"])
		}
	}
	slices.Sort(v.hosts)
	for _, s := range fam["fleet_cluster_members"] {
		v.members = int(s.value)
	}
	for _, s := range fam["fleet_cluster_owned_targets"] {
		v.owned = int(s.value)
	}
	for _, s := range fam["fleet_targets"] {
		if s.labels["set"] == clusterSet {
			v.targets += int(s.value)
		}
	}
	return v, nil
}

// owners scrapes the running replicas and maps each host to the replicas
// probing it. ok reports that every replica sees the running count of
// members, counts what it probes in fleet_targets and
// fleet_cluster_owned_targets alike, and every host is probed by exactly
// min(k, running) replicas.
func (f *clusterFleet) owners() (owners map[string][]int, ok bool, detail string) {
	owners = map[string][]int{}
	running := 0
	for i, p := range f.procs {
		if p == nil {
			continue
		}
		running++
		if gone, why := p.exited(); gone {
			f.t.Fatal(why)
		}
		v, err := f.scrape(i)
		if err != nil {
			return nil, false, fmt.Sprintf("r%d: %v", i, err)
		}
		for _, h := range v.hosts {
			owners[h] = append(owners[h], i)
		}
		defer func() {
			if ok && (v.targets != v.owned || len(v.hosts) != v.owned) {
				ok, detail = false, fmt.Sprintf("r%d: fleet_targets %d, fleet_cluster_owned_targets %d, %d hosts with results", i, v.targets, v.owned, len(v.hosts))
			}
		}()
		if v.members != 0 {
			defer func() {
				if ok && v.members != running {
					ok, detail = false, fmt.Sprintf("r%d sees %d members, %d running", i, v.members, running)
				}
			}()
		}
	}
	want := min(f.k, running)
	for _, h := range f.hosts {
		if len(owners[h]) != want {
			return owners, false, fmt.Sprintf("host %s probed by %v, want %d replicas", h, owners[h], want)
		}
	}
	if len(owners) != len(f.hosts) {
		return owners, false, fmt.Sprintf("%d hosts probed, want %d", len(owners), len(f.hosts))
	}
	return owners, true, ""
}

// settled waits until owners reports a consistent cluster and returns the
// owners and how long that took.
func (f *clusterFleet) settled(what string, timeout time.Duration) (map[string][]int, time.Duration) {
	f.t.Helper()
	start := time.Now()
	var got map[string][]int
	eventually(f.t, timeout, what, func() (bool, string) {
		o, ok, detail := f.owners()
		got = o
		return ok, detail
	})
	return got, time.Since(start)
}

// TestClusterGossip runs three replicas of one fleet on loopback with
// K=1: every host is probed exactly once; after a SIGKILL the survivors
// take the dead member's hosts within the documented bound; the member
// restarted under its name takes exactly its hosts back; a fourth replica
// takes at most 30 %, all of it moved to it.
func TestClusterGossip(t *testing.T) {
	t.Parallel()
	f := newClusterFleet(t, 240, 3, 1)
	for i := range 3 {
		f.start(i)
	}
	first, took := f.settled("three replicas probe every host once", settleTimeout)
	t.Logf("three replicas settled in %v", took.Round(10*time.Millisecond))
	of := func(o map[string][]int, r int) []string {
		var hs []string
		for h, rs := range o {
			if slices.Contains(rs, r) {
				hs = append(hs, h)
			}
		}
		slices.Sort(hs)
		return hs
	}
	r1 := of(first, 1)
	if frac := float64(len(r1)) / float64(len(f.hosts)); frac < 0.2 || frac > 0.47 {
		t.Errorf("r1 owns %d of %d hosts, want about a third", len(r1), len(f.hosts))
	}

	f.kill(1)
	afterKill, took := f.settled("two survivors probe every host once", takeoverBound+settleTimeout)
	t.Logf("survivors own the killed member's %d hosts after %v", len(r1), took.Round(10*time.Millisecond))
	if took > takeoverBound {
		t.Errorf("takeover took %v, documented bound %v", took, takeoverBound)
	}
	for h, rs := range first {
		if rs[0] != 1 && !slices.Equal(afterKill[h], rs) {
			t.Errorf("host %s moved from r%d to %v though r1 did not own it", h, rs[0], afterKill[h])
		}
	}

	f.start(1)
	back, took := f.settled("restarted r1 takes its hosts back", settleTimeout)
	t.Logf("restarted member owns its hosts again after %v", took.Round(10*time.Millisecond))
	if !maps.EqualFunc(first, back, slices.Equal) {
		for h := range first {
			if !slices.Equal(first[h], back[h]) {
				t.Errorf("host %s: owner %v before the kill, %v after the restart", h, first[h], back[h])
			}
		}
	}

	f.start(3)
	four, took := f.settled("four replicas probe every host once", settleTimeout)
	t.Logf("four replicas settled in %v", took.Round(10*time.Millisecond))
	moved := 0
	for h, rs := range back {
		if slices.Equal(four[h], rs) {
			continue
		}
		moved++
		if !slices.Equal(four[h], []int{3}) {
			t.Errorf("host %s moved from %v to %v, not to the new replica", h, rs, four[h])
		}
	}
	if frac := float64(moved) / float64(len(f.hosts)); frac > 0.30 || moved == 0 {
		t.Errorf("adding a fourth replica moved %d of %d hosts (%.0f %%), want more than none and at most 30 %%", moved, len(f.hosts), 100*frac)
	} else {
		t.Logf("adding a fourth replica moved %d of %d hosts (%.0f %%)", moved, len(f.hosts), 100*frac)
	}
}

// TestClusterReplicatedPrometheus runs three replicas with K=2: every host
// is probed by exactly two, and a real Prometheus scraping all three sees
// each host twice in the raw series and once in the shipped
// deduplicating recording rules.
func TestClusterReplicatedPrometheus(t *testing.T) {
	t.Parallel()
	needTool(t, promtest.Binary, "prometheus")
	f := newClusterFleet(t, 150, 3, 2)
	for i := range 3 {
		f.start(i)
	}
	f.settled("three replicas probe every host twice", settleTimeout)

	root := repoRoot(t)
	e := &env{t: t, dir: f.dir, client: f.client}
	e.prom = promtest.Start(t, promtest.Options{
		Targets: f.web,
		RuleFiles: []string{
			filepath.Join(root, "deploy", "prometheus", "rules.yml"),
			filepath.Join(root, "deploy", "prometheus", "alerts.yml"),
		},
	})

	count := func(expr string) (int, map[string]int, error) {
		ss, err := e.query(expr)
		if err != nil {
			return 0, nil, err
		}
		per := map[string]int{}
		for _, s := range ss {
			per[s.labels["host"]]++
		}
		return len(ss), per, nil
	}
	// Wait fails the test at once should Prometheus exit.
	e.prom.Wait(2*settleTimeout, "raw series twice, deduplicated once per host", func() (bool, string) {
		raw, _, err := count(`fleet_probe_success{set="cluster"}`)
		if err != nil {
			return false, err.Error()
		}
		dedup, per, err := count(`fleet_host:probe_success:max{set="cluster"}`)
		if err != nil {
			return false, err.Error()
		}
		up, _, err := count(`fleet_host:host_up:max{set="cluster"}`)
		if err != nil {
			return false, err.Error()
		}
		if raw != 2*len(f.hosts) || dedup != len(f.hosts) || len(per) != len(f.hosts) || up != len(f.hosts) {
			return false, fmt.Sprintf("raw %d (want %d), deduplicated %d over %d hosts, host_up %d (want %d)", raw, 2*len(f.hosts), dedup, len(per), up, len(f.hosts))
		}
		sum, err := e.query(`fleet:hosts_up:sum{set="cluster"}`)
		if err != nil || len(sum) != 1 || int(sum[0].value) != len(f.hosts) {
			return false, fmt.Sprintf("fleet:hosts_up:sum %v %v, want %d", sum, err, len(f.hosts))
		}
		return true, ""
	})
}
