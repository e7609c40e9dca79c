package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fleet-exporter/fleet_exporter/config"
)

// cliSet names the host set built from hosts on the command line; it is
// the SET column of --once.
const cliSet = "cli"

// cliConfigName names the command line in config errors.
const cliConfigName = "<command line>"

// keptOutputBytes is how much of each command's stdout --once keeps to
// print it grouped; longer outputs are shown cut, and told apart by the
// hash of their whole output.
const keptOutputBytes = 64 << 10

// onceFlags are the --once flags: hosts and probes given on the command
// line instead of a config file, and how the results are printed.
type onceFlags struct {
	hosts       []string
	probes      []string
	sshUser     string
	sshPort     int
	sshKey      string
	knownHosts  string
	commands    []string
	timeout     time.Duration
	concurrency int
	filter      string
	output      string

	// set records which flags were given, for the checks.
	set map[string]*bool
}

func (o *onceFlags) given(name string) bool { return o.set[name] != nil && *o.set[name] }

// check refuses flag combinations that cannot mean anything.
func (o *onceFlags) check(once bool, configFile string) error {
	if !once {
		if len(o.hosts) > 0 {
			return fmt.Errorf("unexpected %s: hosts as arguments need --once", o.hosts[0])
		}
		for name := range o.set {
			if o.given(name) {
				return fmt.Errorf("--%s needs --once", name)
			}
		}
		return nil
	}
	if len(o.hosts) > 0 {
		switch {
		case configFile != "":
			return errors.New("give hosts as arguments or --config.file, not both")
		case o.given("once.timeout") && o.timeout <= 0:
			return fmt.Errorf("--once.timeout must be positive, got %v", o.timeout)
		case o.given("once.concurrency") && (o.concurrency < 1 || o.concurrency > config.MaxConcurrency):
			return fmt.Errorf("--once.concurrency must be between 1 and %d, got %d", config.MaxConcurrency, o.concurrency)
		}
		return nil
	}
	for _, name := range []string{"once.probe", "once.ssh.user", "once.ssh.port", "once.ssh.key", "once.ssh.known-hosts", "once.ssh.command", "once.timeout", "once.concurrency"} {
		if o.given(name) {
			return fmt.Errorf("--%s applies to hosts given as arguments; with a config file, set it there", name)
		}
	}
	return nil
}

// config builds the configuration of the hosts given as arguments: one
// host set, cliSet, with the probes the flags ask for. It goes through
// config.Parse like a file, so every rule and default of a file applies.
func (o *onceFlags) config() (*config.Config, error) {
	probes := map[string]any{}
	probeTimeout := func(m map[string]any) map[string]any {
		if o.timeout > 0 {
			m["timeout"] = config.Duration(o.timeout).String()
		}
		return m
	}
	list := o.probes
	if len(list) == 0 {
		list = []string{config.ProbeICMP}
	}
	var ports []int
	for _, p := range list {
		kind, arg, hasArg := strings.Cut(p, ":")
		if _, dup := probes[kind]; dup && kind != config.ProbeTCP {
			return nil, fmt.Errorf("--once.probe=%s: %s given twice", p, kind)
		}
		switch {
		case kind == config.ProbeICMP && !hasArg:
			probes[kind] = probeTimeout(map[string]any{})
		case kind == config.ProbeTCP && hasArg:
			for _, ps := range strings.Split(arg, ",") {
				n, err := strconv.Atoi(ps)
				if err != nil || n < 1 || n > config.MaxPort {
					return nil, fmt.Errorf("--once.probe=%s: %q is not a port (1 to %d)", p, ps, config.MaxPort)
				}
				ports = append(ports, n)
			}
			probes[kind] = probeTimeout(map[string]any{"ports": ports})
		case kind == config.ProbeSSH && !hasArg:
			ssh, err := o.sshProbe()
			if err != nil {
				return nil, err
			}
			probes[kind] = probeTimeout(ssh)
		default:
			return nil, fmt.Errorf("--once.probe=%s: want icmp, tcp:PORT[,PORT...] or ssh", p)
		}
	}
	if !o.givenProbe(config.ProbeSSH) {
		for _, name := range []string{"once.ssh.user", "once.ssh.port", "once.ssh.key", "once.ssh.known-hosts", "once.ssh.command"} {
			if o.given(name) {
				return nil, fmt.Errorf("--%s needs --once.probe=ssh", name)
			}
		}
	}

	set := map[string]any{"name": cliSet, "hosts": o.hosts, "probes": probes}
	global := map[string]any{}
	if o.timeout > 0 {
		set["timeout"] = config.Duration(o.timeout).String()
		// The interval means nothing to one round; it only has to leave
		// room for the timeout.
		global["interval"] = config.Duration(max(config.DefaultInterval, o.timeout)).String()
	}
	if o.given("once.concurrency") {
		n := o.concurrency
		limit := map[string]any{"concurrency": n}
		global["concurrency"] = n
		global["limits"] = map[string]any{config.ProbeICMP: limit, config.ProbeTCP: limit, config.ProbeSSH: limit}
	}
	doc := map[string]any{"host_sets": []any{set}}
	if len(global) > 0 {
		doc["global"] = global
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("build the config of the command line: %w", err)
	}
	cfg, err := config.Parse(data, cliConfigName)
	if err != nil {
		return nil, cliError(err)
	}
	return cfg, nil
}

func (o *onceFlags) givenProbe(kind string) bool {
	for _, p := range o.probes {
		if k, _, _ := strings.Cut(p, ":"); k == kind {
			return true
		}
	}
	return false
}

// sshProbe returns the ssh block of --once.probe=ssh.
func (o *onceFlags) sshProbe() (map[string]any, error) {
	home, _ := os.UserHomeDir()
	expand := func(p string) string {
		if home != "" && (p == "~" || strings.HasPrefix(p, "~/")) {
			return filepath.Join(home, p[1:])
		}
		return p
	}
	u := o.sshUser
	if u == "" {
		if cur, err := user.Current(); err == nil {
			u = cur.Username
		}
	}
	if u == "" {
		return nil, errors.New("--once.probe=ssh: no user: give --once.ssh.user")
	}
	m := map[string]any{"user": u, "port": o.sshPort}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" && o.sshKey == "" {
		m["agent"] = true
	}
	key := expand(o.sshKey)
	if key == "" && home != "" {
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			p := filepath.Join(home, ".ssh", name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				key = p
				break
			}
		}
	}
	if key != "" {
		m["private_key_file"] = key
	}
	if m["agent"] == nil && key == "" {
		return nil, errors.New("--once.probe=ssh: no credentials: give --once.ssh.key or run an ssh-agent (SSH_AUTH_SOCK)")
	}
	kh := expand(o.knownHosts)
	if kh == "" && home != "" {
		kh = filepath.Join(home, ".ssh", "known_hosts")
	}
	if kh == "" {
		return nil, errors.New("--once.probe=ssh: no known_hosts file: give --once.ssh.known-hosts")
	}
	m["known_hosts_file"] = kh
	if len(o.commands) > 0 {
		names := commandNames(o.commands)
		cmds := make([]any, len(o.commands))
		for i, c := range o.commands {
			cmds[i] = map[string]any{"name": names[i], "run": c}
		}
		m["commands"] = cmds
	}
	return m, nil
}

// notName matches what a command name may not hold.
var notName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// commandNames derives a name for each command from its first word ("uname
// -r" is uname, "/usr/bin/df -h" is df), numbered when two would share one.
func commandNames(cmds []string) []string {
	names := make([]string, len(cmds))
	used := map[string]bool{}
	for i, c := range cmds {
		base := "cmd"
		if f := strings.Fields(c); len(f) > 0 {
			if b := strings.Trim(notName.ReplaceAllString(filepath.Base(f[0]), "_"), "._"); b != "" {
				base = b
			}
		}
		name := base
		for n := 2; used[name]; n++ {
			name = base + "_" + strconv.Itoa(n)
		}
		used[name] = true
		names[i] = name
	}
	return names
}

// cliLine matches the location prefix of a config error about the config
// built from the command line: its lines mean nothing to the user.
var cliLine = regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(cliConfigName) + `:\d+: (host_sets\[0\] \("` + cliSet + `"\)\.)?`)

// cliError rewords an error of the built config in terms of the command
// line.
func cliError(err error) error {
	msg := cliLine.ReplaceAllString(err.Error(), "")
	msg = strings.ReplaceAll(msg, "probes.tcp.ports", "--once.probe=tcp")
	msg = strings.ReplaceAll(msg, "probes.ssh.", "--once.probe=ssh: ")
	return fmt.Errorf("command line: %s", msg)
}
