package knownhosts

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
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
// of one host append it exactly once. It is safe for concurrent use.
type TOFU struct {
	path string

	// mu serialises learning: the check of the learnt keys and the append.
	mu sync.Mutex
	// db is the file as it was opened; learnt holds the keys appended
	// since, by host.
	db     *DB
	learnt map[hostAddr]ssh.PublicKey
}

// OpenTOFU loads the known_hosts file at path for trust-on-first-use,
// creating it (mode 0600) when it does not exist. A file that exists but
// does not parse is an error: nothing is learnt over a file that cannot be
// read.
func OpenTOFU(path string) (*TOFU, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("known_hosts_file %q: %v", path, pathError(err))
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("known_hosts_file %q: %v", path, err)
	}
	db, err := Load(path)
	if err != nil {
		return nil, err
	}
	return &TOFU{path: path, db: db, learnt: map[hostAddr]ssh.PublicKey{}}, nil
}

// Check is the host key callback of a trust-on-first-use connection. It
// returns learned true when the key was unknown and has just been appended.
func (t *TOFU) Check(hostname string, remote net.Addr, key ssh.PublicKey) (learned bool, err error) {
	if err := t.db.Check(hostname, remote, key); !isUnknownHost(err) {
		return false, err
	}
	a, err := t.addr(hostname)
	if err != nil {
		return false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
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

// append writes one line for hostname and syncs it to disk.
func (t *TOFU) append(hostname string, key ssh.PublicKey) error {
	line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key) + "\n"
	f, err := os.OpenFile(t.path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("known_hosts_file %q: learn %s: %v", t.path, hostname, pathError(err))
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
	return nil
}

// isUnknownHost reports whether err says the file lists no key at all for
// the host (as opposed to other keys, or a revoked one).
func isUnknownHost(err error) bool {
	var ke *knownhosts.KeyError
	return errors.As(err, &ke) && len(ke.Want) == 0
}
