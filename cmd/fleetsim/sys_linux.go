package main

import (
	"syscall"
)

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit: every
// listener and every connection costs one descriptor. It returns the new
// soft limit.
func raiseFDLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}

// fdLimit returns the current soft RLIMIT_NOFILE.
func fdLimit() (uint64, bool) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, false
	}
	return lim.Cur, true
}

// workerSysProcAttr makes the kernel send SIGTERM to a worker when the parent
// dies, so a killed parent (SIGKILL, test timeout) leaves no orphans holding
// the fleet's addresses. Pdeathsig fires when the forking OS thread exits,
// which in Go practically means the process (golang/go#27505).
func workerSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
