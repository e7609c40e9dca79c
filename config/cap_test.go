package config

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// atCapYAML is a config of exactly DefaultMaxTargets targets: 500,000
// hosts from one range entry, probed by ICMP and TCP.
const atCapYAML = "global: {max_targets_per_set: 500000}\nhost_sets:\n" +
	"- name: big\n  hosts: ['h[000001-500000].example.com']\n  probes: {icmp: {}, tcp: {port: 22}}\n"

// TestMaxTargetsAtCap parses and expands a config at the default
// max_targets and bounds the time and the heap it takes. Before the cap
// was counted up front and fingerprints were hashed from a digest, a
// million targets took over 2s and 800 MB of allocations.
func TestMaxTargetsAtCap(t *testing.T) {
	if testing.Short() {
		t.Skip("expands a million targets")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start, cpu0 := time.Now(), cpuTime(t)
	cfg, err := Parse([]byte(atCapYAML), "cap.yml")
	if err != nil {
		t.Fatal(err)
	}
	targets, warnings, err := cfg.Targets()
	took, cpu := time.Since(start), cpuTime(t)-cpu0
	runtime.ReadMemStats(&after)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("Targets: %v %v", err, warnings)
	}
	if len(targets) != DefaultMaxTargets {
		t.Fatalf("got %d targets, want %d", len(targets), DefaultMaxTargets)
	}
	// HeapAlloc after the run still holds the targets: it is what a
	// running exporter keeps. TotalAlloc adds the garbage made on the way.
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	total := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d targets in %v (%v of CPU), heap +%d MB, %d MB allocated", len(targets), took, cpu, heap>>20, total>>20)
	// CPU time, not the wall clock, which on a shared machine also
	// measures the neighbours.
	if bound := timeBound(2 * time.Second); cpu > bound {
		t.Errorf("took %v of CPU, want at most %v", cpu, bound)
	}
	if heap > 1<<30 || total > 1<<30 {
		t.Errorf("heap grew by %d bytes, %d allocated; want at most 1 GiB each", heap, total)
	}
	runtime.KeepAlive(targets)
}

// TestMaxTargetsRefusedEarly checks that a short config far past the cap is
// refused by counting, before anything is expanded: four sets of a
// million hosts, probed twice each, used to take 17s and 3 GB to judge.
func TestMaxTargetsRefusedEarly(t *testing.T) {
	var b strings.Builder
	b.WriteString("global: {max_targets_per_set: 1048576, max_targets: 4194304}\nhost_sets:\n")
	for _, s := range []string{"a", "b", "c", "d"} {
		b.WriteString("- {name: " + s + ", hosts: ['" + s + "[0000001-1048576]'], probes: {icmp: {}, tcp: {port: 22}}}\n")
	}
	start, cpu0 := time.Now(), cpuTime(t)
	_, err := Parse([]byte(b.String()), "caps.yml")
	took, cpu := time.Since(start), cpuTime(t)-cpu0
	want := `caps.yml:5: host_sets[2] ("c").hosts: the host sets up to this one expand to 6291456 targets (hosts times enabled probes), more than max_targets (4194304)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	t.Logf("refused in %v (%v of CPU)", took, cpu)
	// Sets a and b (4194304 targets) are still expanded to check their
	// names; c and d must not be.
	if bound := timeBound(2 * time.Second); cpu > bound {
		t.Errorf("took %v of CPU, want at most %v", cpu, bound)
	}
}

// BenchmarkParseAtCap measures Parse plus Targets of a config at the
// default max_targets.
func BenchmarkParseAtCap(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		cfg, err := Parse([]byte(atCapYAML), "cap.yml")
		if err != nil {
			b.Fatal(err)
		}
		targets, _, err := cfg.Targets()
		if err != nil || len(targets) != DefaultMaxTargets {
			b.Fatalf("%d targets, %v", len(targets), err)
		}
	}
}

// BenchmarkParseOnlyAtCap measures Parse alone (what --config.check and a
// reload validate before expanding) at the default max_targets.
func BenchmarkParseOnlyAtCap(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse([]byte(atCapYAML), "cap.yml"); err != nil {
			b.Fatal(err)
		}
	}
}
