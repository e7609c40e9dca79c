package knownhosts

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
)

func tofuAddr(port int) (string, net.Addr) {
	return fmt.Sprintf("127.0.0.1:%d", port), &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
}

// TestTOFULearnsOnceAndHolds checks the policy's life cycle: an unknown
// host is learnt and written, the same key passes, a swapped key fails, and
// a reopened file (a restart) still holds the key.
func TestTOFULearnsOnceAndHolds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "learnt_hosts")
	first := sshkeys.Generate(t, "ed25519")
	swapped := sshkeys.Generate(t, "ed25519")
	host, remote := tofuAddr(2222)

	tofu, err := OpenTOFU(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("created with mode %v, want 0600", fi.Mode().Perm())
	}
	if learned, err := tofu.Check(host, remote, first.Pub); err != nil || !learned {
		t.Fatalf("first contact: learned=%v err=%v, want learned", learned, err)
	}
	if learned, err := tofu.Check(host, remote, first.Pub); err != nil || learned {
		t.Fatalf("second contact: learned=%v err=%v, want known", learned, err)
	}
	var ke *knownhosts.KeyError
	if _, err := tofu.Check(host, remote, swapped.Pub); !errors.As(err, &ke) || len(ke.Want) != 1 {
		t.Fatalf("swapped key: %v, want a key mismatch naming the learnt key", err)
	}

	restarted, err := OpenTOFU(path)
	if err != nil {
		t.Fatal(err)
	}
	if learned, err := restarted.Check(host, remote, first.Pub); err != nil || learned {
		t.Fatalf("after restart: learned=%v err=%v, want known", learned, err)
	}
	if _, err := restarted.Check(host, remote, swapped.Pub); !errors.As(err, &ke) {
		t.Fatalf("swapped key after restart: %v, want a key mismatch", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "\n"); got != 1 {
		t.Errorf("file has %d lines, want 1:\n%s", got, b)
	}
	// A strict Load of the same file agrees.
	db, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Check(host, remote, first.Pub); err != nil {
		t.Errorf("strict check of the learnt file: %v", err)
	}
}

// TestTOFUConcurrentFirstContacts checks that many simultaneous first
// contacts of many hosts append each host exactly once.
func TestTOFUConcurrentFirstContacts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "learnt_hosts")
	tofu, err := OpenTOFU(path)
	if err != nil {
		t.Fatal(err)
	}
	const hosts, contacts = 40, 8
	keys := make([]sshkeys.Key, hosts)
	for i := range keys {
		keys[i] = sshkeys.Generate(t, "ed25519")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	learned := map[int]int{}
	for i := range hosts {
		for range contacts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				host, remote := tofuAddr(2000 + i)
				l, err := tofu.Check(host, remote, keys[i].Pub)
				if err != nil {
					t.Error(err)
				}
				if l {
					mu.Lock()
					learned[i]++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	for i := range hosts {
		if learned[i] != 1 {
			t.Errorf("host %d learnt %d times, want once", i, learned[i])
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != hosts {
		t.Fatalf("%d lines for %d hosts", len(lines), hosts)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		pattern := strings.Fields(l)[0]
		if seen[pattern] {
			t.Errorf("%s appended twice", pattern)
		}
		seen[pattern] = true
	}
}

// TestTOFUKeepsListedHostsStrict checks that a host the file already lists
// is never re-learnt, and that a file that does not parse is refused.
func TestTOFUKeepsListedHostsStrict(t *testing.T) {
	dir := t.TempDir()
	listed := sshkeys.Generate(t, "ed25519")
	other := sshkeys.Generate(t, "ed25519")
	host, remote := tofuAddr(2200)
	path := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(path, []byte(knownhosts.Line([]string{knownhosts.Normalize(host)}, listed.Pub)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tofu, err := OpenTOFU(path)
	if err != nil {
		t.Fatal(err)
	}
	var ke *knownhosts.KeyError
	if learned, err := tofu.Check(host, remote, other.Pub); learned || !errors.As(err, &ke) {
		t.Fatalf("listed host with another key: learned=%v err=%v, want a mismatch", learned, err)
	}

	bad := filepath.Join(dir, "broken")
	if err := os.WriteFile(bad, []byte("127.0.0.1 ssh-ed25519 not-base64!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTOFU(bad); err == nil {
		t.Error("OpenTOFU accepted a file that does not parse")
	}
}

// TestTOFUFileReadableByOpenSSH checks that ssh-keygen finds a learnt host
// in the file, so `ssh -o UserKnownHostsFile=` can use it.
func TestTOFUFileReadableByOpenSSH(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Skip("ssh-keygen not found: install the Debian package openssh-client")
	}
	path := filepath.Join(t.TempDir(), "learnt_hosts")
	tofu, err := OpenTOFU(path)
	if err != nil {
		t.Fatal(err)
	}
	k := sshkeys.Generate(t, "ed25519")
	host, remote := tofuAddr(2022)
	if _, err := tofu.Check(host, remote, k.Pub); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), keygen, "-F", "[127.0.0.1]:2022", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -F: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ssh-ed25519") {
		t.Errorf("ssh-keygen -F did not find the host:\n%s", out)
	}
}

// TestTOFURefresh checks that an edit by someone else is picked up (a
// deleted line lets the host be learnt again) while our own appends are
// not taken for one, and that a file that stops parsing keeps the keys in
// force.
func TestTOFURefresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "learnt_hosts")
	first := sshkeys.Generate(t, "ed25519")
	second := sshkeys.Generate(t, "ed25519")
	host, remote := tofuAddr(2200)

	tofu, err := OpenTOFU(path)
	if err != nil {
		t.Fatal(err)
	}
	if learned, err := tofu.Check(host, remote, first.Pub); err != nil || !learned {
		t.Fatalf("first contact: learned=%v err=%v", learned, err)
	}
	if changed, err := tofu.Refresh(); err != nil || changed {
		t.Fatalf("refresh after our own append: changed=%v err=%v, want no change", changed, err)
	}
	if algos := tofu.HostKeyAlgorithms(host, remote); len(algos) == 0 || algos[0] != ssh.KeyAlgoED25519 {
		t.Errorf("algorithms for a learnt ed25519 host: %v", algos)
	}

	// A file that no longer parses: the learnt key stays in force.
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(append([]byte{}, good...), "garbage line\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tofu.Refresh(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("refresh of a broken file: %v, want an error naming it", err)
	}
	if _, err := tofu.Check(host, remote, second.Pub); err == nil {
		t.Fatal("a swapped key was accepted after a failed refresh")
	}

	// The operator removes the host's line: it is learnt anew, once.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := tofu.Refresh(); err != nil || !changed {
		t.Fatalf("refresh of an emptied file: changed=%v err=%v", changed, err)
	}
	if learned, err := tofu.Check(host, remote, second.Pub); err != nil || !learned {
		t.Fatalf("contact after the line was removed: learned=%v err=%v, want learned", learned, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 1 {
		t.Errorf("file has %d lines, want 1:\n%s", n, b)
	}
}

// TestOpenTOFURefusesUnsafeFiles points a trust-on-first-use file at a FIFO
// without reader, which an open for writing used to wait on forever (while
// holding the lock every probe of the file takes), and at /dev/zero, which
// takes writes: both must be refused at once, naming the file and what it
// is.
func TestOpenTOFURefusesUnsafeFiles(t *testing.T) {
	for _, u := range testutil.UnsafeFiles(t, t.TempDir(), 0) {
		t.Run(u.Name, func(t *testing.T) {
			err := testutil.Quickly(t, 2*time.Second, []string{u.Path}, func() error {
				_, err := OpenTOFU(u.Path)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), u.Path) || !strings.Contains(err.Error(), u.Want) {
				t.Errorf("OpenTOFU: %v, want an error naming %s and %q", err, u.Path, u.Want)
			}
		})
	}
}
