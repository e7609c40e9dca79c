package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// checkSchema reports every key of the decoded YAML value v that has no
// matching yaml tag in the Go type t, so a typo or a schema change in
// config/types.go breaks this test rather than the exporter at load time.
func checkSchema(t *testing.T, path string, v any, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch v := v.(type) {
	case map[string]any:
		if typ.Kind() != reflect.Struct {
			t.Errorf("%s: mapping where config has %s", path, typ)
			return
		}
		fields := map[string]reflect.Type{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for k, sub := range v {
			ft, ok := fields[k]
			if !ok {
				t.Errorf("%s.%s: not a field of %s", path, k, typ)
				continue
			}
			checkSchema(t, path+"."+k, sub, ft)
		}
	case []any:
		if typ.Kind() != reflect.Slice {
			t.Errorf("%s: sequence where config has %s", path, typ)
			return
		}
		for _, sub := range v {
			checkSchema(t, path+"[]", sub, typ.Elem())
		}
	case string:
		// Durations are strings in YAML and int64-based in Go.
		if typ.Kind() != reflect.String && typ != reflect.TypeFor[config.Duration]() {
			t.Errorf("%s: string where config has %s", path, typ)
		}
	case int, float64:
		switch typ.Kind() {
		case reflect.Int, reflect.Int64, reflect.Float64:
		default:
			t.Errorf("%s: number where config has %s", path, typ)
		}
	case bool:
		if typ.Kind() != reflect.Bool {
			t.Errorf("%s: bool where config has %s", path, typ)
		}
	default:
		t.Errorf("%s: unexpected YAML value %T", path, v)
	}
}

func TestGen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fleet")
	code := run([]string{
		"gen", "--out", dir, "--n", "5", "--base", "127.10.0.253", "--port", "22", "--seed", "gen-test",
		"--refused", "0.2", "--drift", "0.4", "--interval", "1m30s", "--timeout", "5s", "--concurrency", "7",
		"--ssh.concurrency", "3", "--ssh.rate", "2.5", "--ssh.burst", "4", "--set", "lab",
		"--command", "check=check", "--command", "uname=uname -a", "--command.timeout", "2s",
		"--max-output-bytes", "1024", "--reuse-connections",
	}, os.Stdout, os.Stderr)
	if code != 0 {
		t.Fatalf("gen exited %d", code)
	}
	wantHosts := []string{"127.10.0.253", "127.10.0.254", "127.10.1.1", "127.10.1.2", "127.10.1.3"}

	t.Run("fleet.yml", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(dir, configName))
		if err != nil {
			t.Fatal(err)
		}
		var generic map[string]any
		if err := yaml.Unmarshal(b, &generic); err != nil {
			t.Fatalf("fleet.yml is not valid YAML: %v", err)
		}
		checkSchema(t, "", generic, reflect.TypeFor[config.Config]())

		want := map[string]any{
			"global": map[string]any{
				"interval": "1m30s", "timeout": "5s", "concurrency": 7,
				"limits": map[string]any{"ssh": map[string]any{"concurrency": 3, "rate": 2.5, "burst": 4}},
			},
			"host_sets": []any{map[string]any{
				"name":  "lab",
				"hosts": []any{wantHosts[0], wantHosts[1], wantHosts[2], wantHosts[3], wantHosts[4]},
				"probes": map[string]any{"ssh": map[string]any{
					"port": 22, "user": "fleet",
					"private_key_file": filepath.Join(dir, privateKeyName),
					"known_hosts_file": filepath.Join(dir, knownHostsName),
					"commands": []any{
						map[string]any{"name": "check", "run": "check", "timeout": "2s"},
						map[string]any{"name": "uname", "run": "uname -a", "timeout": "2s"},
					},
					"max_output_bytes": 1024, "reuse_connections": true,
				}},
			}},
		}
		if diff := cmp.Diff(want, generic); diff != "" {
			t.Errorf("fleet.yml (-want +got):\n%s", diff)
		}
	})

	t.Run("known_hosts", func(t *testing.T) {
		_, _, cb := clientFiles(t, dir)
		lines := readAllLines(t, filepath.Join(dir, knownHostsName))
		if len(lines) != len(wantHosts) {
			t.Fatalf("known_hosts has %d lines, want %d", len(lines), len(wantHosts))
		}
		for i, h := range wantHosts {
			addr := netip.MustParseAddr(h)
			if !strings.HasPrefix(lines[i], h+" ssh-ed25519 ") {
				t.Errorf("line %d = %q, want %q... (port 22 has no brackets)", i, lines[i], h+" ssh-ed25519")
			}
			signer, err := hostSigner("gen-test", addr)
			if err != nil {
				t.Fatal(err)
			}
			remote := &net.TCPAddr{IP: addr.AsSlice(), Port: 22}
			if err := cb(hostPort(addr, 22), remote, signer.PublicKey()); err != nil {
				t.Errorf("known_hosts rejects the key of %s: %v", h, err)
			}
			wrong, err := hostSigner("gen-test", addr.Next())
			if err != nil {
				t.Fatal(err)
			}
			if err := cb(hostPort(addr, 22), remote, wrong.PublicKey()); err == nil {
				t.Errorf("known_hosts accepts another host's key for %s", h)
			}
		}
	})

	t.Run("client key", func(t *testing.T) {
		signer, pub, _ := clientFiles(t, dir)
		if !bytes.Equal(signer.PublicKey().Marshal(), pub.Marshal()) {
			t.Error("id_ed25519.pub does not match id_ed25519")
		}
		if pub.Type() != ssh.KeyAlgoED25519 {
			t.Errorf("key type = %s, want %s", pub.Type(), ssh.KeyAlgoED25519)
		}
		for name, want := range map[string]os.FileMode{privateKeyName: 0o600, publicKeyName: 0o644} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s mode = %v, want %v", name, fi.Mode().Perm(), want)
			}
		}
	})

	t.Run("classes.json", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(dir, classesName))
		if err != nil {
			t.Fatal(err)
		}
		var got map[string][]string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		fo := fleetOptions{N: 5, Base: netip.MustParseAddr("127.10.0.253"), Port: 22, Seed: "gen-test", Drift: 0.4}
		fo.Fractions[classRefused] = 0.2
		fleet, err := buildFleet(&fo)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{
			"healthy": {}, "refused": {}, "tarpit": {}, "auth_reject": {}, "hang": {}, "slow": {}, "drift": {},
		}
		for _, h := range fleet {
			want[h.Class.String()] = append(want[h.Class.String()], h.Addr.String())
			if h.Drift {
				want["drift"] = append(want["drift"], h.Addr.String())
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("classes.json (-want +got):\n%s", diff)
		}
		if len(got["refused"]) != 1 || len(got["drift"]) != 2 {
			t.Errorf("got %d refused and %d drifted hosts, want 1 and 2", len(got["refused"]), len(got["drift"]))
		}
	})

	t.Run("rerun keeps private key mode", func(t *testing.T) {
		key := filepath.Join(dir, privateKeyName)
		if err := os.Chmod(key, 0o644); err != nil {
			t.Fatal(err)
		}
		if code := run([]string{"gen", "--out", dir, "--n", "1"}, os.Stdout, os.Stderr); code != 0 {
			t.Fatalf("gen exited %d", code)
		}
		fi, err := os.Stat(key)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode after rerun = %v, want 0600", fi.Mode().Perm())
		}
	})
}

func TestPromDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{250 * time.Millisecond, "250ms"},
		{30 * time.Second, "30s"},
		{90 * time.Second, "1m30s"},
		{26 * time.Hour, "1d2h"},
		{time.Second + 5*time.Millisecond, "1s5ms"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			got := promDuration(tc.in)
			if got != tc.want {
				t.Errorf("promDuration(%s) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pub")
	tests := []struct {
		name string
		args []string
		want int
	}{
		{name: "no command", args: nil, want: 2},
		{name: "help", args: []string{"--help"}, want: 0},
		{name: "gen help", args: []string{"gen", "--help"}, want: 0},
		{name: "unknown flag", args: []string{"gen", "--out", dir, "--bogus"}, want: 2},
		{name: "gen without out", args: []string{"gen"}, want: 2},
		{name: "bad base", args: []string{"gen", "--out", dir, "--base", "nope"}, want: 1},
		{name: "base outside loopback", args: []string{"gen", "--out", dir, "--base", "10.0.0.1"}, want: 1},
		{name: "fractions above one", args: []string{"gen", "--out", dir, "--hang", "0.7", "--slow", "0.7"}, want: 1},
		{name: "bad command", args: []string{"gen", "--out", dir, "--command", "nameonly"}, want: 1},
		{name: "serve without key", args: []string{"serve"}, want: 2},
		{name: "serve with missing key", args: []string{"serve", "--authorized-key", missing}, want: 1},
		{name: "serve with bad base", args: []string{"serve", "--authorized-key", missing, "--base", "192.0.2.1"}, want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := run(tc.args, &bytes.Buffer{}, &stderr); got != tc.want {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", got, tc.want, stderr.String())
			}
		})
	}
}
