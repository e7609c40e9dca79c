package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// member is one in-process gossip member of a test.
type member struct {
	c       *Cluster
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	changes chan struct{}
}

func startMember(t *testing.T, name, addr string, peers []string, key []byte) *member {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(Options{
		Name: name, ReplicationFactor: 1, ListenAddress: addr, Peers: peers, SecretKey: key,
		Registerer: reg, joinRetryFirst: 100 * time.Millisecond, rejoin: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{c: c, reg: reg, cancel: cancel, done: make(chan error, 1), changes: make(chan struct{}, 100)}
	go func() {
		m.done <- c.Run(ctx, func() {
			select {
			case m.changes <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *member) stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	<-m.done
}

// waitMembers waits, generously, for m to see n members.
func waitMembers(t *testing.T, m *member, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for m.c.View().Len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %d members after 30s, want %d", m.c.Self(), m.c.View().Len(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGossipJoinAndLeave(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	raw := []byte("0123456789abcdef0123456789abcdef")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := LoadSecret(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for range 3 {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1")))
	}
	// Every member gets the same list, its own address included, and the
	// first starts before its peers exist.
	var ms []*member
	for i, a := range addrs {
		ms = append(ms, startMember(t, fmt.Sprintf("m%d", i), a, addrs, key))
	}
	for _, m := range ms {
		<-m.c.Ready()
		waitMembers(t, m, 3)
	}
	ts := hosts(600)
	total := 0
	for _, m := range ms {
		total += len(m.c.Filter(ts))
		if m.c.Isolated() {
			t.Errorf("%s isolated in a cluster of 3", m.c.Self())
		}
	}
	if total != len(ts) {
		t.Errorf("3 members own %d targets, want %d", total, len(ts))
	}
	if err := promtest.GatherAndCompare(ms[0].reg, strings.NewReader(fmt.Sprintf(`
# HELP fleet_cluster_member_info One series per member in this member's view of the cluster; the value is always 1.
# TYPE fleet_cluster_member_info gauge
fleet_cluster_member_info{address=%q,name="m0"} 1
fleet_cluster_member_info{address=%q,name="m1"} 1
fleet_cluster_member_info{address=%q,name="m2"} 1
# HELP fleet_cluster_members Members in this member's view of the cluster, itself included.
# TYPE fleet_cluster_members gauge
fleet_cluster_members 3
`, addrs[0], addrs[1], addrs[2])), "fleet_cluster_members", "fleet_cluster_member_info"); err != nil {
		t.Error(err)
	}
	if problems, err := promtest.GatherAndLint(ms[0].reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// A graceful stop leaves at once; the survivors split its targets and
	// count the change.
	before := len(ms[0].c.Filter(ts))
	ms[2].stop()
	waitMembers(t, ms[0], 2)
	waitMembers(t, ms[1], 2)
	a, b := len(ms[0].c.Filter(ts)), len(ms[1].c.Filter(ts))
	if a+b != len(ts) {
		t.Errorf("2 survivors own %d + %d targets, want %d", a, b, len(ts))
	}
	if got := promtest.ToFloat64(ms[0].c.changes); got != float64(a-before) {
		t.Errorf("fleet_cluster_ownership_changes_total = %v, want %d", got, a-before)
	}
}

// TestGossipAloneKeepsRetrying starts a member whose peer is not up: it is
// ready at once, alone and isolated, owns everything, and joins the peer
// once it starts.
func TestGossipAloneKeepsRetrying(t *testing.T) {
	a := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	b := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	m0 := startMember(t, "m0", a, []string{a, b}, nil)
	select {
	case <-m0.c.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("not ready after 30s with its peer down")
	}
	ts := hosts(100)
	if n := len(m0.c.Filter(ts)); n != len(ts) || !m0.c.Isolated() {
		t.Errorf("alone: owns %d of %d, isolated %v; want all and isolated", n, len(ts), m0.c.Isolated())
	}
	m1 := startMember(t, "m1", b, nil, nil)
	waitMembers(t, m0, 2)
	waitMembers(t, m1, 2)
	if m0.c.Isolated() {
		t.Error("still isolated after its peer joined")
	}
	var wg sync.WaitGroup
	for _, m := range []*member{m0, m1} {
		wg.Go(m.stop)
	}
	wg.Wait()
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no name", Options{ReplicationFactor: 1, Shards: 2}, "name is empty"},
		{"k zero", Options{Name: "a", Shards: 2}, "replication factor"},
		{"no mode", Options{Name: "a", ReplicationFactor: 1}, "either static"},
		{"both modes", Options{Name: "a", ReplicationFactor: 1, Shards: 2, ListenAddress: "127.0.0.1:1"}, "either static"},
		{"bad index", Options{Name: "a", ReplicationFactor: 1, Shards: 2, ShardIndex: 2}, "out of range"},
		{"listen name", Options{Name: "a", ReplicationFactor: 1, ListenAddress: "localhost:7946"}, "not a name"},
		{"listen no port", Options{Name: "a", ReplicationFactor: 1, ListenAddress: "127.0.0.1"}, "listen address"},
		{"bad peer", Options{Name: "a", ReplicationFactor: 1, ListenAddress: "127.0.0.1:0", Peers: []string{"peer"}}, "peer"},
		{"bad advertise", Options{Name: "a", ReplicationFactor: 1, ListenAddress: "127.0.0.1:0", AdvertiseAddress: "x:y"}, "advertise"},
		{"bad key", Options{Name: "a", ReplicationFactor: 1, ListenAddress: "127.0.0.1:0", SecretKey: []byte("short")}, "16, 24 or 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw16 := []byte("0123456789abcdef")
	binary16 := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff}
	for _, tc := range []struct {
		name    string
		content []byte
		want    []byte
	}{
		{"base64 32", []byte(base64.StdEncoding.EncodeToString(append(raw16, raw16...)) + "\n"), append(raw16, raw16...)},
		{"raw 16", binary16, binary16},
		{"short", []byte("abc"), nil},
		{"base64 of 10", []byte(base64.StdEncoding.EncodeToString([]byte("0123456789"))), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadSecret(write(tc.name, tc.content))
			if tc.want == nil {
				if err == nil {
					t.Errorf("LoadSecret accepted %q", tc.content)
				}
				return
			}
			if err != nil || string(got) != string(tc.want) {
				t.Errorf("LoadSecret = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := LoadSecret(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadSecret of a missing file succeeded")
	}
}

// TestLoadSecretRefusesUnsafeFiles points the secret file at a FIFO
// without writer and at /dev/zero: a plain read blocks on the first and
// exhausts memory on the second. Both must be refused at once, naming the
// file and what it is.
func TestLoadSecretRefusesUnsafeFiles(t *testing.T) {
	for _, u := range testutil.UnsafeFiles(t, t.TempDir(), 0) {
		t.Run(u.Name, func(t *testing.T) {
			err := testutil.Quickly(t, 2*time.Second, []string{u.Path}, func() error {
				_, err := LoadSecret(u.Path)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), u.Path) || !strings.Contains(err.Error(), u.Want) {
				t.Errorf("LoadSecret: %v, want an error naming %s and %q", err, u.Path, u.Want)
			}
		})
	}
}
