package knownhosts

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/internal/fileload"
)

// TOFU verifies host keys trust-on-first-use: a host the file does not list
// has the key it presents accepted once and appended to the file, and is
// held to that key from then on. A host the file lists is verified as with
// a strict policy; a later different key is a *knownhosts.KeyError, never a
// silent re-learn.
//
// The file is the exporter's own: created with mode 0600 when missing,
// appended to with O_APPEND, one OpenSSH line per host (readable by
// `ssh -o UserKnownHostsFile=`), and synced to disk before the key is
// accepted, so a restart keeps what was learnt. Concurrent first contacts
// of one host append it exactly once. Refresh picks up edits made by
// others (an operator deleting a host's line after a verified reinstall).
// It is safe for concurrent use.
type TOFU struct {
	path string

	// db is the file as it was last read, swapped by Refresh.
	db atomic.Pointer[DB]

	// mu serialises learning and refreshing: the check of the learnt keys,
	// the append, and the reread of the file.
	mu sync.Mutex
	// learnt holds the keys appended since db was read, by host.
	learnt map[hostAddr]ssh.PublicKey
	// stamp is the file's size and modification time after db was read or
	// our last append; a different one means someone else changed it.
	stamp fileStamp
}

// fileStamp identifies one version of the file.
type fileStamp struct {
	size int64
	mod  time.Time
}

// statStamp returns the stamp of path.
func statStamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: fi.Size(), mod: fi.ModTime()}, nil
}

// OpenTOFU loads the known_hosts file at path for trust-on-first-use,
// creating it (mode 0600) when it does not exist. A file that exists but
// does not parse is an error: nothing is learnt over a file that cannot be
// read.
func OpenTOFU(path string) (*TOFU, error) {
	f, err := openAppend(path, os.O_CREATE)
	if err != nil {
		return nil, fmt.Errorf("known_hosts_file %q: %v", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("known_hosts_file %q: %v", path, err)
	}
	st, err := statStamp(path)
	if err != nil {
		return nil, fmt.Errorf("known_hosts_file %q: %v", path, pathError(err))
	}
	db, err := Load(path)
	if err != nil {
		return nil, err
	}
	t := &TOFU{path: path, learnt: map[hostAddr]ssh.PublicKey{}, stamp: st}
	t.db.Store(db)
	return t, nil
}

// Path is the file's path.
func (t *TOFU) Path() string { return t.path }

// Refresh rereads the file when someone other than t changed it since it
// was read. A file that no longer parses leaves the keys t holds in force
// and is an error; changed reports whether a new version was taken.
func (t *TOFU) Refresh() (changed bool, err error) {
	st, err := statStamp(t.path)
	if err != nil {
		return false, fmt.Errorf("known_hosts_file %q: %v", t.path, pathError(err))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if st == t.stamp {
		return false, nil
	}
	db, err := Load(t.path)
	if err != nil {
		return false, err
	}
	// What was learnt is in the file now (appends are synced before
	// they count), unless someone removed it, which is the point.
	t.db.Store(db)
	clear(t.learnt)
	t.stamp = st
	return true, nil
}

// HostKeyAlgorithms is DB.HostKeyAlgorithms for the file with what was
// learnt since it was read.
func (t *TOFU) HostKeyAlgorithms(hostport string, remote net.Addr) []string {
	if algos := t.db.Load().HostKeyAlgorithms(hostport, remote); algos != nil {
		return algos
	}
	a, err := t.addr(hostport)
	if err != nil {
		return nil
	}
	t.mu.Lock()
	key, ok := t.learnt[a]
	t.mu.Unlock()
	if !ok {
		return nil
	}
	algos := algorithmsForKeyType(key.Type())
	for _, algo := range ssh.SupportedAlgorithms().HostKeys {
		if !strings.Contains(algo, "-cert-") && !slices.Contains(algos, algo) {
			algos = append(algos, algo)
		}
	}
	return algos
}

// Check is the host key callback of a trust-on-first-use connection. It
// returns learned true when the key was unknown and has just been appended.
func (t *TOFU) Check(hostname string, remote net.Addr, key ssh.PublicKey) (learned bool, err error) {
	if err := t.db.Load().Check(hostname, remote, key); !isUnknownHost(err) {
		return false, err
	}
	a, err := t.addr(hostname)
	if err != nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// A Refresh since the check above may have read this host's line.
	if err := t.db.Load().Check(hostname, remote, key); !isUnknownHost(err) {
		return false, err
	}
	if known, ok := t.learnt[a]; ok {
		if string(known.Marshal()) == string(key.Marshal()) {
			return false, nil
		}
		return false, &knownhosts.KeyError{Want: []knownhosts.KnownKey{{Key: known, Filename: t.path}}}
	}
	if err := t.append(hostname, key); err != nil {
		return false, err
	}
	t.learnt[a] = key
	return true, nil
}

// addr is the host and port the knownhosts matchers see for hostname.
func (t *TOFU) addr(hostname string) (hostAddr, error) {
	host, port, err := net.SplitHostPort(hostname)
	if err != nil {
		return hostAddr{}, fmt.Errorf("known_hosts_file %q: host %q: %w", t.path, hostname, err)
	}
	return hostAddr{host, port}, nil
}

// openAppend opens the regular file at path for appending (flag adds
// os.O_CREATE). The open never blocks: without O_NONBLOCK, opening a FIFO
// for writing waits for a reader, which would hold every probe of the file
// behind its lock; O_NOCTTY keeps a terminal from becoming the process's
// controlling terminal. Anything but a regular file is refused.
func openAppend(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK|syscall.O_NOCTTY|flag, 0o600)
	if err != nil {
		// A FIFO without reader fails with ENXIO, which does not say why.
		if fi, serr := os.Stat(path); serr == nil && !fi.Mode().IsRegular() {
			return nil, pathError(fileload.Regular(path, fi))
		}
		return nil, pathError(err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = fileload.Regular(path, fi)
	}
	if err != nil {
		_ = f.Close()
		return nil, pathError(err)
	}
	return f, nil
}

// append writes one line for hostname and syncs it to disk.
func (t *TOFU) append(hostname string, key ssh.PublicKey) error {
	line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key) + "\n"
	f, err := openAppend(t.path, 0)
	if err != nil {
		return fmt.Errorf("known_hosts_file %q: learn %s: %v", t.path, hostname, err)
	}
	_, err = f.WriteString(line)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("known_hosts_file %q: learn %s: %w", t.path, hostname, err)
	}
	// Our own append is not a change by someone else.
	if st, err := statStamp(t.path); err == nil {
		t.stamp = st
	}
	return nil
}

// isUnknownHost reports whether err says the file lists no key at all for
// the host (as opposed to other keys, or a revoked one).
func isUnknownHost(err error) bool {
	var ke *knownhosts.KeyError
	return errors.As(err, &ke) && len(ke.Want) == 0
}
