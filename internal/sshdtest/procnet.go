package sshdtest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procNetTCP are the kernel's tables of this network namespace's TCP
// sockets, one line per socket with its state and inode.
var procNetTCP = [...]string{"/proc/net/tcp", "/proc/net/tcp6"}

// tcpListen is the state column value of a listening socket.
const tcpListen = "0A"

// listeningInode returns the inode of the one listening TCP socket that
// process pid holds.
func listeningInode(pid int) (uint64, error) {
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, fmt.Errorf("list sshd's descriptors: %w", err)
	}
	held := make(map[uint64]bool)
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if num, ok := strings.CutPrefix(target, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(num, "]"), 10, 64); err == nil {
				held[ino] = true
			}
		}
	}
	listening, err := listeningInodes()
	if err != nil {
		return 0, err
	}
	var found []uint64
	for ino := range held {
		if listening[ino] {
			found = append(found, ino)
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("sshd (pid %d) holds %d listening TCP sockets, want 1", pid, len(found))
	}
	return found[0], nil
}

// listeningInodes returns the inodes of every listening TCP socket.
func listeningInodes() (map[uint64]bool, error) {
	inodes := make(map[uint64]bool)
	for _, path := range procNetTCP {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local rem st queues timer retrnsmt uid timeout inode ...
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != tcpListen {
				continue
			}
			if ino, err := strconv.ParseUint(fields[9], 10, 64); err == nil {
				inodes[ino] = true
			}
		}
		err = sc.Err()
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	return inodes, nil
}

// waitSocketClosed waits until no process holds the listening socket inode
// any more, for at most timeout.
func waitSocketClosed(inode uint64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		listening, err := listeningInodes()
		if err != nil {
			return err
		}
		if !listening[inode] {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("its listening socket (inode %d) is still open after %v", inode, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
