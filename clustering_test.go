package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/cluster"
	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

func TestClusterFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"two modes", []string{"--cluster.shard=0/2", "--cluster.listen-address=127.0.0.1:7946"}, "exclude each other"},
		{"bad shard", []string{"--cluster.shard=2/2"}, "--cluster.shard"},
		{"shard no slash", []string{"--cluster.shard=2"}, "want I/N"},
		{"k zero", []string{"--cluster.shard=0/2", "--cluster.replication-factor=0"}, "replication-factor"},
		{"hostname without shards", []string{"--cluster.shard-from-hostname", "--cluster.name=fleet-1"}, "--cluster.shards"},
		{"hostname without ordinal", []string{"--cluster.shard-from-hostname", "--cluster.shards=3", "--cluster.name=fleet"}, "-<ordinal>"},
		{"ordinal too big", []string{"--cluster.shard-from-hostname", "--cluster.shards=3", "--cluster.name=fleet-3"}, "not below"},
		{"shards alone", []string{"--cluster.shards=3"}, "only used with"},
		{"peer without gossip", []string{"--cluster.peer=127.0.0.1:7946"}, "need --cluster.listen-address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			_, code, done := parseFlags(tc.args, io.Discard, &stderr)
			if !done || code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("parseFlags(%q) = code %d, done %v, stderr %q; want exit 2 mentioning %q", tc.args, code, done, stderr.String(), tc.want)
			}
		})
	}
}

// clusterConfig writes a config of n TCP hosts on 127.0.5.x, all on one
// listener port.
func clusterConfig(t *testing.T, n int) (string, []string) {
	t.Helper()
	port := testutil.TCPListener(t, "127.0.5.1")
	var hosts []string
	for i := 1; i <= n; i++ {
		hosts = append(hosts, fmt.Sprintf("127.0.5.%d", i))
	}
	path := filepath.Join(t.TempDir(), "fleet.yml")
	text := fmt.Sprintf("global: {interval: 1s, timeout: 500ms}\nhost_sets:\n  - name: sharded\n    hosts: [%s]\n    probes:\n      tcp: {port: %d}\n", strings.Join(hosts, ", "), port)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, hosts
}

// TestStaticShardDaemon runs one static shard of three: it probes exactly
// what the ownership function assigns to shard 1, exports the cluster
// metrics and shows the members and owners on /cluster; a reload keeps the
// filter.
func TestStaticShardDaemon(t *testing.T) {
	cfg, hosts := clusterConfig(t, 60)
	d := startDaemon(t, "--config.file="+cfg, "--cluster.shard=1/3")
	view := cluster.NewView(cluster.ShardName(1), cluster.StaticMembers(3), 1)
	want := 0
	var mine, theirs string
	for _, h := range hosts {
		if view.Owns("sharded", h) {
			want++
			mine = h
		} else {
			theirs = h
		}
	}
	if want == 0 || want == len(hosts) {
		t.Fatalf("shard 1 of 3 owns %d of %d hosts", want, len(hosts))
	}
	for _, line := range []string{
		"fleet_cluster_members 3",
		fmt.Sprintf("fleet_cluster_owned_targets %d", want),
		fmt.Sprintf(`fleet_targets{probe="tcp",set="sharded"} %d`, want),
		`fleet_cluster_member_info{address="",name="shard-1"} 1`,
		"fleet_cluster_replication_factor 1",
		"fleet_cluster_isolated 0",
	} {
		if _, body := httpDo(t, "GET", "http://"+d.addr+"/metrics"); !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	_, page := httpDo(t, "GET", "http://"+d.addr+"/cluster?set=sharded&host="+mine)
	if !strings.Contains(page, "shard-1 (this member)") || !strings.Contains(page, "(this member probes it)") {
		t.Errorf("/cluster for an owned host:\n%s", page)
	}
	_, page = httpDo(t, "GET", "http://"+d.addr+"/cluster?set=sharded&host="+theirs)
	if strings.Contains(page, "(this member probes it)") || !strings.Contains(page, "is owned by <b>shard-") {
		t.Errorf("/cluster for another shard's host:\n%s", page)
	}
	if _, landing := httpDo(t, "GET", "http://"+d.addr+"/"); !strings.Contains(landing, `href="cluster"`) {
		t.Error("the landing page does not link the cluster page")
	}

	// A reload goes through the same filter.
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "interval: 1s", "interval: 2s", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, body := httpDo(t, "POST", "http://"+d.addr+"/-/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if _, body := httpDo(t, "GET", "http://"+d.addr+"/metrics"); !strings.Contains(body, fmt.Sprintf(`fleet_targets{probe="tcp",set="sharded"} %d`, want)) {
		t.Errorf("after a reload fleet_targets is not %d", want)
	}
}

// TestGossipDaemonAlone runs one gossip member whose only peer is down: it
// turns ready, probes every host, and says it is isolated.
func TestGossipDaemonAlone(t *testing.T) {
	cfg, hosts := clusterConfig(t, 20)
	gossip := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	peer := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t, "127.0.0.1"))
	d := startDaemon(t, "--config.file="+cfg, "--cluster.listen-address="+gossip,
		"--cluster.peer="+gossip, "--cluster.peer="+peer, "--cluster.name=alone-0")
	_, body := httpDo(t, "GET", "http://"+d.addr+"/metrics")
	for _, line := range []string{
		"fleet_cluster_members 1",
		"fleet_cluster_isolated 1",
		fmt.Sprintf("fleet_cluster_owned_targets %d", len(hosts)),
		fmt.Sprintf(`fleet_cluster_member_info{address=%q,name="alone-0"} 1`, gossip),
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if _, page := httpDo(t, "GET", "http://"+d.addr+"/cluster"); !strings.Contains(page, "sees no other member") {
		t.Errorf("/cluster does not say the member is alone:\n%s", page)
	}
}
