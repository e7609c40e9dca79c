// Package benchenv owns the measurement plumbing shared by the benchmark
// programs under bench/: process CPU time and RSS (getrusage and /proc),
// the machine description every result is stamped with, medians, Markdown
// tables with a PASS/MISS column, histogram quantiles from Prometheus text,
// and appending a dated section to BENCHMARKS.md.
//
// It is Linux-only in practice: the /proc readers return errors elsewhere.
package benchenv
