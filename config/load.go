package config

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // for the built-in default configuration
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// defaultYAML is the configuration used when none is given.
//
//go:embed default.yml
var defaultYAML []byte

// ReadFile reads the configuration file at filename for a start or a
// check: a regular file, or a pipe such as the one
// `--config.file=<(generate-config)` passes, which must deliver the whole
// file, up to end of file, within 10 s. Anything else (a device
// such as /dev/zero, a directory, a socket) is refused without being read,
// and so is a file larger than MaxConfigSize, without reading all of it.
// Neither opening nor reading ever waits without bound: opening a FIFO
// without a writer returns at once, and one that no process writes to
// within 10 s is an error.
func ReadFile(filename string) ([]byte, error) { return readConfig(filename, true) }

// ReadRegularFile is ReadFile for a reload: only a regular file will do. A
// pipe cannot be read a second time, and the reloader must never wait on
// one, so a config file that became a FIFO is refused at once.
func ReadRegularFile(filename string) ([]byte, error) { return readConfig(filename, false) }

// pipeReadTimeout bounds reading a config file that is a pipe (a variable
// for the tests).
var pipeReadTimeout = 10 * time.Second

func readConfig(filename string, pipes bool) ([]byte, error) {
	allowed := func(m fs.FileMode) error {
		switch {
		case m.IsRegular():
			return nil
		case m&fs.ModeNamedPipe != 0 && pipes:
			return nil
		case m&fs.ModeNamedPipe != 0:
			return fmt.Errorf("read config %s: a pipe, not a regular file: a reload reads a regular file only", filename)
		default:
			return fmt.Errorf("read config %s: %s, not a regular file", filename, fileKind(m))
		}
	}
	// Stat first, so that a device is never opened: opening some has
	// effects of its own.
	fi, err := os.Stat(filename)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := allowed(fi.Mode()); err != nil {
		return nil, err
	}
	// The path may have changed since the stat: the open must not block
	// either, and the opened file's own mode decides.
	f, err := os.OpenFile(filename, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to flush
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("read config %s: %w", filename, err)
	}
	if err := allowed(fi.Mode()); err != nil {
		return nil, err
	}
	pipe := fi.Mode()&fs.ModeNamedPipe != 0
	var data []byte
	if pipe {
		data, err = readPipe(f, time.Now().Add(pipeReadTimeout))
	} else {
		data, err = io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("read config %s: the pipe did not reach its end within %s", filename, pipeReadTimeout)
	case err != nil:
		return nil, fmt.Errorf("read config %s: %w", filename, err)
	case len(data) > MaxConfigSize:
		return nil, fmt.Errorf("%s: config file is larger than %d bytes", filename, MaxConfigSize)
	}
	return data, nil
}

// readPipe reads f, a FIFO opened without blocking, to its end, up to one
// byte over MaxConfigSize, by deadline. A FIFO reads as at its end while no
// process has it open for writing, which at first may only mean that the
// writer has not opened it yet: until some data came, an end is retried.
func readPipe(f *os.File, deadline time.Time) ([]byte, error) {
	if err := f.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	var data []byte
	buf := make([]byte, 64<<10)
	for len(data) <= MaxConfigSize {
		n, err := f.Read(buf[:min(len(buf), MaxConfigSize+1-len(data))])
		data = append(data, buf[:n]...)
		switch {
		case errors.Is(err, io.EOF) && len(data) > 0:
			return data, nil
		case errors.Is(err, io.EOF):
			if time.Now().After(deadline) {
				return nil, errors.New("the pipe gave no data (no process is writing to it)")
			}
			time.Sleep(20 * time.Millisecond)
		case errors.Is(err, os.ErrDeadlineExceeded) && len(data) == 0:
			return nil, errors.New("the pipe gave no data (no process is writing to it)")
		case err != nil:
			return nil, err
		}
	}
	return data, nil
}

// fileKind names the kind of a file that is not regular.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	default:
		return "a file of mode " + m.Type().String()
	}
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
// directory. A returned error lists the first 20 problems by line, one per
// line as "file:line: path: message", and then how many more there are.
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

	// The input is parsed once, into a node tree: it is what the schema
	// check inspects, what the locator maps errors back to lines with, and
	// what the config is decoded from. yaml.v3 parses at a few MB/s, so a
	// second parse by a decoder over the bytes would double the cost of a
	// large file.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlSyntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlSyntaxError(name, err)
		}
		return nil, fmt.Errorf("%s:%d: more than one YAML document; a config file holds exactly one", name, extra.Line)
	}
	loc := &locator{file: name, root: &root}
	if n := tooDeep(&root, 0); n != nil {
		return nil, fmt.Errorf("%s:%d: YAML nested deeper than %d levels", name, n.Line, maxNestingDepth)
	}
	// Unknown and repeated keys are found on the tree, in linear time.
	// Node.Decode ignores KnownFields, so this check is what keeps decoding
	// strict; FuzzParse holds it to agree with a KnownFields decoder. It
	// also makes sure every mapping is small before yaml.v3, which compares
	// a mapping's keys pairwise, decodes it.
	if errs := checkSchema(&root); len(errs) > 0 {
		return nil, loc.problems(errs)
	}

	cfg := &Config{Global: defaultGlobal()}
	if root.Kind != 0 {
		if err := root.Decode(cfg); err != nil {
			return nil, loc.decodeError(err)
		}
	}

	cfg.fileKeyLines = sshFileKeyLines(&root, cfg)
	cfg.applyDefaults(baseDir)
	if errs := cfg.validate(); len(errs) > 0 {
		return nil, loc.problems(errs)
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
	for _, l := range []*Limit{&g.Limits.ICMP, &g.Limits.TCP, &g.Limits.SSH, &g.Limits.Bastion} {
		if l.Rate > 0 && l.Burst == 0 {
			l.Burst = max(1, int(math.Min(l.Rate, math.MaxInt32)))
		}
	}
	for i := range c.HostSets {
		hs := &c.HostSets[i]
		if hs.Interval == 0 {
			hs.Interval = g.Interval
		}
		if hs.RetryInterval == 0 {
			hs.RetryInterval = hs.Interval
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
		hs.applyDiscoveryDefaults(baseDir)
		p := &hs.Probes
		if p.ICMP != nil && p.ICMP.Timeout == 0 {
			// ICMP has its own shorter default: time for the echo
			// requests to go out plus DefaultICMPTimeout for the last
			// reply, never more than the set's timeout.
			t := Duration(DefaultICMPTimeout)
			if p.ICMP.Count > 1 && p.ICMP.PacketInterval > 0 {
				t += Duration(p.ICMP.Count-1) * p.ICMP.PacketInterval
			}
			p.ICMP.Timeout = min(t, hs.Timeout)
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
			for j := range s.KeyboardInteractive {
				s.KeyboardInteractive[j].AnswerFile = resolvePath(baseDir, s.KeyboardInteractive[j].AnswerFile)
			}
			for j := range s.ProxyJump {
				j := &s.ProxyJump[j]
				for _, f := range []*string{&j.PrivateKeyFile, &j.PassphraseFile, &j.CertificateFile, &j.PasswordFile, &j.KnownHostsFile} {
					*f = resolvePath(baseDir, *f)
				}
				for k := range j.KeyboardInteractive {
					j.KeyboardInteractive[k].AnswerFile = resolvePath(baseDir, j.KeyboardInteractive[k].AnswerFile)
				}
				inheritHop(j, s)
			}
		}
	}
}

// inheritHop fills what a proxy_jump entry leaves out from its ssh block:
// the user, every authentication method when it sets none, the host key
// file (with insecure_skip_host_key_verification) when it sets neither, and
// the host key policy.
func inheritHop(j *ProxyJump, s *SSHProbe) {
	if j.User == "" {
		j.User = s.User
	}
	if !j.hasAuth() && j.PassphraseFile == "" && j.CertificateFile == "" {
		j.PrivateKeyFile, j.PassphraseFile, j.CertificateFile = s.PrivateKeyFile, s.PassphraseFile, s.CertificateFile
		j.PasswordFile, j.Agent, j.KeyboardInteractive = s.PasswordFile, s.Agent, s.KeyboardInteractive
	}
	if j.KnownHostsFile == "" && !j.InsecureSkipHostKeyVerification {
		j.KnownHostsFile, j.InsecureSkipHostKeyVerification = s.KnownHostsFile, s.InsecureSkipHostKeyVerification
	}
	if j.HostKeyPolicy == "" {
		j.HostKeyPolicy = s.HostKeyPolicy
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

// sshFileKeys are the ssh keys that name a file, and algorithms and
// proxy_jump, which preflight's warnings and the file checks point at.
var sshFileKeys = [...]string{"private_key_file", "passphrase_file", "certificate_file", "password_file", "known_hosts_file", "keyboard_interactive", "algorithms", "proxy_jump"}

// sshFileKeyLines finds the line of every file-naming key in each host
// set's ssh block, and of its file_sd and http_sd keys, so that a file
// found unusable after parsing (missing, a FIFO, too large) is reported at
// the line that names it.
func sshFileKeyLines(root *yaml.Node, cfg *Config) map[setKey]int {
	lines := map[setKey]int{}
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	sets := mappingValue(doc, "host_sets")
	if sets == nil || sets.Kind != yaml.SequenceNode {
		return lines
	}
	for i, item := range sets.Content {
		if i >= len(cfg.HostSets) {
			break
		}
		// The discovery keys, so that a source's credential, TLS or
		// header file that cannot be read is reported at its source.
		for _, key := range [...]string{"file_sd", "http_sd"} {
			if item.Kind != yaml.MappingNode {
				break
			}
			for j := 0; j+1 < len(item.Content); j += 2 {
				if item.Content[j].Value == key {
					lines[setKey{cfg.HostSets[i].Name, key}] = item.Content[j].Line
				}
			}
		}
		ssh := mappingValue(mappingValue(item, "probes"), "ssh")
		if ssh == nil || ssh.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(ssh.Content); j += 2 {
			k := ssh.Content[j]
			for _, want := range sshFileKeys {
				if k.Value == want {
					lines[setKey{cfg.HostSets[i].Name, want}] = k.Line
				}
			}
		}
	}
	return lines
}

// mappingValue returns the value of key in mapping node n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
