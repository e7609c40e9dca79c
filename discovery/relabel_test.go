package discovery_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/discovery"
)

// relabelConfigs parses relabel_configs the way a config file gives them.
func relabelConfigs(t *testing.T, yml string) []config.RelabelConfig {
	t.Helper()
	cfg, err := config.Parse([]byte(`
host_sets:
  - name: s
    labels: {dc: "", shard: "", role: ""}
    file_sd: [sd.json]
    probes: {icmp: }
    relabel_configs:
`+yml), "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg.HostSets[0].RelabelConfigs
}

func TestRelabel(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
		in   map[string]string
		want map[string]string // nil: dropped
	}{
		{
			name: "replace with the defaults copies a label",
			cfg:  "      - {source_labels: [team], target_label: role}\n",
			in:   map[string]string{"__address__": "a", "team": "db"},
			want: map[string]string{"__address__": "a", "team": "db", "role": "db"},
		},
		{
			name: "replace with groups and a templated target",
			cfg:  "      - {source_labels: [__address__], regex: '([a-z]+)-(\\d+)', target_label: 'x_$1', replacement: 'n$2'}\n",
			in:   map[string]string{"__address__": "web-12"},
			want: map[string]string{"__address__": "web-12", "x_web": "n12"},
		},
		{
			name: "replace without a match changes nothing",
			cfg:  "      - {source_labels: [__address__], regex: 'db.*', target_label: role, replacement: db}\n",
			in:   map[string]string{"__address__": "web1"},
			want: map[string]string{"__address__": "web1"},
		},
		{
			name: "an empty replacement removes the label",
			cfg:  "      - {target_label: dc, replacement: ''}\n",
			in:   map[string]string{"__address__": "a", "dc": "x"},
			want: map[string]string{"__address__": "a"},
		},
		{
			name: "the regex is anchored",
			cfg:  "      - {source_labels: [__address__], regex: 'web', action: keep}\n",
			in:   map[string]string{"__address__": "web1"},
			want: nil,
		},
		{
			name: "keep over joined labels",
			cfg:  "      - {source_labels: [dc, role], regex: 'a;db', action: keep}\n",
			in:   map[string]string{"__address__": "h", "dc": "a", "role": "db"},
			want: map[string]string{"__address__": "h", "dc": "a", "role": "db"},
		},
		{
			name: "drop",
			cfg:  "      - {source_labels: [role], regex: 'test.*', action: drop}\n",
			in:   map[string]string{"__address__": "h", "role": "testing"},
			want: nil,
		},
		{
			name: "dropequal",
			cfg:  "      - {source_labels: [a], target_label: b, action: dropequal}\n",
			in:   map[string]string{"__address__": "h", "a": "1", "b": "1"},
			want: nil,
		},
		{
			name: "keepequal keeps equal values",
			cfg:  "      - {source_labels: [a], target_label: b, action: keepequal}\n",
			in:   map[string]string{"__address__": "h", "a": "1", "b": "1"},
			want: map[string]string{"__address__": "h", "a": "1", "b": "1"},
		},
		{
			// The value Prometheus' relabel package computes for the
			// same input (model/relabel v0.316.0).
			name: "hashmod as Prometheus computes it",
			cfg:  "      - {source_labels: [__address__], modulus: 7, target_label: shard, action: hashmod}\n",
			in:   map[string]string{"__address__": "web01:22"},
			want: map[string]string{"__address__": "web01:22", "shard": "5"},
		},
		{
			name: "hashmod of another address",
			cfg:  "      - {source_labels: [__address__], modulus: 7, target_label: shard, action: hashmod}\n",
			in:   map[string]string{"__address__": "db1.dc2"},
			want: map[string]string{"__address__": "db1.dc2", "shard": "3"},
		},
		{
			name: "labelmap",
			cfg:  "      - {regex: '__meta_cmdb_(.+)', action: labelmap}\n",
			in:   map[string]string{"__address__": "h", "__meta_cmdb_dc": "fra"},
			want: map[string]string{"__address__": "h", "__meta_cmdb_dc": "fra", "dc": "fra"},
		},
		{
			name: "labeldrop",
			cfg:  "      - {regex: 'tmp_.*', action: labeldrop}\n",
			in:   map[string]string{"__address__": "h", "tmp_a": "1", "dc": "x"},
			want: map[string]string{"__address__": "h", "dc": "x"},
		},
		{
			name: "labelkeep",
			cfg:  "      - {regex: '__address__|dc', action: labelkeep}\n",
			in:   map[string]string{"__address__": "h", "tmp_a": "1", "dc": "x"},
			want: map[string]string{"__address__": "h", "dc": "x"},
		},
		{
			name: "lowercase and uppercase",
			cfg:  "      - {source_labels: [dc], target_label: dc, action: lowercase}\n      - {source_labels: [role], target_label: role, action: uppercase}\n",
			in:   map[string]string{"__address__": "h", "dc": "FRA", "role": "db"},
			want: map[string]string{"__address__": "h", "dc": "fra", "role": "DB"},
		},
		{
			name: "steps run in order",
			cfg:  "      - {source_labels: [__address__], target_label: host, regex: '(.*):22', replacement: '$1'}\n      - {source_labels: [host], regex: 'skip.*', action: drop}\n",
			in:   map[string]string{"__address__": "skipme:22"},
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := map[string]string{}
			for k, v := range tc.in {
				in[k] = v
			}
			got, keep := discovery.Relabel(relabelConfigs(t, tc.cfg), in)
			if keep != (tc.want != nil) {
				t.Fatalf("kept = %v, want %v (labels %v)", keep, tc.want != nil, got)
			}
			if diff := cmp.Diff(tc.want, got); tc.want != nil && diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.in, in); diff != "" {
				t.Errorf("input modified (-before +after):\n%s", diff)
			}
		})
	}
}
