package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil/sshkeys"
)

// keyHosts is one in-process SSH server listening on several loopback
// ports, each a host with its own swappable host key. Every host accepts
// one user key and runs no command.
type keyHosts struct {
	srv   *sshserver.Server
	user  sshkeys.Key
	ports []int
	keys  []atomic.Pointer[ssh.Signer]
}

func startKeyHosts(t *testing.T, user sshkeys.Key, keys ...ssh.Signer) *keyHosts {
	t.Helper()
	h := &keyHosts{srv: sshserver.New(nil), user: user, keys: make([]atomic.Pointer[ssh.Signer], len(keys))}
	t.Cleanup(func() { _ = h.srv.Close() })
	for i := range keys {
		h.keys[i].Store(&keys[i])
		// Each host on its own address: one address on two ports is one
		// host to fleet_ssh_host_key_shared_hosts.
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 10+i))
		if err != nil {
			t.Fatal(err)
		}
		h.ports = append(h.ports, ln.Addr().(*net.TCPAddr).Port)
		host := &sshserver.Host{Name: ln.Addr().String(), Config: func() (*ssh.ServerConfig, error) {
			cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
				if bytes.Equal(key.Marshal(), user.Pub.Marshal()) {
					return nil, nil
				}
				return nil, errors.New("unknown key")
			}}
			cfg.AddHostKey(*h.keys[i].Load())
			return cfg, nil
		}}
		go func() { _ = h.srv.Serve(ln, host) }()
	}
	return h
}

// swap gives host i a new host key.
func (h *keyHosts) swap(i int, key ssh.Signer) { h.keys[i].Store(&key) }

// host returns host i's host entry.
func (h *keyHosts) host(i int) string { return fmt.Sprintf("127.0.0.%d:%d", 10+i, h.ports[i]) }

// hostCert returns a host certificate for key signed by ca, valid until
// expiry.
func hostCert(t *testing.T, ca, key sshkeys.Key, expiry time.Time) ssh.Signer {
	t.Helper()
	cert := &ssh.Certificate{
		Key: key.Pub, CertType: ssh.HostCert, KeyId: "host", ValidPrincipals: []string{"127.0.0.13"},
		ValidBefore: uint64(expiry.Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca.Signer); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewCertSigner(cert, key.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// metricValue returns the value of the first series of body matching
// name{...} whose labels contain every one of labels, and whether one
// exists.
func metricValue(body, name string, labels ...string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		return v, err == nil
	}
	return 0, false
}

// TestHostKeysEndToEnd runs the daemon against hosts whose keys it
// observes: a key swapped mid-run is reported (info, changed timestamp,
// log) and refused with reason hostkey; clones sharing one key are
// counted; a host certificate's expiry is exported; a known_hosts file
// that stops parsing keeps its last good copy and sets
// fleet_config_last_reload_successful 0 until it parses again.
func TestHostKeysEndToEnd(t *testing.T) {
	dir := t.TempDir()
	user := sshkeys.Generate(t, "ed25519")
	first, swapped, clone := sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ecdsa")
	ca, certified := sshkeys.Generate(t, "ed25519"), sshkeys.Generate(t, "ed25519")
	expiry := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	hosts := startKeyHosts(t, user, first.Signer, clone.Signer, clone.Signer, hostCert(t, ca, certified, expiry))

	var known strings.Builder
	for i, k := range []sshkeys.Key{first, clone, clone} {
		known.WriteString(knownhosts.Line([]string{knownhosts.Normalize(hosts.host(i))}, k.Pub) + "\n")
	}
	known.WriteString("@cert-authority " + knownhosts.Normalize(hosts.host(3)) + " " + string(ssh.MarshalAuthorizedKey(ca.Pub)))
	khFile := writeFile(t, dir, "known_hosts", known.String())
	writeFile(t, dir, "id", string(sshkeys.OpenSSH(t, user, "")))
	cfgFile := writeFile(t, dir, "fleet.yml", fmt.Sprintf(`
global: {interval: 1s, timeout: 900ms}
host_sets:
  - name: keys
    hosts: [%q, %q, %q, %q]
    probes:
      ssh:
        user: probe
        private_key_file: id
        known_hosts_file: known_hosts
`, hosts.host(0), hosts.host(1), hosts.host(2), hosts.host(3)))
	d := startDaemon(t, "--config.file="+cfgFile)
	metrics := func() string {
		_, body := httpDo(t, "GET", "http://"+d.addr+"/metrics")
		return body
	}
	hostLabel := func(i int) string { return `host="` + hosts.host(i) + `"` }
	waitFor(t, 20*time.Second, func() bool {
		body := metrics()
		for i := range hosts.ports {
			if v, ok := metricValue(body, "fleet_probe_success", hostLabel(i)); !ok || v != 1 {
				return false
			}
		}
		return true
	})
	body := metrics()
	for i, k := range []sshkeys.Key{first, clone, clone, certified} {
		fp := `fingerprint_sha256="` + ssh.FingerprintSHA256(k.Pub) + `"`
		if _, ok := metricValue(body, "fleet_ssh_host_key_info", hostLabel(i), fp, `type="`+k.Pub.Type()+`"`); !ok {
			t.Errorf("no fleet_ssh_host_key_info for host %d with %s", i, fp)
		}
		if v, _ := metricValue(body, "fleet_ssh_host_key_changed_timestamp_seconds", hostLabel(i)); v != 0 {
			t.Errorf("host %d: changed timestamp %v before any change, want 0", i, v)
		}
	}
	for i, want := range []float64{1, 2, 2, 1} {
		if v, ok := metricValue(body, "fleet_ssh_host_key_shared_hosts", hostLabel(i)); !ok || v != want {
			t.Errorf("host %d: fleet_ssh_host_key_shared_hosts = %v (present %v), want %v", i, v, ok, want)
		}
	}
	if v, ok := metricValue(body, "fleet_ssh_host_certificate_expiry_timestamp_seconds", hostLabel(3)); !ok || v != float64(expiry.Unix()) {
		t.Errorf("certificate expiry = %v (present %v), want %d", v, ok, expiry.Unix())
	}
	if _, ok := metricValue(body, "fleet_ssh_host_certificate_expiry_timestamp_seconds", hostLabel(0)); ok {
		t.Error("a plain host key has a certificate expiry")
	}

	// The first host is reinstalled: a new key, refused and reported.
	swappedAt := time.Now()
	hosts.swap(0, swapped.Signer)
	newFP := `fingerprint_sha256="` + ssh.FingerprintSHA256(swapped.Pub) + `"`
	waitFor(t, 20*time.Second, func() bool {
		_, ok := metricValue(metrics(), "fleet_ssh_host_key_info", hostLabel(0), newFP)
		return ok
	})
	body = metrics()
	if _, ok := metricValue(body, "fleet_probe_failure_info", hostLabel(0), `reason="hostkey"`); !ok {
		t.Error("a swapped key is not reason hostkey")
	}
	if v, _ := metricValue(body, "fleet_ssh_host_key_changed_timestamp_seconds", hostLabel(0)); v < float64(swappedAt.Unix()) {
		t.Errorf("changed timestamp %v, want at least %d", v, swappedAt.Unix())
	}
	if _, ok := metricValue(body, "fleet_ssh_host_key_info", hostLabel(0), `fingerprint_sha256="`+ssh.FingerprintSHA256(first.Pub)+`"`); ok {
		t.Error("the old key is still exported next to the new one")
	}
	if logs := d.stderr.String(); !strings.Contains(logs, "SSH host key changed") || !strings.Contains(logs, ssh.FingerprintSHA256(swapped.Pub)) {
		t.Errorf("the change is not logged with the new fingerprint:\n%s", logs)
	}

	// known_hosts stops parsing: the last good copy stays, the reload
	// gauge says so, and a fixed file clears it.
	good, err := os.ReadFile(khFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "known_hosts", string(good)+"not a known_hosts line\n")
	waitFor(t, 20*time.Second, func() bool { return plainValue(metrics(), "fleet_config_last_reload_successful") == 0 })
	since := time.Now()
	waitFor(t, 20*time.Second, func() bool {
		v, ok := metricValue(metrics(), "fleet_probe_last_success_timestamp_seconds", hostLabel(1))
		return ok && v >= float64(since.Unix())
	})
	if logs := d.stderr.String(); !strings.Contains(logs, "last good version stays in use") || !strings.Contains(logs, khFile) {
		t.Errorf("the broken known_hosts file is not logged:\n%s", logs)
	}
	writeFile(t, dir, "known_hosts", string(good))
	waitFor(t, 20*time.Second, func() bool { return plainValue(metrics(), "fleet_config_last_reload_successful") == 1 })
}

// plainValue returns the value of an unlabelled series of body, or -1.
func plainValue(body, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestTOFUEndToEnd runs host_key_policy tofu through the daemon: many
// hosts met at once for the first time are each appended once, a swapped
// key is refused with reason hostkey and never re-learnt, and a restarted
// daemon still holds what was learnt.
func TestTOFUEndToEnd(t *testing.T) {
	dir := t.TempDir()
	user := sshkeys.Generate(t, "ed25519")
	const n = 20
	signers := make([]ssh.Signer, n)
	keys := make([]sshkeys.Key, n)
	for i := range keys {
		keys[i] = sshkeys.Generate(t, "ed25519")
		signers[i] = keys[i].Signer
	}
	hosts := startKeyHosts(t, user, signers...)
	entries := make([]string, n)
	for i := range entries {
		entries[i] = strconv.Quote(hosts.host(i))
	}
	writeFile(t, dir, "id", string(sshkeys.OpenSSH(t, user, "")))
	learnt := filepath.Join(dir, "learnt_hosts")
	cfgFile := writeFile(t, dir, "fleet.yml", fmt.Sprintf(`
global: {interval: 1s, timeout: 900ms}
host_sets:
  - name: tofu
    hosts: [%s]
    probes:
      ssh:
        user: probe
        private_key_file: id
        known_hosts_file: learnt_hosts
        host_key_policy: tofu
`, strings.Join(entries, ", ")))
	allUp := func(d *daemon, want float64) func() bool {
		return func() bool {
			_, body := httpDo(t, "GET", "http://"+d.addr+"/metrics")
			for i := range n {
				if v, ok := metricValue(body, "fleet_probe_success", `host="`+hosts.host(i)+`"`); !ok || v != want {
					return false
				}
			}
			return true
		}
	}
	run := func(check func(d *daemon)) {
		d := startDaemon(t, "--config.file="+cfgFile)
		check(d)
		d.cancel()
		// The cleanup of startDaemon waits for the exit code too.
		d.done <- <-d.done
	}
	run(func(d *daemon) {
		waitFor(t, 20*time.Second, allUp(d, 1))
		fi, err := os.Stat(learnt)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("learnt file has mode %v, want 0600", fi.Mode().Perm())
		}
		checkLearnt(t, learnt, hosts, keys)
		hosts.swap(0, sshkeys.Generate(t, "ed25519").Signer)
		waitFor(t, 20*time.Second, func() bool {
			_, body := httpDo(t, "GET", "http://"+d.addr+"/metrics")
			_, ok := metricValue(body, "fleet_probe_failure_info", `host="`+hosts.host(0)+`"`, `reason="hostkey"`)
			return ok
		})
		if !strings.Contains(d.stderr.String(), "Learnt host key") {
			t.Error("learning is not logged")
		}
	})
	checkLearnt(t, learnt, hosts, keys)
	// A restart keeps what was learnt: the swapped key stays refused, the
	// others are known.
	run(func(d *daemon) {
		waitFor(t, 20*time.Second, func() bool {
			_, body := httpDo(t, "GET", "http://"+d.addr+"/metrics")
			_, refused := metricValue(body, "fleet_probe_failure_info", `host="`+hosts.host(0)+`"`, `reason="hostkey"`)
			v, ok := metricValue(body, "fleet_probe_success", `host="`+hosts.host(n-1)+`"`)
			return refused && ok && v == 1
		})
		if strings.Contains(d.stderr.String(), "Learnt host key") {
			t.Errorf("the restarted daemon learnt a key again:\n%s", d.stderr)
		}
	})
	checkLearnt(t, learnt, hosts, keys)
}

// checkLearnt checks that the learnt file lists every host exactly once,
// with its first key, in OpenSSH's format.
func checkLearnt(t *testing.T, path string, hosts *keyHosts, keys []sshkeys.Key) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(keys) {
		t.Fatalf("learnt file has %d lines for %d hosts:\n%s", len(lines), len(keys), b)
	}
	for i, k := range keys {
		want := knownhosts.Line([]string{knownhosts.Normalize(hosts.host(i))}, k.Pub)
		if c := strings.Count(string(b), want+"\n"); c != 1 {
			t.Errorf("host %s appears %d times with its first key, want once", hosts.host(i), c)
		}
	}
}
