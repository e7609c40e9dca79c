package benchenv

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// Table is a Markdown table built row by row.
type Table struct {
	header []string
	rows   [][]string
}

// NewTable returns a table with the given column headers.
func NewTable(header ...string) *Table { return &Table{header: header} }

// Row appends one row; each cell is formatted with %v. Missing cells are
// left empty, extra ones dropped.
func (t *Table) Row(cells ...any) {
	r := make([]string, len(t.header))
	for i := range min(len(cells), len(r)) {
		r[i] = fmt.Sprint(cells[i])
	}
	t.rows = append(t.rows, r)
}

// Markdown renders the table with columns padded to equal width, so it
// reads as well on a terminal as in the rendered file.
func (t *Table) Markdown() string {
	w := make([]int, len(t.header))
	for i, h := range t.header {
		w[i] = max(len(h), 3)
	}
	for _, r := range t.rows {
		for i, c := range r {
			w[i] = max(w[i], len(c))
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i, c := range cells {
			fmt.Fprintf(&b, " %-*s |", w[i], c)
		}
		b.WriteString("\n")
	}
	line(t.header)
	sep := make([]string, len(w))
	for i := range w {
		sep[i] = strings.Repeat("-", w[i])
	}
	line(sep)
	for _, r := range t.rows {
		line(r)
	}
	return b.String()
}

// Section is one dated block of results appended to BENCHMARKS.md.
type Section struct {
	// Title names the scenario, e.g. "SSH, fresh connection per probe".
	Title string
	// Start is when the measurement began.
	Start time.Time
	// Machine is the host description; its load average is taken at start.
	Machine Machine
	// LoadEnd is the load average when the measurement ended.
	LoadEnd string
	// Command reproduces the run.
	Command string
	// Body is the Markdown of the results: tables and notes.
	Body string
}

// Markdown renders the section.
func (s Section) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s — %s\n\n", s.Title, s.Start.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Machine: %s (load average at end: %s).\n\n", s.Machine, s.LoadEnd)
	fmt.Fprintf(&b, "Command: `%s`\n\n", s.Command)
	b.WriteString(strings.TrimRight(s.Body, "\n"))
	b.WriteString("\n\n")
	return b.String()
}

// Append appends the section to the file at path, creating it if needed.
// An empty path does nothing.
func (s Section) Append(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s.Markdown()); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// Bucket is one cumulative histogram bucket: Count observations were at
// most UpperBound.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// HistogramQuantile estimates the q-quantile (0 < q < 1) from cumulative
// buckets the way PromQL's histogram_quantile does: linear interpolation
// inside the bucket holding the rank, the lower bound of the first bucket
// taken as 0, and the highest finite bound returned when the rank falls in
// the +Inf bucket. It returns NaN when there are no observations.
func HistogramQuantile(q float64, buckets []Bucket) float64 {
	if len(buckets) == 0 || q < 0 || q > 1 {
		return math.NaN()
	}
	bs := append([]Bucket(nil), buckets...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].UpperBound < bs[j].UpperBound })
	total := bs[len(bs)-1].Count
	if !math.IsInf(bs[len(bs)-1].UpperBound, 1) || total == 0 {
		return math.NaN()
	}
	rank := q * total
	i := sort.Search(len(bs), func(i int) bool { return bs[i].Count >= rank })
	if i == len(bs)-1 {
		if len(bs) < 2 {
			return math.NaN()
		}
		return bs[len(bs)-2].UpperBound
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = bs[i-1].UpperBound, bs[i-1].Count
	}
	upper, in := bs[i].UpperBound, bs[i].Count-below
	if in == 0 {
		return upper
	}
	return lower + (upper-lower)*(rank-below)/in
}

// SubBuckets returns a-b bucket by bucket (same bounds in both), the
// histogram of the observations made between two scrapes.
func SubBuckets(a, b []Bucket) []Bucket {
	prev := make(map[float64]float64, len(b))
	for _, x := range b {
		prev[x.UpperBound] = x.Count
	}
	out := make([]Bucket, len(a))
	for i, x := range a {
		out[i] = Bucket{UpperBound: x.UpperBound, Count: x.Count - prev[x.UpperBound]}
	}
	return out
}
