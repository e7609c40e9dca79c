//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// raiseFDLimit is a no-op outside Linux, where the simulator cannot use the
// whole 127/8 block anyway.
func raiseFDLimit() (uint64, error) {
	return 0, errors.New("raising the fd limit is only implemented on linux")
}

// fdLimit reports no limit outside Linux.
func fdLimit() (uint64, bool) { return 0, false }

// workerSysProcAttr returns no special attributes outside Linux.
func workerSysProcAttr() *syscall.SysProcAttr { return nil }
