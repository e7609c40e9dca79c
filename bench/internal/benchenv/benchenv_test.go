package benchenv

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m)
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"empty", nil, 0},
		{"one", []float64{7}, 7},
		{"odd unsorted", []float64{9, 1, 5}, 5},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"outlier", []float64{1, 1000, 2}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]float64(nil), tt.in...)
			if got := Median(tt.in); got != tt.want {
				t.Errorf("Median(%v) = %v, want %v", tt.in, got, tt.want)
			}
			if diff := cmp.Diff(in, tt.in); diff != "" {
				t.Errorf("Median modified its input (-before +after):\n%s", diff)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    ProcStat
		wantErr bool
	}{
		{
			name: "plain",
			in:   "1234 (sshd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 1 0 100 1000 200",
			want: ProcStat{PPID: 1, CPU: 3 * time.Second, ChildCPU: 500 * time.Millisecond},
		},
		{
			name: "name with spaces and parens",
			in:   "77 (a (b) c) R 42 77 77 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 5 6 7",
			want: ProcStat{PPID: 42, CPU: 30 * time.Millisecond, ChildCPU: 70 * time.Millisecond},
		},
		{name: "truncated", in: "1 (x) S 1 2 3", wantErr: true},
		{name: "no name", in: "1 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15", wantErr: true},
		{name: "garbage number", in: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 zz 0 0 0 20 0 1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseProcStat error = %v, wantErr %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseProcStat (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTreeCPUCountsChildren burns CPU in a child process and checks that
// TreeCPU of this process includes it once the child has been waited for,
// while CPUSelf does not.
func TestTreeCPUCountsChildren(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	self := os.Getpid()
	before, err := TreeCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	selfBefore := CPUSelf()
	// About 0.3 s of CPU in the child, bounded by the loop count.
	cmd := exec.Command(sh, "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	after, err := TreeCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	selfDelta := CPUSelf() - selfBefore
	tick := time.Second / clockTicks
	if got := after - before; got < child-2*tick-selfDelta {
		t.Errorf("TreeCPU grew by %v, want at least the child's %v (self used %v)", got, child, selfDelta)
	}
	if child > 20*tick && selfDelta > child/2 {
		t.Errorf("CPUSelf grew by %v while the child used %v: it counts children", selfDelta, child)
	}
}

func TestRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	before, err := RSS("self")
	if err != nil {
		t.Fatal(err)
	}
	if before <= 0 {
		t.Fatalf("RSS = %d, want > 0", before)
	}
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	after, err := RSS("self")
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 32<<20 {
		t.Errorf("RSS grew by %d bytes after touching 64 MiB, want at least 32 MiB", after-before)
	}
	_ = buf[len(buf)-1]
	if _, err := RSS("0"); err == nil {
		t.Error("RSS of pid 0: want an error")
	}
}

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		q       float64
		buckets []Bucket
		want    float64
	}{
		{
			name:    "first bucket interpolates from zero",
			q:       0.5,
			buckets: []Bucket{{0.1, 100}, {1, 100}, {inf, 100}},
			want:    0.05,
		},
		{
			name:    "middle bucket",
			q:       0.99,
			buckets: []Bucket{{0.01, 90}, {0.1, 100}, {inf, 100}},
			want:    0.01 + 0.09*(99-90)/10,
		},
		{
			name:    "unsorted input",
			q:       0.99,
			buckets: []Bucket{{inf, 100}, {0.1, 100}, {0.01, 90}},
			want:    0.01 + 0.09*(99-90)/10,
		},
		{
			name:    "rank in +Inf bucket gives highest finite bound",
			q:       0.99,
			buckets: []Bucket{{0.01, 50}, {0.1, 60}, {inf, 100}},
			want:    0.1,
		},
		{
			name:    "no observations",
			q:       0.99,
			buckets: []Bucket{{0.1, 0}, {inf, 0}},
			want:    math.NaN(),
		},
		{
			name:    "no +Inf bucket",
			q:       0.5,
			buckets: []Bucket{{0.1, 3}},
			want:    math.NaN(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := HistogramQuantile(tt.q, tt.buckets)
			if math.IsNaN(tt.want) {
				if !math.IsNaN(got) {
					t.Errorf("got %v, want NaN", got)
				}
				return
			}
			if math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSubBuckets(t *testing.T) {
	inf := math.Inf(1)
	a := []Bucket{{0.1, 15}, {1, 20}, {inf, 22}}
	b := []Bucket{{0.1, 5}, {1, 8}, {inf, 8}}
	want := []Bucket{{0.1, 10}, {1, 12}, {inf, 14}}
	if diff := cmp.Diff(want, SubBuckets(a, b)); diff != "" {
		t.Errorf("SubBuckets (-want +got):\n%s", diff)
	}
}

func TestTableAndSection(t *testing.T) {
	tb := NewTable("scenario", "value", "target")
	tb.Row("fresh 1000", "0.72 ms", Verdict(true))
	tb.Row("fresh 10000", "3.1 ms", Verdict(false), "dropped")
	tb.Row("short")
	want := "" +
		"| scenario    | value   | target |\n" +
		"| ----------- | ------- | ------ |\n" +
		"| fresh 1000  | 0.72 ms | PASS   |\n" +
		"| fresh 10000 | 3.1 ms  | MISS   |\n" +
		"| short       |         |        |\n"
	if diff := cmp.Diff(want, tb.Markdown()); diff != "" {
		t.Errorf("Markdown (-want +got):\n%s", diff)
	}

	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := Section{
		Title:   "Scenario X",
		Start:   time.Date(2026, 5, 9, 17, 30, 0, 0, time.UTC),
		Machine: Machine{NProc: 2, CPU: "cpu", Kernel: "k", GoVersion: "go1.26", LoadAvg: "1.00 2.00 3.00"},
		LoadEnd: "0.5 0.5 0.5",
		Command: "./bench/run.sh x",
		Body:    tb.Markdown(),
	}
	for range 2 {
		if err := s.Append(path); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.HasPrefix(got, "# Benchmarks\n\n### Scenario X — 2026-05-09 17:30 UTC\n") {
		t.Errorf("file does not start with the old content and the dated title:\n%s", got)
	}
	for _, sub := range []string{"nproc 2, CPU cpu, kernel k, go1.26, load average 1.00 2.00 3.00", "Command: `./bench/run.sh x`", "| fresh 10000 | 3.1 ms  | MISS   |"} {
		if strings.Count(got, sub) != 2 {
			t.Errorf("want %q twice (two appends) in:\n%s", sub, got)
		}
	}
	if err := (Section{}).Append(""); err != nil {
		t.Errorf("Append with empty path: %v", err)
	}
}
