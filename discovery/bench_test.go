package discovery_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/discovery"
)

// BenchmarkFileSDRead measures one read of a file_sd file of 65,536
// targets (the default max_targets_per_set) in 256 groups: read, parse,
// two relabel steps per target, label mapping and the cap check.
func BenchmarkFileSDRead(b *testing.B) {
	dir := b.TempDir()
	var sb strings.Builder
	sb.WriteString("[")
	for g := range 256 {
		if g > 0 {
			sb.WriteString(",")
		}
		sb.WriteString(`{"targets": [`)
		for i := range 256 {
			if i > 0 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, `"10.%d.%d.1:22"`, g, i)
		}
		fmt.Fprintf(&sb, `], "labels": {"__meta_rack": "r%d", "team": "t%d", "owner": "o"}}`, g, g%8)
	}
	sb.WriteString("]")
	if err := os.WriteFile(filepath.Join(dir, "sd.json"), []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(sb.Len()))
	cfg := parseConfig(b, dir, `
host_sets:
  - name: big
    labels: {rack: "", role: ""}
    file_sd: [sd.json]
    relabel_configs:
      - {source_labels: [__meta_rack], target_label: rack}
      - {source_labels: [team], target_label: role}
    probes: {icmp: }
`)
	for b.Loop() {
		m := discovery.NewManager(discovery.Options{})
		if err := m.ApplyConfig(b.Context(), cfg); err != nil {
			b.Fatal(err)
		}
		if n := len(m.Hosts()["big"]); n != 65536 {
			b.Fatalf("%d hosts", n)
		}
		m.Close()
	}
}
