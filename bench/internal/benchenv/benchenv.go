package benchenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// Machine describes the host a benchmark ran on.
type Machine struct {
	// NProc is the number of CPUs this process may use.
	NProc int
	// CPU is the first "model name" of /proc/cpuinfo.
	CPU string
	// Kernel is the kernel release (uname -r).
	Kernel string
	// GoVersion is the toolchain that built the benchmark.
	GoVersion string
	// LoadAvg is /proc/loadavg's 1, 5 and 15 minute averages at the time of
	// the description; the machine is shared, so results carry it.
	LoadAvg string
}

// DescribeMachine reads the machine description. Fields it cannot read are
// left as "unknown".
func DescribeMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), CPU: "unknown", Kernel: "unknown", GoVersion: runtime.Version(), LoadAvg: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadAvg = LoadAvg()
	return m
}

// LoadAvg returns the three load averages of /proc/loadavg, or "unknown".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// String renders m on one line, as stamped on every result section.
func (m Machine) String() string {
	return fmt.Sprintf("nproc %d, CPU %s, kernel %s, %s, load average %s", m.NProc, m.CPU, m.Kernel, m.GoVersion, m.LoadAvg)
}

// CPUSelf returns the user plus system CPU time this process has used
// (getrusage RUSAGE_SELF).
func CPUSelf() time.Duration { return rusageCPU(syscall.RUSAGE_SELF) }

// CPUChildren returns the user plus system CPU time of this process's
// children that have been waited for, and their descendants that those
// waited for (getrusage RUSAGE_CHILDREN).
func CPUChildren() time.Duration { return rusageCPU(syscall.RUSAGE_CHILDREN) }

func rusageCPU(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcStat is the part of /proc/PID/stat the benchmarks use.
type ProcStat struct {
	PPID int
	// CPU is utime+stime; ChildCPU is cutime+cstime, the CPU of children the
	// process has waited for (e.g. sshd's per-connection processes).
	CPU, ChildCPU time.Duration
}

// ReadProcStat parses /proc/PID/stat.
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return ProcStat{}, err
	}
	return parseProcStat(string(b))
}

// parseProcStat parses the text of /proc/PID/stat. The command name is in
// parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseProcStat(s string) (ProcStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ProcStat{}, errors.New("proc stat: no command name")
	}
	// After ")": state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return ProcStat{}, fmt.Errorf("proc stat: %d fields after the command name, want at least 15", len(f))
	}
	var v [5]int64
	for j, idx := range []int{1, 11, 12, 13, 14} {
		n, err := strconv.ParseInt(f[idx], 10, 64)
		if err != nil {
			return ProcStat{}, fmt.Errorf("proc stat field %d: %w", idx+3, err)
		}
		v[j] = n
	}
	tick := time.Second / clockTicks
	return ProcStat{
		PPID:     int(v[0]),
		CPU:      time.Duration(v[1]+v[2]) * tick,
		ChildCPU: time.Duration(v[3]+v[4]) * tick,
	}, nil
}

// TreeCPU returns the CPU time of pid and all its live descendants,
// including what each of them has collected from children it waited for.
// It measures a separate server process (fleetsim with its workers, sshd
// with its session processes) without counting the caller.
func TreeCPU(pid int) (time.Duration, error) {
	root, err := ReadProcStat(pid)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	stats := map[int]ProcStat{pid: root}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		if st, err := ReadProcStat(n); err == nil {
			stats[n] = st
		}
	}
	var total time.Duration
	for n, st := range stats {
		if descends(stats, n, pid) {
			total += st.CPU + st.ChildCPU
		}
	}
	return total, nil
}

// descends reports whether n is root or a descendant of root in stats.
func descends(stats map[int]ProcStat, n, root int) bool {
	for range 64 { // bounded: process trees are shallow, /proc may race
		if n == root {
			return true
		}
		st, ok := stats[n]
		if !ok || st.PPID == 0 || st.PPID == n {
			return false
		}
		n = st.PPID
	}
	return false
}

// RSS returns the resident set size of pid ("self" for this process) from
// /proc/PID/status VmRSS.
func RSS(pid string) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) != 2 || fs[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmRSS line")
}

// RaiseNofile raises this process's soft RLIMIT_NOFILE to its hard limit
// and returns the new soft limit.
func RaiseNofile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}

// Settle collects garbage and returns freed memory to the OS, so that a
// measurement does not pay for the previous one's garbage and RSS readings
// reflect live data.
func Settle() {
	runtime.GC()
	debug.FreeOSMemory()
}

// Median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Verdict renders a target check for the PASS/MISS column.
func Verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}
