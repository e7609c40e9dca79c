package config

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // for the built-in default configuration
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// Limits on what Load and Parse accept.
const (
	// MaxConfigSize is the largest configuration file, in bytes, that
	// ReadFile, Load and Parse accept.
	MaxConfigSize = 4 << 20
	// MaxTargetsPerSetCeiling is the largest value max_targets_per_set may
	// take, so that one set can never expand to an unbounded allocation.
	MaxTargetsPerSetCeiling = 1 << 20
	// MaxHostsTotal caps the hosts all sets together may expand to, so that
	// a short file cannot demand unbounded work or memory.
	MaxHostsTotal = 1 << 22
	// maxNestingDepth bounds the depth of the YAML tree. The schema needs 8
	// levels; anything far deeper is a mistake or an attack.
	maxNestingDepth = 32
)

// Defaults applied when a field is absent. config.example.yml documents each
// of them next to its option.
const (
	// DefaultInterval is global.interval's default.
	DefaultInterval = 60 * time.Second
	// DefaultTimeout is global.timeout's default. An inherited timeout is
	// clamped to the interval it applies to.
	DefaultTimeout = 10 * time.Second
	// DefaultConcurrency is global.concurrency's default.
	DefaultConcurrency = 4096
	// DefaultMaxTargetsPerSet is global.max_targets_per_set's default.
	DefaultMaxTargetsPerSet = 65536
	// DefaultICMPConcurrency is global.limits.icmp.concurrency's default.
	DefaultICMPConcurrency = 4096
	// DefaultTCPConcurrency is global.limits.tcp.concurrency's default.
	DefaultTCPConcurrency = 256
	// DefaultSSHConcurrency is global.limits.ssh.concurrency's default.
	DefaultSSHConcurrency = 64
	// DefaultICMPCount is the ICMP probe's default echo request count.
	DefaultICMPCount = 1
	// MaxICMPCount is the largest icmp.count: one round's sequence numbers
	// must stay unique within 16 bits.
	MaxICMPCount = 65535
	// DefaultICMPPacketInterval is the ICMP probe's default time between
	// echo requests.
	DefaultICMPPacketInterval = time.Second
	// DefaultICMPSize is the ICMP probe's default payload size in bytes.
	DefaultICMPSize = 56
	// DefaultSSHPort is the SSH probe's default port.
	DefaultSSHPort = 22
	// DefaultMaxOutputBytes is the SSH probe's default limit on one
	// command's stdout.
	DefaultMaxOutputBytes = 1 << 20
)

// defaultYAML is the configuration used when none is given.
//
//go:embed default.yml
var defaultYAML []byte

// reservedLabels are the label names the exporter sets itself; a set's static
// labels must not collide with them (or with Prometheus' target labels).
func reservedLabel(name string) bool {
	switch name {
	case "set", "host", "probe", "reason", "phase", "command", "result", "job", "instance", "le", "quantile":
		return true
	}
	return false
}

func defaultGlobal() Global {
	return Global{
		Interval:         Duration(DefaultInterval),
		Timeout:          0, // DefaultTimeout, clamped to the interval by applyDefaults
		Concurrency:      DefaultConcurrency,
		MaxTargetsPerSet: DefaultMaxTargetsPerSet,
		Limits: ProbeLimits{
			ICMP: Limit{Concurrency: DefaultICMPConcurrency},
			TCP:  Limit{Concurrency: DefaultTCPConcurrency},
			SSH:  Limit{Concurrency: DefaultSSHConcurrency},
		},
	}
}

func defaultICMPProbe() ICMPProbe {
	return ICMPProbe{
		Count:          DefaultICMPCount,
		PacketInterval: Duration(DefaultICMPPacketInterval),
		Size:           DefaultICMPSize,
	}
}

func defaultSSHProbe() SSHProbe {
	return SSHProbe{Port: DefaultSSHPort, MaxOutputBytes: DefaultMaxOutputBytes}
}

// UnmarshalYAML applies the defaults, then decodes strictly. It uses the
// callback form on purpose: the *yaml.Node form's node.Decode drops the
// decoder's KnownFields setting, so misspelt keys would pass silently.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	*c = Config{Global: defaultGlobal()}
	type plain Config
	return unmarshal((*plain)(c))
}

// UnmarshalYAML applies the global defaults, then decodes strictly.
func (g *Global) UnmarshalYAML(unmarshal func(any) error) error {
	*g = defaultGlobal()
	type plain Global
	return unmarshal((*plain)(g))
}

// UnmarshalYAML decodes strictly. A probe key given without a value (an
// empty "icmp:") enables that probe with its defaults rather than leaving it
// disabled; to disable a probe, leave its key out.
func (p *Probes) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Probes
	if err := unmarshal((*plain)(p)); err != nil {
		return err
	}
	var present map[string]any
	if err := unmarshal(&present); err != nil {
		return err
	}
	if v, ok := present[ProbeICMP]; ok && v == nil && p.ICMP == nil {
		d := defaultICMPProbe()
		p.ICMP = &d
	}
	if v, ok := present[ProbeTCP]; ok && v == nil && p.TCP == nil {
		p.TCP = &TCPProbe{}
	}
	if v, ok := present[ProbeSSH]; ok && v == nil && p.SSH == nil {
		d := defaultSSHProbe()
		p.SSH = &d
	}
	return nil
}

// UnmarshalYAML applies the ICMP probe defaults, then decodes strictly.
func (p *ICMPProbe) UnmarshalYAML(unmarshal func(any) error) error {
	*p = defaultICMPProbe()
	type plain ICMPProbe
	return unmarshal((*plain)(p))
}

// UnmarshalYAML applies the SSH probe defaults, then decodes strictly.
func (p *SSHProbe) UnmarshalYAML(unmarshal func(any) error) error {
	*p = defaultSSHProbe()
	type plain SSHProbe
	return unmarshal((*plain)(p))
}

// durationErrPrefix starts the decode error of a bad duration; the parser
// finds the offending node again by the quoted value that follows it.
const durationErrPrefix = "invalid duration "

// UnmarshalYAML reads a Prometheus-style duration such as "90s", "5m",
// "1h30m" or "1d".
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	v, err := model.ParseDuration(s)
	if err != nil {
		// A TypeError lets the decoder carry on and report every bad field.
		return &yaml.TypeError{Errors: []string{
			durationErrPrefix + strconv.Quote(s) + `: want a number with a unit (ms, s, m, h, d, w, y), e.g. "30s", "5m", "1h30m"`,
		}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration in the form UnmarshalYAML reads.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String formats the duration Prometheus-style, e.g. "1m30s" or "1d".
func (d Duration) String() string { return model.Duration(d).String() }

// ReadFile reads a configuration file, refusing one larger than
// MaxConfigSize without reading all of it.
func ReadFile(filename string) ([]byte, error) {
	f, err := os.Open(filename)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", filename, err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("%s: config file is larger than %d bytes", filename, MaxConfigSize)
	}
	return data, nil
}

// Load reads and parses the configuration file filename. Relative file paths
// in it are resolved against the file's directory.
func Load(filename string) (*Config, error) {
	data, err := ReadFile(filename)
	if err != nil {
		return nil, err
	}
	return Parse(data, filename)
}

// Parse applies the defaults, decodes data strictly (unknown keys are
// errors), validates the result and sets Hash and Filename. filename names
// the source in error messages ("file:line: ...") and is the base for
// relative file paths; when empty, paths are relative to the working
// directory. A returned error lists every problem found, one per line.
func Parse(data []byte, filename string) (*Config, error) {
	name := filename
	if name == "" {
		name = "<input>"
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("%s: config is larger than %d bytes", name, MaxConfigSize)
	}
	dir := "."
	if filename != "" {
		dir = filepath.Dir(filename)
	}
	baseDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: resolve config directory: %w", name, err)
	}

	// The node tree of the same bytes maps error paths back to lines.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlSyntaxError(name, err)
	}
	loc := &locator{file: name, root: &root}
	if n := tooDeep(&root, 0); n != nil {
		return nil, fmt.Errorf("%s:%d: YAML nested deeper than %d levels", name, n.Line, maxNestingDepth)
	}

	cfg := &Config{Global: defaultGlobal()}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, loc.decodeError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlSyntaxError(name, err)
		}
		return nil, fmt.Errorf("%s:%d: more than one YAML document; a config file holds exactly one", name, extra.Line)
	}

	cfg.applyDefaults(baseDir)
	if errs := cfg.validate(); len(errs) > 0 {
		return nil, loc.validationError(errs)
	}
	sum := sha256.Sum256(data)
	cfg.Hash = hex.EncodeToString(sum[:])
	cfg.Filename = filename
	return cfg, nil
}

// Default returns the built-in configuration (config/default.yml): the set
// "localhost" with host 127.0.0.1, probed by ICMP and by TCP on port 22
// every 10s. Each call returns a fresh copy.
func Default() *Config {
	cfg, err := Parse(defaultYAML, "<embedded>")
	if err != nil {
		// default.yml is compiled in and covered by tests.
		panic("config: embedded default.yml is invalid: " + err.Error())
	}
	return cfg
}

// applyDefaults fills in the values inherited from enclosing levels and
// resolves relative file paths against baseDir.
func (c *Config) applyDefaults(baseDir string) {
	g := &c.Global
	if g.Timeout == 0 {
		g.Timeout = Duration(DefaultTimeout)
		if g.Interval > 0 && g.Timeout > g.Interval {
			g.Timeout = g.Interval
		}
	}
	for _, l := range []*Limit{&g.Limits.ICMP, &g.Limits.TCP, &g.Limits.SSH} {
		if l.Rate > 0 && l.Burst == 0 {
			l.Burst = max(1, int(math.Min(l.Rate, math.MaxInt32)))
		}
	}
	for i := range c.HostSets {
		hs := &c.HostSets[i]
		if hs.Interval == 0 {
			hs.Interval = g.Interval
		}
		if hs.Timeout == 0 {
			// Like Prometheus' scrape_timeout: an inherited timeout never
			// exceeds the set's own interval; an explicit one must not.
			hs.Timeout = g.Timeout
			if hs.Interval > 0 && hs.Timeout > hs.Interval {
				hs.Timeout = hs.Interval
			}
		}
		if hs.Labels == nil {
			hs.Labels = map[string]string{}
		}
		p := &hs.Probes
		if p.ICMP != nil && p.ICMP.Timeout == 0 {
			p.ICMP.Timeout = hs.Timeout
		}
		if p.TCP != nil && p.TCP.Timeout == 0 {
			p.TCP.Timeout = hs.Timeout
		}
		if s := p.SSH; s != nil {
			if s.Timeout == 0 {
				s.Timeout = hs.Timeout
			}
			for j := range s.Commands {
				if s.Commands[j].Timeout == 0 {
					s.Commands[j].Timeout = s.Timeout
				}
			}
			for _, f := range []*string{&s.PrivateKeyFile, &s.PassphraseFile, &s.CertificateFile, &s.PasswordFile, &s.KnownHostsFile} {
				*f = resolvePath(baseDir, *f)
			}
		}
	}
}

// resolvePath makes p absolute relative to baseDir. "~" is left alone for
// validate to refuse: it is a shell feature, not a path.
func resolvePath(baseDir, p string) string {
	if p == "" || strings.HasPrefix(p, "~") {
		return p
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(baseDir, p)
}

// mapKey is a path element naming a key of a YAML mapping whose key node the
// error is about (e.g. an invalid label name); it is not shown in the path
// because the message quotes it.
type mapKey string

// fieldError is one validation problem at a path of the YAML tree. Path
// elements are string (struct field), int (sequence index) or mapKey.
type fieldError struct {
	path []any
	msg  string
}

type validator struct {
	errs []fieldError
}

// at returns base with elems appended, never sharing base's backing array.
func at(base []any, elems ...any) []any {
	return append(slices.Clip(base), elems...)
}

func (v *validator) add(path []any, format string, args ...any) {
	v.errs = append(v.errs, fieldError{path: path, msg: fmt.Sprintf(format, args...)})
}

// validate checks every cross-field rule in one pass and returns all
// problems found.
func (c *Config) validate() []fieldError {
	v := &validator{}
	g := &c.Global
	gp := []any{"global"}
	globalOK := v.intervalTimeout(gp, g.Interval, g.Timeout)
	if g.Concurrency < 1 {
		v.add(at(gp, "concurrency"), "concurrency must be at least 1, got %d", g.Concurrency)
	}
	if g.MaxTargetsPerSet < 1 || g.MaxTargetsPerSet > MaxTargetsPerSetCeiling {
		v.add(at(gp, "max_targets_per_set"), "max_targets_per_set must be between 1 and %d, got %d", MaxTargetsPerSetCeiling, g.MaxTargetsPerSet)
	}
	for _, pt := range ProbeTypes {
		l := g.Limits.For(pt)
		lp := at(gp, "limits", pt)
		if l.Concurrency < 1 {
			v.add(at(lp, "concurrency"), "concurrency must be at least 1, got %d", l.Concurrency)
		}
		if !(l.Rate >= 0) || math.IsInf(l.Rate, 0) {
			v.add(at(lp, "rate"), "rate must be a finite number >= 0 (0 means unlimited), got %v", l.Rate)
		}
		if l.Burst < 0 {
			v.add(at(lp, "burst"), "burst must be >= 0, got %d", l.Burst)
		}
	}

	if len(c.HostSets) == 0 {
		v.add([]any{"host_sets"}, "at least one host set is required")
	}
	names := map[string]int{}
	var total uint64
	for i := range c.HostSets {
		hs := &c.HostSets[i]
		sp := []any{"host_sets", i}
		switch {
		case hs.Name == "":
			v.add(at(sp, "name"), "name is required")
		case !isName(hs.Name):
			v.add(at(sp, "name"), "set name %q is invalid: use only letters, digits, '_', '.' and '-'", hs.Name)
		default:
			if first, dup := names[hs.Name]; dup {
				v.add(at(sp, "name"), "set name %q is already used by host_sets[%d]", hs.Name, first)
			} else {
				names[hs.Name] = i
			}
		}
		c.validateSet(v, sp, hs, globalOK, &total)
	}
	return v.errs
}

// intervalTimeout checks an interval and the timeout that applies to it,
// reporting whether both are usable.
func (v *validator) intervalTimeout(p []any, interval, timeout Duration) bool {
	ok := true
	if interval <= 0 {
		v.add(at(p, "interval"), "interval must be positive")
		ok = false
	}
	if timeout <= 0 {
		v.add(at(p, "timeout"), "timeout must be positive")
		ok = false
	}
	if ok && timeout > interval {
		v.add(at(p, "timeout"), "timeout %s exceeds the interval %s", timeout, interval)
		ok = false
	}
	return ok
}

// probeTimeout checks a probe's effective timeout against its set's interval.
func (v *validator) probeTimeout(p []any, timeout, interval Duration) {
	switch {
	case timeout <= 0:
		v.add(at(p, "timeout"), "timeout must be positive")
	case interval > 0 && timeout > interval:
		v.add(at(p, "timeout"), "timeout %s exceeds the set's interval %s", timeout, interval)
	}
}

func (c *Config) validateSet(v *validator, sp []any, hs *HostSet, globalOK bool, total *uint64) {
	if globalOK || hs.Interval > 0 {
		v.intervalTimeout(sp, hs.Interval, hs.Timeout)
	}

	labels := slices.Sorted(maps.Keys(hs.Labels))
	for _, k := range labels {
		lp := at(sp, "labels", mapKey(k))
		switch {
		case !isLabelName(k):
			v.add(lp, "label name %q is invalid: want [a-zA-Z_][a-zA-Z0-9_]*", k)
		case strings.HasPrefix(k, "__"):
			v.add(lp, "label name %q is invalid: names starting with \"__\" are reserved", k)
		case reservedLabel(k):
			v.add(lp, "label name %q is reserved: the exporter sets it itself", k)
		}
		if !utf8.ValidString(hs.Labels[k]) {
			v.add(lp, "label %q has a value that is not valid UTF-8", k)
		}
	}

	p := &hs.Probes
	if p.ICMP == nil && p.TCP == nil && p.SSH == nil {
		v.add(at(sp, "probes"), "at least one probe (icmp, tcp or ssh) is required")
	}
	pp := at(sp, "probes")
	if icmp := p.ICMP; icmp != nil {
		ip := at(pp, ProbeICMP)
		// The ICMP sequence number is 16 bits: a longer round could not
		// tell its replies apart.
		if icmp.Count < 1 || icmp.Count > MaxICMPCount {
			v.add(at(ip, "count"), "count must be between 1 and %d, got %d", MaxICMPCount, icmp.Count)
		}
		if icmp.Size < 0 || icmp.Size > 65500 {
			v.add(at(ip, "size"), "size must be between 0 and 65500, got %d", icmp.Size)
		}
		if icmp.PacketInterval <= 0 {
			v.add(at(ip, "packet_interval"), "packet_interval must be positive")
		}
		v.probeTimeout(ip, icmp.Timeout, hs.Interval)
		if icmp.Count > 1 && icmp.PacketInterval > 0 && icmp.Timeout > 0 &&
			float64(icmp.Count-1)*float64(icmp.PacketInterval) >= float64(icmp.Timeout) {
			v.add(at(ip, "count"), "count %d with packet_interval %s cannot complete within the timeout %s", icmp.Count, icmp.PacketInterval, icmp.Timeout)
		}
	}
	if tcp := p.TCP; tcp != nil {
		tp := at(pp, ProbeTCP)
		if tcp.Port < 0 || tcp.Port > 65535 {
			v.add(at(tp, "port"), "port must be between 1 and 65535, got %d", tcp.Port)
		}
		v.probeTimeout(tp, tcp.Timeout, hs.Interval)
	}
	if ssh := p.SSH; ssh != nil {
		validateSSH(v, at(pp, ProbeSSH), ssh, hs.Interval)
	}

	c.validateHosts(v, sp, hs, total)
}

func validateSSH(v *validator, p []any, s *SSHProbe, interval Duration) {
	if s.Port < 1 || s.Port > 65535 {
		v.add(at(p, "port"), "port must be between 1 and 65535, got %d", s.Port)
	}
	if s.User == "" {
		v.add(at(p, "user"), "user is required")
	}
	if s.PrivateKeyFile == "" && s.PasswordFile == "" && !s.Agent {
		v.add(p, "at least one authentication method is required: private_key_file, password_file or agent: true")
	}
	if s.PassphraseFile != "" && s.PrivateKeyFile == "" {
		v.add(at(p, "passphrase_file"), "passphrase_file requires private_key_file")
	}
	if s.CertificateFile != "" && s.PrivateKeyFile == "" {
		v.add(at(p, "certificate_file"), "certificate_file requires private_key_file")
	}
	switch {
	case s.KnownHostsFile == "" && !s.InsecureSkipHostKeyVerification:
		v.add(at(p, "known_hosts_file"), "known_hosts_file is required unless insecure_skip_host_key_verification is true")
	case s.KnownHostsFile != "" && s.InsecureSkipHostKeyVerification:
		v.add(at(p, "insecure_skip_host_key_verification"), "insecure_skip_host_key_verification and known_hosts_file are mutually exclusive")
	}
	for _, f := range []struct{ key, val string }{
		{"private_key_file", s.PrivateKeyFile},
		{"passphrase_file", s.PassphraseFile},
		{"certificate_file", s.CertificateFile},
		{"password_file", s.PasswordFile},
		{"known_hosts_file", s.KnownHostsFile},
	} {
		if strings.HasPrefix(f.val, "~") {
			v.add(at(p, f.key), "path %q starts with '~', which is not expanded: use an absolute path or one relative to the config file", f.val)
		}
	}
	if s.MaxOutputBytes < 1 {
		v.add(at(p, "max_output_bytes"), "max_output_bytes must be at least 1, got %d", s.MaxOutputBytes)
	}
	v.probeTimeout(p, s.Timeout, interval)

	seen := map[string]int{}
	for i, cmd := range s.Commands {
		cp := at(p, "commands", i)
		switch {
		case cmd.Name == "":
			v.add(at(cp, "name"), "command name is required")
		case !isName(cmd.Name):
			v.add(at(cp, "name"), "command name %q is invalid: use only letters, digits, '_', '.' and '-'", cmd.Name)
		default:
			if first, dup := seen[cmd.Name]; dup {
				v.add(at(cp, "name"), "command name %q is already used by commands[%d]", cmd.Name, first)
			} else {
				seen[cmd.Name] = i
			}
		}
		if strings.TrimSpace(cmd.Run) == "" {
			v.add(at(cp, "run"), "run is required")
		}
		switch {
		case cmd.Timeout <= 0:
			v.add(at(cp, "timeout"), "timeout must be positive")
		case s.Timeout > 0 && cmd.Timeout > s.Timeout:
			v.add(at(cp, "timeout"), "timeout %s exceeds the ssh probe's timeout %s", cmd.Timeout, s.Timeout)
		}
	}
}

// validateHosts parses and counts every entry (refusing an oversized set
// before expanding anything), then expands the entries to check every
// resulting host and the tcp port rule. total accumulates the hosts of all
// sets.
func (c *Config) validateHosts(v *validator, sp []any, hs *HostSet, total *uint64) {
	hp := at(sp, "hosts")
	if len(hs.Hosts) == 0 {
		v.add(hp, "at least one host is required")
		return
	}
	limit := c.Global.MaxTargetsPerSet
	if limit < 1 || limit > MaxTargetsPerSetCeiling {
		// Already reported; check the hosts against the ceiling instead.
		limit = MaxTargetsPerSetCeiling
	}
	entries, errs := parseSetEntries(hs.Hosts, limit)
	for _, e := range errs {
		v.add(at(hp, e.index), "%v", e.err)
	}
	if len(errs) > 0 {
		return
	}
	*total += setCount(entries) // each set is bounded by the ceiling: no overflow
	if *total > MaxHostsTotal {
		v.add(hp, "all host sets up to this one expand to %d hosts, more than the %d allowed in total", *total, MaxHostsTotal)
		return
	}
	needPort := hs.Probes.TCP != nil && hs.Probes.TCP.Port == 0
	for j, e := range entries {
		if e.prefix.IsValid() {
			// Every address of a CIDR block is valid and none has a port.
			if needPort {
				v.add(at(hp, j), "entry %q has no port and probes.tcp.port is not set", e.raw)
			}
			continue
		}
		first := true
		err := e.each(func(a hostAddr) error {
			if first && needPort && a.port == 0 {
				v.add(at(hp, j), "entry %q has no port and probes.tcp.port is not set", e.raw)
			}
			first = false
			return nil
		})
		if err != nil {
			v.add(at(hp, j), "%v", err)
		}
	}
}

// isName reports whether s is a valid set or command name: non-empty,
// [a-zA-Z0-9_.-]+.
func isName(s string) bool {
	// "." and ".." would be path segments in the status page URLs.
	if strings.Trim(s, ".") == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !isAlnum(b) && b != '_' && b != '.' && b != '-' {
			return false
		}
	}
	return true
}

// isLabelName reports whether s matches ^[a-zA-Z_][a-zA-Z0-9_]*$.
func isLabelName(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '_' {
			return false
		}
	}
	return true
}

func isAlnum(b byte) bool {
	return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9')
}

// tooDeep returns a node nested deeper than maxNestingDepth, or nil. It does
// not follow aliases, so it is linear in the size of the tree.
func tooDeep(n *yaml.Node, depth int) *yaml.Node {
	if depth > maxNestingDepth {
		return n
	}
	for _, c := range n.Content {
		if d := tooDeep(c, depth+1); d != nil {
			return d
		}
	}
	return nil
}

// locator turns decode and validation errors into "file:line: path: msg"
// using the node tree parsed from the same bytes.
type locator struct {
	file string
	root *yaml.Node
	// reported holds the duration nodes already named by an error, so that
	// the same bad value in two places is reported at both.
	reported map[*yaml.Node]bool
}

// oneLine keeps each reported problem on one line: values quoted by the
// decoder may hold line breaks.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// yamlSyntaxError rewrites the parser's "yaml: line N: msg" as "file:N: msg".
func yamlSyntaxError(file string, err error) error {
	msg := oneLine(strings.TrimPrefix(err.Error(), "yaml: "))
	if m := regexp.MustCompile(`^line (\d+): (.*)$`).FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: %s", file, m[1], m[2])
	}
	return fmt.Errorf("%s: %s", file, msg)
}

// decodeError rewrites the decoder's errors so that each names the file, the
// line and the path of the offending field.
func (l *locator) decodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return yamlSyntaxError(l.file, err)
	}
	var (
		lineRe     = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
		unknownRe  = regexp.MustCompile(`(?s)^field (.*) not found in type .*$`)
		twiceRe    = regexp.MustCompile(`(?s)^field (.*) already set in type .*$`)
		dupKeyRe   = regexp.MustCompile(`(?s)^mapping key (".*") already defined at line (\d+)$`)
		mismatchRe = regexp.MustCompile("(?s)^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
	)
	out := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		m := lineRe.FindStringSubmatch(e)
		if m == nil {
			out = append(out, oneLine(l.unplacedError(e)))
			continue
		}
		line, _ := strconv.Atoi(m[1])
		msg := m[2]
		if mm := unknownRe.FindStringSubmatch(msg); mm != nil {
			path, ok := l.findKey(line, mm[1])
			where := l.describe(path)
			if len(path) == 0 {
				where = "the top level"
			}
			msg = fmt.Sprintf("field %q not found in %s", mm[1], where)
			if !ok {
				msg = fmt.Sprintf("field %q not found", mm[1])
			} else {
				if valid := fieldsAt(path); len(valid) > 0 {
					msg += " (valid fields: " + strings.Join(valid, ", ") + ")"
				}
			}
		} else if mm := twiceRe.FindStringSubmatch(msg); mm != nil {
			path, _ := l.findKey(line, mm[1])
			msg = fmt.Sprintf("%s: field %q is set twice", l.describe(path), mm[1])
			if len(path) == 0 {
				msg = fmt.Sprintf("field %q is set twice", mm[1])
			}
		} else if mm := dupKeyRe.FindStringSubmatch(msg); mm != nil {
			key, _ := strconv.Unquote(mm[1])
			path, _ := l.findKey(line, key)
			msg = fmt.Sprintf("%s: key %s is set twice (first at line %s)", l.describe(path), mm[1], mm[2])
		} else if mm := mismatchRe.FindStringSubmatch(msg); mm != nil {
			n, path := l.findValue(line, mm[1], mm[2])
			got := yamlKind(mm[1])
			if n != nil && n.Kind == yaml.ScalarNode {
				v := n.Value
				if len(v) > 40 {
					v = v[:37] + "..."
				}
				got += " " + strconv.Quote(v)
			}
			msg = fmt.Sprintf("want %s, got %s", goKind(mm[3]), got)
			if len(path) > 0 {
				msg = l.describe(path) + ": " + msg
			}
		}
		out = append(out, fmt.Sprintf("%s:%d: %s", l.file, line, oneLine(msg)))
	}
	return errors.New(strings.Join(out, "\n"))
}

// unplacedError places an error the decoder reported without a line: our
// own duration errors, found again by their quoted value.
func (l *locator) unplacedError(e string) string {
	if rest, ok := strings.CutPrefix(e, durationErrPrefix); ok {
		if q, err := strconv.QuotedPrefix(rest); err == nil {
			val, _ := strconv.Unquote(q)
			if n, path := l.findDuration(val); n != nil {
				return fmt.Sprintf("%s:%d: %s: %s", l.file, n.Line, l.describe(path), e)
			}
		}
	}
	return fmt.Sprintf("%s: %s", l.file, e)
}

// validationError formats the validation problems sorted by line.
func (l *locator) validationError(errs []fieldError) error {
	type placed struct {
		line int
		text string
	}
	out := make([]placed, 0, len(errs))
	for _, e := range errs {
		line := l.line(e.path)
		where := l.describe(e.path)
		if where == "" {
			where = "config"
		}
		out = append(out, placed{line, fmt.Sprintf("%s:%d: %s: %s", l.file, line, where, e.msg)})
	}
	slices.SortStableFunc(out, func(a, b placed) int { return a.line - b.line })
	lines := make([]string, len(out))
	for i, p := range out {
		lines[i] = p.text
	}
	return errors.New(strings.Join(lines, "\n"))
}

// doc returns the document's top-level node, following a leading alias.
func (l *locator) doc() *yaml.Node {
	n := l.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	return deref(n)
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// lookup finds key in mapping n, returning the key and value nodes.
func lookup(n *yaml.Node, key string) (k, v *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], deref(n.Content[i+1])
		}
	}
	return nil, nil
}

// line resolves path as far as the tree allows and returns the line of the
// deepest node reached: a field missing from the YAML (a default) is
// reported at its enclosing mapping.
func (l *locator) line(path []any) int {
	n := l.doc()
	if n == nil {
		return 1
	}
	line := max(n.Line, 1)
	for _, e := range path {
		switch e := e.(type) {
		case int:
			if n.Kind != yaml.SequenceNode || e >= len(n.Content) {
				return line
			}
			n = deref(n.Content[e])
			line = n.Line
		case string:
			k, v := lookup(n, e)
			if k == nil {
				return line
			}
			n, line = v, k.Line
		case mapKey:
			k, v := lookup(n, string(e))
			if k == nil {
				return line
			}
			n, line = v, k.Line
		}
	}
	return line
}

// describe renders path for messages, e.g. `host_sets[1] ("web").labels`,
// taking set names from the tree so it also works for decode errors.
func (l *locator) describe(path []any) string {
	var b strings.Builder
	n := l.doc()
	for i, e := range path {
		switch e := e.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", e)
			if n != nil && n.Kind == yaml.SequenceNode && e < len(n.Content) {
				n = deref(n.Content[e])
			} else {
				n = nil
			}
			if i == 1 && path[0] == "host_sets" {
				if _, name := lookup(n, "name"); name != nil && name.Kind == yaml.ScalarNode && name.Value != "" {
					fmt.Fprintf(&b, " (%q)", name.Value)
				}
			}
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e)
			_, n = lookup(n, e)
		case mapKey:
			// Quoted by the message itself.
		}
	}
	return b.String()
}

// walk visits every node in value position (the document, mapping values,
// sequence items) with its path, in document order, without following
// aliases. fn returns false to stop.
func walk(n *yaml.Node, path []any, fn func(key, n *yaml.Node, path []any) bool) bool {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := at(path, k.Value)
			if !fn(k, v, p) || !walk(v, p, fn) {
				return false
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := at(path, i)
			if !fn(nil, c, p) || !walk(c, p, fn) {
				return false
			}
		}
	}
	return true
}

// findKey returns the path of the mapping holding key at line, and whether
// it was found.
func (l *locator) findKey(line int, key string) ([]any, bool) {
	doc := l.doc()
	if doc == nil {
		return nil, false
	}
	check := func(m *yaml.Node) bool {
		if m.Kind != yaml.MappingNode {
			return false
		}
		for i := 0; i < len(m.Content); i += 2 {
			if k := m.Content[i]; k.Line == line && k.Value == key {
				return true
			}
		}
		return false
	}
	if check(doc) {
		return nil, true
	}
	var found []any
	ok := false
	walk(doc, nil, func(_, n *yaml.Node, path []any) bool {
		if check(n) {
			found, ok = path, true
			return false
		}
		return true
	})
	return found, ok
}

// findValue returns the first node in value position at line that fits a
// decoder message about a value of the given tag (and, for scalars, the
// value as the decoder quoted it, truncated with "..."), and its path.
func (l *locator) findValue(line int, tag, quoted string) (*yaml.Node, []any) {
	doc := l.doc()
	if doc == nil {
		return nil, nil
	}
	fits := func(n *yaml.Node) bool {
		if n.Line != line {
			return false
		}
		switch tag {
		case "!!seq":
			return n.Kind == yaml.SequenceNode
		case "!!map":
			return n.Kind == yaml.MappingNode
		}
		if n.Kind != yaml.ScalarNode {
			return false
		}
		if prefix, cut := strings.CutSuffix(quoted, "..."); cut {
			return strings.HasPrefix(n.Value, prefix)
		}
		return quoted == "" || n.Value == quoted
	}
	var (
		node  *yaml.Node
		found []any
	)
	walk(doc, nil, func(_, n *yaml.Node, path []any) bool {
		if fits(n) {
			node, found = n, path
			return false
		}
		return true
	})
	if node == nil && fits(doc) {
		return doc, nil
	}
	return node, found
}

// findDuration returns the first duration-valued scalar equal to val.
func (l *locator) findDuration(val string) (*yaml.Node, []any) {
	doc := l.doc()
	if doc == nil {
		return nil, nil
	}
	var (
		node  *yaml.Node
		found []any
	)
	walk(doc, nil, func(k, n *yaml.Node, path []any) bool {
		if k == nil || n.Kind != yaml.ScalarNode || n.Value != val || l.reported[n] {
			return true
		}
		switch k.Value {
		case "interval", "timeout", "packet_interval":
			if l.reported == nil {
				l.reported = map[*yaml.Node]bool{}
			}
			l.reported[n] = true
			node, found = n, path
			return false
		}
		return true
	})
	return node, found
}

// fieldsAt returns the YAML field names valid in the mapping at path, found
// by walking the Config type.
func fieldsAt(path []any) []string {
	t := reflect.TypeFor[Config]()
	for _, e := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch e := e.(type) {
		case int:
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
		case string:
			if t.Kind() != reflect.Struct {
				return nil
			}
			f, ok := fieldByTag(t, e)
			if !ok {
				return nil
			}
			t = f.Type
		default:
			return nil
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if tag := yamlTag(t.Field(i)); tag != "" {
			names = append(names, tag)
		}
	}
	return names
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if yamlTag(t.Field(i)) == name {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

func yamlTag(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "-" || !f.IsExported() {
		return ""
	}
	return tag
}

// yamlKind names a YAML tag for messages.
func yamlKind(tag string) string {
	switch tag {
	case "!!str":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!null":
		return "null"
	case "!!timestamp":
		return "a timestamp"
	case "!!binary":
		return "binary data"
	}
	return tag
}

// goKind names a Go type from a decoder message for users.
func goKind(t string) string {
	switch t {
	case "int", "int64", "int32":
		return "an integer"
	case "float64":
		return "a number"
	case "bool":
		return "a boolean (true or false)"
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	case "map[string]string":
		return "a mapping of strings to strings"
	}
	if strings.HasPrefix(t, "[]") {
		return "a list"
	}
	if strings.HasPrefix(strings.TrimPrefix(t, "*"), "config.") {
		return "a mapping"
	}
	return t
}
