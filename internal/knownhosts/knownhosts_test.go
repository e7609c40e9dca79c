package knownhosts

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/internal/fileload"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
)

// verdict renders a host key callback result for comparison: "ok", or
// the error class and the lines it names.
func verdict(err error) string {
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ke):
		if len(ke.Want) == 0 {
			return "unknown host"
		}
		parts := make([]string, len(ke.Want))
		for i, w := range ke.Want {
			parts[i] = w.String()
		}
		return "mismatch, want " + strings.Join(parts, "; ")
	case errors.As(err, &re):
		return "revoked " + re.Revoked.String()
	default:
		return "error " + err.Error()
	}
}

// keysString renders keys for comparison.
func keysString(keys []ssh.PublicKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = string(ssh.MarshalAuthorizedKey(k))
	}
	return out
}

// TestKnownHostsIndex checks that DB.Check and Known give the
// verdicts and key lists of the x/crypto knownhosts callback for every
// combination of file, host name, remote address and presented key, and
// that plain files take the index (not the callback) to get them.
func TestKnownHostsIndex(t *testing.T) {
	ed1, ed2 := sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ed25519")
	ec, rsaKey := sshkeys.Generate(t, "ecdsa"), sshkeys.Generate(t, "rsa")
	ca := sshkeys.Generate(t, "ed25519")
	cert := sshkeys.SignCert(t, ca, ed1.Pub, ssh.HostCert, "127.0.0.1", "::1")
	unlisted := sshkeys.Generate(t, "ed25519")
	line := func(pattern string, k sshkeys.Key) string {
		return pattern + " " + string(ssh.MarshalAuthorizedKey(k.Pub))
	}
	hashed := func(hostport string) string { return knownhosts.HashHostname(knownhosts.Normalize(hostport)) }

	files := []struct {
		name  string
		text  string
		plain bool
	}{
		{"empty", "", true},
		{"comments only", "# nothing\n\n   \n", true},
		{"one host port 22", line("127.0.0.1", ed1), true},
		{"one host other port", line("[127.0.0.1]:2222", ed1), true},
		{"same host two ports", line("[127.0.0.1]:2222", ed1) + line("127.0.0.1", ed2), true},
		{"bracketed port 22", line("[127.0.0.1]:22", ed1), true},
		{"unbracketed host:port", line("127.0.0.1:2222", ed2), true},
		{"several keys per host", line("[127.0.0.1]:2222", ed1) + line("[127.0.0.1]:2222", ec) +
			line("[127.0.0.1]:2222", rsaKey), true},
		{"same key on two lines", line("127.0.0.1", ed1) + line("127.0.0.1,localhost", ed1), true},
		{"several patterns, duplicates and empties", line("127.0.0.1,,[127.0.0.1]:22,db.invalid,[db.invalid]:2222", ed1) +
			line("db.invalid", ec), true},
		{"ipv6", line("::1", ed1) + line("[::1]:2222", ed2) + line("[fe80::1%lo]:22", ec), true},
		{"ipv6 unbracketed with colons", line("fe80::2", ed1), true},
		{"empty bracketed host", line("[]:22", ed1), true},
		{"tabs, comment field and CRLF", "127.0.0.1\t" + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ed1.Pub))) +
			" a comment\r\n  [127.0.0.1]:2222  " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ec.Pub))) + "\r\n", true},
		{"case differs", line("DB.invalid", ed1), true},
		{"hashed", hashed("127.0.0.1:2222") + " " + string(ssh.MarshalAuthorizedKey(ed1.Pub)) +
			hashed("127.0.0.1:22") + " " + string(ssh.MarshalAuthorizedKey(ec.Pub)), false},
		{"plain and hashed", line("[127.0.0.1]:2222", ed2) + hashed("127.0.0.1:2222") + " " +
			string(ssh.MarshalAuthorizedKey(ed1.Pub)), false},
		{"wildcard", line("127.0.0.*", ed1) + line("[127.0.0.?]:2222", ed2), false},
		{"question mark only", line("[127.0.0.?]:2222", ed1), false},
		{"wildcard over exact", line("[127.0.0.1]:2222", ed1) + line("[127.*]:2222", ec), false},
		{"negated", line("127.0.0.*,!127.0.0.2", ed1) + line("[::1]:2222,![::1]:2222", ed2), false},
		{"cert authority", "@cert-authority 127.0.0.1,[127.0.0.1]:2222 " + string(ssh.MarshalAuthorizedKey(ca.Pub)) +
			line("[127.0.0.1]:2222", ec), false},
		// knownhosts matches @cert-authority lines as plain keys too.
		{"cert authority key as host key", "@cert-authority [127.0.0.1]:2222 " + string(ssh.MarshalAuthorizedKey(ed1.Pub)), false},
		{"revoked", line("[127.0.0.1]:2222", ed1) + line("[127.0.0.1]:2222", ec) +
			"@revoked * " + string(ssh.MarshalAuthorizedKey(ed1.Pub)), false},
		{"revoked unlisted", line("127.0.0.1", ed1) + "@revoked nohost.invalid " + string(ssh.MarshalAuthorizedKey(ed2.Pub)), false},
	}
	hostnames := []string{
		"127.0.0.1:22", "127.0.0.1:2222", "127.0.0.1:2200", "127.0.0.2:22", "127.0.0.2:2222",
		"[127.0.0.1]:22", "[::1]:22", "[::1]:2222", "[fe80::1%lo]:22", "[fe80::2]:22",
		"db.invalid:22", "db.invalid:2222", "DB.invalid:22", "localhost:22", "[]:22", ":22",
		"127.0.0.1", "::1", "", // not host:port, or empty: the callback decides
	}
	remotes := []net.Addr{
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:2222")),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[::1]:22")),
		&net.UnixAddr{Name: "/nonexistent", Net: "unix"},
	}
	keys := []struct {
		name string
		key  ssh.PublicKey
	}{
		{"ed25519 #1", ed1.Pub},
		{"ed25519 #2", ed2.Pub},
		{"ecdsa", ec.Pub},
		{"rsa", rsaKey.Pub},
		{"unlisted", unlisted.Pub},
		{"host certificate", cert},
	}

	dir := t.TempDir()
	for i, f := range files {
		t.Run(f.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("known_hosts_%d", i))
			if err := os.WriteFile(path, []byte(f.text), 0o600); err != nil {
				t.Fatal(err)
			}
			kh, err := Load(path)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			if kh.plain != f.plain || (kh.index != nil) != f.plain {
				t.Fatalf("plain=%v index=%v, want plain=%v", kh.plain, kh.index != nil, f.plain)
			}
			ref, err := knownhosts.New(path)
			if err != nil {
				t.Fatal(err)
			}
			// A callback that must not run: for plain files every
			// question with a host:port and a TCP remote is answered from
			// the index.
			var fallbacks int
			kh.callback = func(hostname string, remote net.Addr, key ssh.PublicKey) error {
				fallbacks++
				return ref(hostname, remote, key)
			}
			for _, hn := range hostnames {
				for ri, remote := range remotes {
					answerable := hn != "" && ri < 2
					if _, _, err := net.SplitHostPort(hn); err != nil {
						answerable = false
					}
					// known: the key list the algorithm order is built from.
					var want []ssh.PublicKey
					var ke *knownhosts.KeyError
					if err := ref(hn, remote, kh.probe); errors.As(err, &ke) {
						for _, w := range ke.Want {
							want = append(want, w.Key)
						}
					}
					before := fallbacks
					if diff := cmp.Diff(keysString(want), keysString(kh.Known(hn, remote))); diff != "" {
						t.Errorf("known(%q, %v) (-callback +ours):\n%s", hn, remote, diff)
					}
					if f.plain && answerable && fallbacks != before {
						t.Errorf("known(%q, %v) used the callback on a plain file", hn, remote)
					}
					for _, k := range keys {
						before := fallbacks
						got, want := verdict(kh.Check(hn, remote, k.key)), verdict(ref(hn, remote, k.key))
						if got != want {
							t.Errorf("check(%q, %v, %s) = %s, callback says %s", hn, remote, k.name, got, want)
						}
						_, isCert := k.key.(*ssh.Certificate)
						if f.plain && answerable && !isCert && fallbacks != before {
							t.Errorf("check(%q, %v, %s) used the callback on a plain file", hn, remote, k.name)
						}
					}
				}
			}
			// Files that are not plain are matched by the callback once
			// per host, then from the memo.
			if !f.plain {
				hn, remote := "127.0.0.1:2222", remotes[0]
				_ = kh.Check(hn, remote, ed1.Pub)
				before := fallbacks
				for range 3 {
					_ = kh.Check(hn, remote, ec.Pub)
					_ = kh.Known(hn, remote)
				}
				if fallbacks != before {
					t.Errorf("memoised host %s used the callback %d more times", hn, fallbacks-before)
				}
			}
		})
	}
}

// TestKnownHostsIndexErrors checks that a file knownhosts rejects is refused
// by Load too, for each way a line can be malformed.
func TestKnownHostsIndexErrors(t *testing.T) {
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshkeys.Generate(t, "ed25519").Pub)))
	tests := []struct {
		name string
		text string
	}{
		{"missing key", "127.0.0.1\n"},
		{"missing key blob", "127.0.0.1 ssh-ed25519\n"},
		{"bad base64", "127.0.0.1 ssh-ed25519 !!!\n"},
		{"type mismatch", "127.0.0.1 ssh-rsa " + strings.Fields(key)[1] + "\n"},
		{"double marker", "@cert-authority @revoked * " + key + "\n"},
		{"lone negation", "!,127.0.0.1 " + key + "\n"},
		{"bad bracket", "[127.0.0.1 " + key + "\n"},
		{"bad hash", "|2|abc|def " + key + "\n"},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("kh%d", i))
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := knownhosts.New(path); err == nil {
				t.Fatal("knownhosts accepts the file; the case tests nothing")
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming the file", err)
			}
			// Our own parser must reject it too, or a file replaced
			// between the two reads could be half understood.
			if _, err := parse([]byte(tt.text), path); err == nil && tt.name != "bad hash" {
				t.Errorf("index accepts the file")
			}
		})
	}
}

// knownHostsBenchFile writes a known_hosts file of n hosts on port 2222,
// hashed or plain, and returns its path and the host:port and key of the
// host in its middle.
func knownHostsBenchFile(b testing.TB, n int, hashed bool) (path, hostport string, key ssh.PublicKey) {
	keys := make([]ssh.PublicKey, 16)
	for i := range keys {
		keys[i] = sshkeys.Generate(b, "ed25519").Pub
	}
	var sb strings.Builder
	for i := range n {
		hp := fmt.Sprintf("127.%d.%d.%d:2222", 10+i/65536, i/256%256, i%256)
		pattern := knownhosts.Normalize(hp)
		if hashed {
			pattern = knownhosts.HashHostname(pattern)
		}
		sb.WriteString(knownhosts.Line([]string{pattern}, keys[i%len(keys)]) + "\n")
		if i == n/2 {
			hostport, key = hp, keys[i%len(keys)]
		}
	}
	path = filepath.Join(b.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return path, hostport, key
}

// BenchmarkKnownHostsLookup measures what one fresh connection spends on
// known_hosts with 10,000 hosts: choosing the host key algorithms and
// verifying the key. "callback" is the x/crypto knownhosts scan the prober
// used before (twice per connection), "index" the lookup it uses now.
func BenchmarkKnownHostsLookup(b *testing.B) {
	const n = 10000
	for _, hashed := range []bool{false, true} {
		path, hp, key := knownHostsBenchFile(b, n, hashed)
		kh, err := Load(path)
		if err != nil {
			b.Fatal(err)
		}
		if kh.plain == hashed {
			b.Fatalf("hashed=%v file has plain=%v", hashed, kh.plain)
		}
		remote := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(hp))
		form := map[bool]string{false: "plain", true: "hashed"}[hashed]
		b.Run(form+"/callback", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var ke *knownhosts.KeyError
				if err := kh.callback(hp, remote, kh.probe); !errors.As(err, &ke) || len(ke.Want) == 0 {
					b.Fatalf("probe: %v", err)
				}
				if err := kh.callback(hp, remote, key); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(form+"/index", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if algos := kh.HostKeyAlgorithms(hp, remote); len(algos) == 0 {
					b.Fatal("no algorithms")
				}
				if err := kh.Check(hp, remote, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLoadRefusesUnsafeFiles points known_hosts_file at what would hang or
// exhaust a plain read: each must be refused at once, naming the file.
func TestLoadRefusesUnsafeFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	// A sparse file one byte over the cap costs no disk.
	huge := filepath.Join(dir, "huge")
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, fileload.MaxKnownHostsSize+1); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, want string }{
		{"fifo", fifo, "named pipe (FIFO)"},
		{"symlink to a fifo", link, "named pipe (FIFO)"},
		{"/dev/zero", "/dev/zero", "character device"},
		{"directory", dir, "directory"},
		{"over the cap", huge, "larger than 64 MiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Load(tc.path)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Load took %v", d)
			}
			if err == nil || !strings.Contains(err.Error(), "known_hosts_file") ||
				!strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load(%s) = %v, want an error naming known_hosts_file, the file and %q", tc.path, err, tc.want)
			}
		})
	}
}

// TestLoadCallbackFromReadBytes checks the callback Load builds from the
// bytes it read against knownhosts.New on the file itself, for a hashed
// file (so the callback, not the index, answers) far larger than a pipe
// holds, and that the lines it reports name the real file.
func TestLoadCallbackFromReadBytes(t *testing.T) {
	path, hp, key := knownHostsBenchFile(t, 3000, true)
	if fi, err := os.Stat(path); err != nil || fi.Size() < 1<<18 {
		t.Fatalf("test file too small to exceed a pipe buffer: %v %v", fi, err)
	}
	kh, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if kh.plain {
		t.Fatal("hashed file indexed as plain; the callback would not be exercised")
	}
	ref, err := knownhosts.New(path)
	if err != nil {
		t.Fatal(err)
	}
	remote := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(hp))
	other := sshkeys.Generate(t, "ed25519").Pub
	for _, tc := range []struct {
		name, host string
		key        ssh.PublicKey
	}{
		{"listed key", hp, key},
		{"other key", hp, other},
		{"unknown host", "127.99.0.1:2222", key},
	} {
		got, want := verdict(kh.callback(tc.host, remote, tc.key)), verdict(ref(tc.host, remote, tc.key))
		if got != want {
			t.Errorf("%s: callback from the read bytes says %s, knownhosts.New(path) says %s", tc.name, got, want)
		}
	}
	if v := verdict(kh.Check(hp, remote, other)); !strings.Contains(v, path+":") {
		t.Errorf("mismatch verdict %q does not name %s", v, path)
	}
}
