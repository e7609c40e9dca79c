//go:build unix

package preflight

import "syscall"

// softFDLimit returns the process's soft RLIMIT_NOFILE.
func softFDLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}
