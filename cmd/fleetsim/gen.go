package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"
)

// Files written by gen, relative to its output directory.
const (
	knownHostsName = "known_hosts"
	privateKeyName = "id_ed25519"
	publicKeyName  = "id_ed25519.pub"
	configName     = "fleet.yml"
	classesName    = "classes.json"
	passwordName   = "password"
)

// defaultMaxTargetsPerSet mirrors fleet_exporter's default of
// global.max_targets_per_set.
const defaultMaxTargetsPerSet = 65536

// genCommand is one command of the generated SSH probe.
type genCommand struct {
	Name string
	Run  string
}

// genOptions configure gen: the fleet plus what goes into fleet.yml.
type genOptions struct {
	Fleet fleetOptions
	// Out is the directory that receives the files; it is created if needed.
	Out string
	// SetName is the host set name in fleet.yml.
	SetName string
	// User is the SSH user of the probe.
	User string
	// Interval, Timeout and Concurrency go to the global section.
	Interval, Timeout time.Duration
	Concurrency       int
	// SSHConcurrency, SSHRate and SSHBurst go to global.limits.ssh.
	SSHConcurrency int
	SSHRate        float64
	SSHBurst       int
	// Commands run by the probe; CommandTimeout (0: omitted) applies to each.
	Commands       []genCommand
	CommandTimeout time.Duration
	// MaxOutputBytes and ReuseConnections go to the SSH probe.
	MaxOutputBytes   int64
	ReuseConnections bool
	// Device, when set, logs in with DevicePassword (written to a
	// password file) as serve --device expects, in Mode; IgnoreLines go to
	// every command.
	Device         bool
	DevicePassword string
	Mode           string
	IgnoreLines    []string
}

// The yaml* types mirror the subset of fleet_exporter's config schema (see
// config/types.go) that gen writes. They are separate from config.Config so
// that durations come out as Prometheus-style strings and unset optional
// fields stay out of the file.
type yamlConfig struct {
	Global   yamlGlobal    `yaml:"global"`
	HostSets []yamlHostSet `yaml:"host_sets"`
}

type yamlGlobal struct {
	Interval    string `yaml:"interval"`
	Timeout     string `yaml:"timeout"`
	Concurrency int    `yaml:"concurrency"`
	// MaxTargetsPerSet is written only for fleets beyond the exporter's
	// default cap of 65536 targets per set.
	MaxTargetsPerSet int        `yaml:"max_targets_per_set,omitempty"`
	Limits           yamlLimits `yaml:"limits"`
}

type yamlLimits struct {
	SSH yamlLimit `yaml:"ssh"`
}

type yamlLimit struct {
	Concurrency int     `yaml:"concurrency"`
	Rate        float64 `yaml:"rate"`
	Burst       int     `yaml:"burst"`
}

type yamlHostSet struct {
	Name   string     `yaml:"name"`
	Hosts  []string   `yaml:"hosts"`
	Probes yamlProbes `yaml:"probes"`
}

type yamlProbes struct {
	SSH yamlSSH `yaml:"ssh"`
}

type yamlSSH struct {
	Port             int           `yaml:"port"`
	User             string        `yaml:"user"`
	PrivateKeyFile   string        `yaml:"private_key_file,omitempty"`
	PasswordFile     string        `yaml:"password_file,omitempty"`
	KnownHostsFile   string        `yaml:"known_hosts_file"`
	Mode             string        `yaml:"mode,omitempty"`
	Commands         []yamlCommand `yaml:"commands"`
	MaxOutputBytes   int64         `yaml:"max_output_bytes"`
	ReuseConnections bool          `yaml:"reuse_connections"`
}

type yamlCommand struct {
	Name        string   `yaml:"name"`
	Run         string   `yaml:"run"`
	Timeout     string   `yaml:"timeout,omitempty"`
	IgnoreLines []string `yaml:"ignore_lines,omitempty"`
}

// promDuration formats d the way Prometheus configs write durations
// ("1d2h", "1m30s", "250ms"); precision below a millisecond is dropped.
// (prometheus/common/model.Duration does this too, but importing model pulls
// in modules go.sum does not carry.)
func promDuration(d time.Duration) string {
	ms := int64(d / time.Millisecond)
	if ms <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		unit string
		ms   int64
	}{
		{"d", 24 * 60 * 60 * 1000},
		{"h", 60 * 60 * 1000},
		{"m", 60 * 1000},
		{"s", 1000},
		{"ms", 1},
	} {
		if n := ms / u.ms; n > 0 {
			b.WriteString(strconv.FormatInt(n, 10))
			b.WriteString(u.unit)
			ms -= n * u.ms
		}
	}
	return b.String()
}

// gen writes known_hosts, the client key pair, fleet.yml and classes.json for
// the fleet described by opts into opts.Out.
func gen(opts *genOptions) error {
	if opts.Out == "" {
		return fmt.Errorf("no output directory")
	}
	if len(opts.Commands) == 0 {
		return fmt.Errorf("no command for the ssh probe")
	}
	if opts.Interval <= 0 || opts.Timeout <= 0 {
		return fmt.Errorf("interval and timeout must be positive, got %s and %s", opts.Interval, opts.Timeout)
	}
	fleet, err := buildFleet(&opts.Fleet)
	if err != nil {
		return err
	}
	out, err := filepath.Abs(opts.Out)
	if err != nil {
		return fmt.Errorf("resolve output directory: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}

	var kh strings.Builder
	hosts := make([]string, len(fleet))
	for i := range fleet {
		signer, err := hostSigner(opts.Fleet.Seed, fleet[i].Addr)
		if err != nil {
			return fmt.Errorf("derive host key of %s: %w", fleet[i].Addr, err)
		}
		kh.WriteString(knownHostsLine(fleet[i].Addr, opts.Fleet.Port, signer.PublicKey()))
		kh.WriteByte('\n')
		hosts[i] = fleet[i].Addr.String()
	}
	if err := writeFile(filepath.Join(out, knownHostsName), []byte(kh.String()), 0o644); err != nil {
		return err
	}

	priv := clientKey(opts.Fleet.Seed)
	block, err := ssh.MarshalPrivateKey(priv, "fleetsim client")
	if err != nil {
		return fmt.Errorf("encode client key: %w", err)
	}
	if err := writeFile(filepath.Join(out, privateKeyName), pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return fmt.Errorf("client key: %w", err)
	}
	if err := writeFile(filepath.Join(out, publicKeyName), ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return err
	}

	cmds := make([]yamlCommand, len(opts.Commands))
	for i, c := range opts.Commands {
		cmds[i] = yamlCommand{Name: c.Name, Run: c.Run, IgnoreLines: opts.IgnoreLines}
		if opts.CommandTimeout > 0 {
			cmds[i].Timeout = promDuration(opts.CommandTimeout)
		}
	}
	maxTargets := 0
	if len(fleet) > defaultMaxTargetsPerSet {
		maxTargets = len(fleet)
	}
	cfg := yamlConfig{
		Global: yamlGlobal{
			Interval:         promDuration(opts.Interval),
			Timeout:          promDuration(opts.Timeout),
			Concurrency:      opts.Concurrency,
			MaxTargetsPerSet: maxTargets,
			Limits: yamlLimits{SSH: yamlLimit{
				Concurrency: opts.SSHConcurrency,
				Rate:        opts.SSHRate,
				Burst:       opts.SSHBurst,
			}},
		},
		HostSets: []yamlHostSet{{
			Name:  opts.SetName,
			Hosts: hosts,
			Probes: yamlProbes{SSH: yamlSSH{
				Port:             opts.Fleet.Port,
				User:             opts.User,
				PrivateKeyFile:   filepath.Join(out, privateKeyName),
				KnownHostsFile:   filepath.Join(out, knownHostsName),
				Mode:             opts.Mode,
				Commands:         cmds,
				MaxOutputBytes:   opts.MaxOutputBytes,
				ReuseConnections: opts.ReuseConnections,
			}},
		}},
	}
	if opts.Device {
		pw := filepath.Join(out, passwordName)
		if err := writeFile(pw, []byte(opts.DevicePassword+"\n"), 0o600); err != nil {
			return err
		}
		ssh := &cfg.HostSets[0].Probes.SSH
		ssh.PrivateKeyFile, ssh.PasswordFile = "", pw
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Generated by fleetsim gen: %d simulated hosts from %s, seed %q.\n", len(fleet), fleet[0].Addr, opts.Fleet.Seed)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&cfg); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := writeFile(filepath.Join(out, configName), buf.Bytes(), 0o644); err != nil {
		return err
	}
	return writeClasses(filepath.Join(out, classesName), fleet)
}

// classesJSON maps each class name, and "drift", to its addresses in fleet
// order; every key is present, possibly with an empty list.
func classesJSON(fleet []simHost) ([]byte, error) {
	m := make(map[string][]string, numClasses+1)
	for c := range numClasses {
		m[c.String()] = []string{}
	}
	m["drift"] = []string{}
	for _, h := range fleet {
		m[h.Class.String()] = append(m[h.Class.String()], h.Addr.String())
		if h.Drift {
			m["drift"] = append(m["drift"], h.Addr.String())
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// writeClasses writes classesJSON(fleet) to path.
func writeClasses(path string, fleet []simHost) error {
	b, err := classesJSON(fleet)
	if err != nil {
		return fmt.Errorf("encode classes: %w", err)
	}
	return writeFile(path, b, 0o644)
}

// writeFile replaces path with data and mode perm atomically. The data is
// written to a temporary file created with mode 0600 and renamed, so the
// private key is never readable by others, not even briefly when an older
// file had a wider mode.
func writeFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, perm)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
