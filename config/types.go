package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

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
	// MaxTargetsCeiling is the largest value max_targets may take, so that
	// a short file cannot demand unbounded work or memory.
	MaxTargetsCeiling = 1 << 22
	// MaxLabelsPerSet is the most static labels one host set may have.
	MaxLabelsPerSet = 64
	// MaxCommandsPerProbe is the most commands one SSH probe may run.
	MaxCommandsPerProbe = 64
	// maxNestingDepth bounds the depth of the YAML tree. The schema needs 8
	// levels; anything far deeper is a mistake or an attack.
	maxNestingDepth = 32
)

// Ranges of the numeric fields, enforced by Load and Parse and documented in
// config.example.yml. Every duration must be positive: a key left out takes
// its default, an explicit zero is an error. Every timeout lies between
// MinTimeout and the interval (or, for a command, the probe timeout) it
// applies to.
const (
	// MinInterval and MaxInterval bound global.interval and a set's
	// interval.
	MinInterval = time.Second
	MaxInterval = 24 * time.Hour
	// MinTimeout is the shortest timeout of any kind.
	MinTimeout = time.Millisecond
	// MinPacketInterval and MaxPacketInterval bound icmp.packet_interval.
	MinPacketInterval = time.Millisecond
	MaxPacketInterval = time.Minute
	// MaxConcurrency bounds global.concurrency and each limits.*.concurrency
	// (at least 1).
	MaxConcurrency = 1 << 20
	// MaxRate bounds limits.*.rate, in probe starts per second (at least 0,
	// which means unlimited).
	MaxRate = 1e6
	// MaxBurst bounds limits.*.burst (at least 0, which means derived from
	// the rate).
	MaxBurst = 1 << 20
	// MaxICMPSize bounds icmp.size, in bytes (at least 0): the largest
	// payload that fits an IPv4 packet with room to spare.
	MaxICMPSize = 65500
	// MaxICMPCount is the largest icmp.count (at least 1): one round's
	// sequence numbers must stay unique within 16 bits.
	MaxICMPCount = 65535
	// MaxOutputBytesCeiling bounds ssh.max_output_bytes (at least 1). The
	// probe reads one byte past the limit to detect overflow, so the limit
	// must leave room for that.
	MaxOutputBytesCeiling = 1 << 30
	// MaxPort is the largest port; ports start at 1.
	MaxPort = 65535
	// MaxTCPPorts is the most ports one tcp probe may list in ports.
	MaxTCPPorts = 64
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
	// DefaultMaxTargets is global.max_targets's default.
	DefaultMaxTargets = 1_000_000
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
	// DefaultICMPPacketInterval is the ICMP probe's default time between
	// echo requests.
	DefaultICMPPacketInterval = time.Second
	// DefaultICMPTimeout is how long an ICMP round waits for the reply to
	// its last echo request when neither icmp.timeout nor a set or global
	// timeout is given: a live host answers within milliseconds, and a dead
	// one should not hold --once or a slot of the pool for the global 10s.
	// The round's default timeout is this plus (count - 1) *
	// packet_interval.
	DefaultICMPTimeout = 2 * time.Second
	// DefaultICMPSize is the ICMP probe's default payload size in bytes.
	DefaultICMPSize = 56
	// DefaultSSHPort is the SSH probe's default port.
	DefaultSSHPort = 22
	// DefaultMaxOutputBytes is the SSH probe's default limit on one
	// command's stdout.
	DefaultMaxOutputBytes = 1 << 20
	// DefaultDNSMinTTL and DefaultDNSMaxTTL are global.dns.min_ttl's and
	// max_ttl's defaults: the bounds a record's TTL is clamped to.
	DefaultDNSMinTTL = time.Second
	DefaultDNSMaxTTL = 5 * time.Minute
	// DefaultDNSNegativeTTL is global.dns.negative_ttl's default.
	DefaultDNSNegativeTTL = 30 * time.Second
	// DefaultDNSMaxStale is global.dns.max_stale's default.
	DefaultDNSMaxStale = 5 * time.Minute
	// DefaultPreferredIPProtocol is a host set's preferred_ip_protocol
	// default. blackbox_exporter prefers ip6; we keep IPv4, what the
	// exporter always probed, so upgrading changes no probed address.
	DefaultPreferredIPProtocol = IP4
)

// Address families a host set may ask for in ip_protocol and
// preferred_ip_protocol.
const (
	IP4 = "ip4"
	IP6 = "ip6"
)

// Probe type names, used as the `probe` label and as keys of the per-type pool
// limits.
const (
	ProbeICMP = "icmp"
	ProbeTCP  = "tcp"
	ProbeSSH  = "ssh"
)

// ProbeTypes returns every probe type in a stable order (icmp, tcp, ssh).
// Each call returns a new slice, so callers may keep or change it.
func ProbeTypes() []string { return []string{ProbeICMP, ProbeTCP, ProbeSSH} }

// Config is the whole configuration file.
type Config struct {
	Global   Global    `yaml:"global"`
	HostSets []HostSet `yaml:"host_sets"`

	// Hash is the hex SHA-256 of the bytes the config was parsed from. It is
	// set by Load/Parse and never read from YAML.
	Hash string `yaml:"-"`
	// Filename is the file the config came from ("<embedded>" for the
	// built-in default).
	Filename string `yaml:"-"`

	// fileKeyLines holds the line of every file-naming key of each set's
	// ssh block and of its discovery keys, for errors about those files
	// found after parsing.
	fileKeyLines map[setKey]int
}

// setKey names one key of one host set's ssh block.
type setKey struct{ set, key string }

// Where returns "file:line" of key (e.g. "private_key_file") in the ssh block
// of the host set named set, or of its "file_sd" or "http_sd" key, or just
// the file name when the line is not known (the key is absent, or the
// config did not come from a file).
func (c *Config) Where(set, key string) string {
	name := c.Filename
	if name == "" {
		name = "<input>"
	}
	if line := c.fileKeyLines[setKey{set, key}]; line > 0 {
		return fmt.Sprintf("%s:%d", name, line)
	}
	return name
}

// Global holds the defaults and the pool limits.
type Global struct {
	// Interval is the default time between two runs of the same probe.
	Interval Duration `yaml:"interval"`
	// Timeout is the default per-probe timeout.
	Timeout Duration `yaml:"timeout"`
	// Concurrency bounds the probes in flight over all types.
	Concurrency int `yaml:"concurrency"`
	// MaxTargets caps the targets (host and probe pairs) of all sets
	// together.
	MaxTargets int `yaml:"max_targets"`
	// MaxTargetsPerSet caps the expansion of one host set.
	MaxTargetsPerSet int `yaml:"max_targets_per_set"`
	// Limits holds per probe type concurrency and start rate.
	Limits ProbeLimits `yaml:"limits"`
	// DNS tunes the resolver every prober shares.
	DNS DNS `yaml:"dns"`
}

// DNS tunes how long the resolver keeps answers.
type DNS struct {
	// MinTTL and MaxTTL clamp the TTL of every answer from a nameserver.
	MinTTL Duration `yaml:"min_ttl"`
	MaxTTL Duration `yaml:"max_ttl"`
	// NegativeTTL is how long a name or record type that does not exist
	// (NXDOMAIN, NODATA) is remembered as missing.
	NegativeTTL Duration `yaml:"negative_ttl"`
	// MaxStale is how long past its TTL an answer is still used while the
	// nameservers fail.
	MaxStale Duration `yaml:"max_stale"`
}

// ProbeLimits holds one Limit per probe type.
type ProbeLimits struct {
	ICMP Limit `yaml:"icmp"`
	TCP  Limit `yaml:"tcp"`
	SSH  Limit `yaml:"ssh"`
	// Bastion bounds, per proxy_jump chain, the channels in flight and the
	// channel opens per second; it is not a probe type.
	Bastion Limit `yaml:"bastion"`
}

// For returns the limit of the named probe type.
func (l ProbeLimits) For(probe string) Limit {
	switch probe {
	case ProbeICMP:
		return l.ICMP
	case ProbeTCP:
		return l.TCP
	default:
		return l.SSH
	}
}

// Limit bounds one probe type: at most Concurrency in flight and at most Rate
// starts per second (token bucket with Burst). A zero Rate means unlimited.
type Limit struct {
	Concurrency int     `yaml:"concurrency"`
	Rate        float64 `yaml:"rate"`
	Burst       int     `yaml:"burst"`
}

// HostSet is a named group of hosts probed the same way.
type HostSet struct {
	Name     string   `yaml:"name"`
	Hosts    []string `yaml:"hosts"`
	Interval Duration `yaml:"interval"`
	// RetryInterval is the time from a failed probe to the next run of the
	// same probe of the same host, until one succeeds; it defaults to
	// Interval, which keeps failing targets on their regular slots.
	RetryInterval Duration `yaml:"retry_interval"`
	Timeout       Duration `yaml:"timeout"`
	// SourceAddress is the local IP address the set's probes leave from,
	// empty for the kernel's choice. It must be an address of this machine.
	SourceAddress string            `yaml:"source_address"`
	Labels        map[string]string `yaml:"labels"`
	Probes        Probes            `yaml:"probes"`
	// IPProtocol, when set (IP4 or IP6), is the only address family the
	// set's names are resolved to.
	IPProtocol string `yaml:"ip_protocol"`
	// PreferredIPProtocol is the family tried first when IPProtocol is
	// not set; empty means DefaultPreferredIPProtocol.
	PreferredIPProtocol string `yaml:"preferred_ip_protocol"`
	// IPProtocolFallback permits the other family when a name has no
	// address of the preferred one; nil means true.
	IPProtocolFallback *bool `yaml:"ip_protocol_fallback"`
	// FileSD lists glob patterns of Prometheus file_sd files (JSON or
	// YAML target groups) whose targets join Hosts.
	FileSD []string `yaml:"file_sd"`
	// FileSDRefreshInterval is how often the FileSD files are read again
	// besides the reads their changes trigger.
	FileSDRefreshInterval Duration `yaml:"file_sd_refresh_interval"`
	// HTTPSD lists Prometheus http_sd endpoints whose targets join Hosts.
	HTTPSD []HTTPSD `yaml:"http_sd"`
	// RelabelConfigs map the labels of every discovered target onto the
	// host and the set's Labels, Prometheus relabel_configs style.
	RelabelConfigs []RelabelConfig `yaml:"relabel_configs"`
}

// IPPolicy returns the address family rule of the set's names. A set with
// a source address resolves its names to that address's family only: a
// probe cannot leave from an IPv4 address to an IPv6 one or the reverse.
func (hs *HostSet) IPPolicy() IPPolicy {
	if fam := hs.sourceFamily(); fam != "" {
		return IPPolicy{Preferred: fam}
	}
	if hs.IPProtocol != "" {
		return IPPolicy{Preferred: hs.IPProtocol}
	}
	p := IPPolicy{Preferred: hs.PreferredIPProtocol, Fallback: true}
	if p.Preferred == "" {
		p.Preferred = DefaultPreferredIPProtocol
	}
	if hs.IPProtocolFallback != nil {
		p.Fallback = *hs.IPProtocolFallback
	}
	return p
}

// sourceFamily returns IP4 or IP6 for the family of the set's source
// address, or "" when it has none (or one that does not parse).
func (hs *HostSet) sourceFamily() string {
	a, err := netip.ParseAddr(hs.SourceAddress)
	switch {
	case err != nil:
		return ""
	case a.Unmap().Is4():
		return IP4
	default:
		return IP6
	}
}

// IPPolicy says which address of a name a target probes.
type IPPolicy struct {
	// Preferred is IP4 or IP6: the family looked up first.
	Preferred string
	// Fallback permits the other family when the name has no address of
	// the preferred one.
	Fallback bool
}

// Probes lists the probes enabled for a set; a nil pointer means disabled.
type Probes struct {
	ICMP *ICMPProbe `yaml:"icmp"`
	TCP  *TCPProbe  `yaml:"tcp"`
	SSH  *SSHProbe  `yaml:"ssh"`
}

// ICMPProbe configures an ICMP echo round.
type ICMPProbe struct {
	// Count is the number of echo requests per probe.
	Count int `yaml:"count"`
	// PacketInterval is the time between two echo requests of one probe.
	PacketInterval Duration `yaml:"packet_interval"`
	// Size is the ICMP payload size in bytes.
	Size int `yaml:"size"`
	// Timeout overrides the set timeout for this probe.
	Timeout Duration `yaml:"timeout"`
}

// TCPProbe configures a TCP connect probe.
type TCPProbe struct {
	// Port is used for hosts that carry no port of their own; it is the
	// one-port shorthand of Ports.
	Port int `yaml:"port"`
	// Ports are probed one by one, one target per port, for hosts that
	// carry no port of their own.
	Ports []int `yaml:"ports"`
	// Timeout overrides the set timeout for this probe.
	Timeout Duration `yaml:"timeout"`
}

// PortList returns the ports of hosts without a port of their own: Ports,
// else Port alone, else none. The slice must not be modified.
func (p *TCPProbe) PortList() []int {
	switch {
	case len(p.Ports) > 0:
		return p.Ports
	case p.Port != 0:
		return []int{p.Port}
	}
	return nil
}

// SSHProbe configures an SSH login and the commands it runs.
type SSHProbe struct {
	Port                            int    `yaml:"port"`
	User                            string `yaml:"user"`
	PrivateKeyFile                  string `yaml:"private_key_file"`
	PassphraseFile                  string `yaml:"passphrase_file"`
	CertificateFile                 string `yaml:"certificate_file"`
	PasswordFile                    string `yaml:"password_file"`
	Agent                           bool   `yaml:"agent"`
	KnownHostsFile                  string `yaml:"known_hosts_file"`
	InsecureSkipHostKeyVerification bool   `yaml:"insecure_skip_host_key_verification"`
	// HostKeyPolicy is HostKeyPolicyStrict (known_hosts_file must list the
	// host) or HostKeyPolicyTOFU (an unlisted host's first key is appended
	// to known_hosts_file and enforced from then on).
	HostKeyPolicy string `yaml:"host_key_policy"`
	// ProxyJump lists the jump hosts, in order, the targets are reached
	// through; empty connects directly.
	ProxyJump      []ProxyJump `yaml:"proxy_jump"`
	Commands       []Command   `yaml:"commands"`
	MaxOutputBytes int64       `yaml:"max_output_bytes"`
	Timeout        Duration    `yaml:"timeout"`
	// ReuseConnections keeps one authenticated connection per host and opens
	// a new session on it per poll.
	ReuseConnections bool `yaml:"reuse_connections"`
	// RequireExitStatus makes an exec command whose channel closes without
	// an exit status fail with reason session; by default such a command
	// (the way many network devices end one) succeeds with exit status -1.
	RequireExitStatus bool `yaml:"require_exit_status"`
	// Mode is SSHModeExec (one exec session per command) or SSHModeShell
	// (one PTY shell per probe, commands typed at the prompt).
	Mode string `yaml:"mode"`
	// Shell configures mode: shell.
	Shell Shell `yaml:"shell"`
	// KeyboardInteractive answers keyboard-interactive prompts that
	// password_file does not.
	KeyboardInteractive []KeyboardInteractiveAnswer `yaml:"keyboard_interactive"`
	// Algorithms overrides or extends the algorithms offered in the
	// handshake.
	Algorithms Algorithms `yaml:"algorithms"`
	// KeepOutputBytes is how many bytes of each command's stdout the probe
	// keeps in its result, for --once to print; 0, the daemon's value,
	// keeps none. It is never read from YAML.
	KeepOutputBytes int64 `yaml:"-"`
}

// ProxyJump is one jump host (bastion) of an ssh block's proxy_jump chain.
// Its authentication and host key fields mean what they mean in the ssh
// block. A hop that sets no authentication method uses the ssh block's
// (private_key_file, passphrase_file, certificate_file, password_file,
// keyboard_interactive, agent); user, known_hosts_file with
// insecure_skip_host_key_verification, and host_key_policy default to the
// ssh block's too. Algorithms are not inherited: a bastion is rarely as old
// as the devices behind it.
type ProxyJump struct {
	// Host is host or host:port (default port 22), [v6]:port for IPv6.
	Host                            string                      `yaml:"host"`
	User                            string                      `yaml:"user"`
	PrivateKeyFile                  string                      `yaml:"private_key_file"`
	PassphraseFile                  string                      `yaml:"passphrase_file"`
	CertificateFile                 string                      `yaml:"certificate_file"`
	PasswordFile                    string                      `yaml:"password_file"`
	Agent                           bool                        `yaml:"agent"`
	KeyboardInteractive             []KeyboardInteractiveAnswer `yaml:"keyboard_interactive"`
	KnownHostsFile                  string                      `yaml:"known_hosts_file"`
	InsecureSkipHostKeyVerification bool                        `yaml:"insecure_skip_host_key_verification"`
	HostKeyPolicy                   string                      `yaml:"host_key_policy"`
	Algorithms                      Algorithms                  `yaml:"algorithms"`
	// Connections is how many authenticated connections through the whole
	// chain are kept; the targets' channels are spread over them. Only the
	// first entry may set it; 0 means DefaultBastionConnections.
	Connections int `yaml:"connections"`
}

// Auth returns the hop's login settings in the form of an ssh block, for
// the code that authenticates both.
func (j *ProxyJump) Auth() *SSHProbe {
	return &SSHProbe{
		User: j.User, PrivateKeyFile: j.PrivateKeyFile, PassphraseFile: j.PassphraseFile,
		CertificateFile: j.CertificateFile, PasswordFile: j.PasswordFile, Agent: j.Agent,
		KeyboardInteractive: j.KeyboardInteractive, KnownHostsFile: j.KnownHostsFile,
		InsecureSkipHostKeyVerification: j.InsecureSkipHostKeyVerification,
		HostKeyPolicy:                   j.HostKeyPolicy, Algorithms: j.Algorithms,
	}
}

// HostPort returns Host with the port, 22 when it names none.
func (j *ProxyJump) HostPort() string {
	if _, _, err := net.SplitHostPort(j.Host); err == nil {
		return j.Host
	}
	return net.JoinHostPort(strings.Trim(j.Host, "[]"), strconv.Itoa(DefaultSSHPort))
}

// hasAuth reports whether the hop sets an authentication method itself.
func (j *ProxyJump) hasAuth() bool {
	return j.PrivateKeyFile != "" || j.PasswordFile != "" || j.Agent || len(j.KeyboardInteractive) > 0
}

// Host key policies.
const (
	HostKeyPolicyStrict = "strict"
	HostKeyPolicyTOFU   = "tofu"
)

// Bastion limits and defaults.
const (
	// DefaultBastionConnections is proxy_jump's connections default.
	DefaultBastionConnections = 1
	// MaxBastionConnections bounds proxy_jump's connections.
	MaxBastionConnections = 64
	// MaxProxyJumpHops bounds the entries of one proxy_jump chain.
	MaxProxyJumpHops = 8
	// DefaultBastionConcurrency is global.limits.bastion.concurrency's
	// default: channels in flight per bastion.
	DefaultBastionConcurrency = 128
)

// SSH probe modes.
const (
	SSHModeExec  = "exec"
	SSHModeShell = "shell"
)

// Defaults of the shell block.
const (
	// DefaultShellTerm is the terminal type requested with the PTY.
	DefaultShellTerm = "vt100"
	// DefaultShellWidth and DefaultShellHeight are the PTY size in
	// characters; a height of 0 asks devices that honour it not to page.
	DefaultShellWidth  = 511
	DefaultShellHeight = 0
	// DefaultShellPrompt matches a last line such as "router#",
	// "switch>", "R1(config)#", "user@host:~$" or "[admin@fw] >".
	DefaultShellPrompt = `^[\w.@:~/()\[\] -]*[#>$%] ?$`
	// DefaultShellPager matches the pager marker of IOS-class devices,
	// "--More--" and " -- More -- ".
	DefaultShellPager = `-- ?More ?--`
	// DefaultShellExit is the line sent to leave the shell.
	DefaultShellExit = "exit"
	// MaxShellLines bounds setup lines and ignore_lines patterns.
	MaxShellLines = 64
	// MaxKeyboardInteractiveAnswers bounds keyboard_interactive entries.
	MaxKeyboardInteractiveAnswers = 16
)

// Shell configures the interactive PTY session of mode: shell.
type Shell struct {
	// Term, Width and Height are sent in the pty-req.
	Term   string `yaml:"term"`
	Width  int    `yaml:"width"`
	Height int    `yaml:"height"`
	// Prompt is a regular expression matched against the last line of
	// output (CR and trailing spaces kept off); a match means the device
	// waits for input.
	Prompt string `yaml:"prompt"`
	// Setup lines are sent once after the first prompt, each waiting for
	// the next prompt (e.g. "terminal length 0").
	Setup []string `yaml:"setup"`
	// Exit is sent after the last command; empty sends nothing.
	Exit string `yaml:"exit"`
	// Pager is a regular expression; when output ends in a match the
	// prober sends a space to get the next page.
	Pager string `yaml:"pager"`
}

// KeyboardInteractiveAnswer answers keyboard-interactive prompts matching
// Prompt with the content of AnswerFile.
type KeyboardInteractiveAnswer struct {
	Prompt     string `yaml:"prompt"`
	AnswerFile string `yaml:"answer_file"`
}

// Algorithms lists SSH algorithm names, OpenSSH style: a list replaces the
// defaults; a list whose entries all start with "+" appends them to the
// defaults. Empty means the defaults.
type Algorithms struct {
	KEX     []string `yaml:"kex"`
	Ciphers []string `yaml:"ciphers"`
	MACs    []string `yaml:"macs"`
	HostKey []string `yaml:"host_key"`
}

// Command is one command run by the SSH probe, in its own session (exec
// mode) or typed into the probe's shell (shell mode).
type Command struct {
	Name    string   `yaml:"name"`
	Run     string   `yaml:"run"`
	Timeout Duration `yaml:"timeout"`
	// IgnoreLines are regular expressions; output lines matching any of
	// them are left out of the hash and the byte count.
	IgnoreLines []string `yaml:"ignore_lines"`
	// OutputLabel exports the first output line as the value label of
	// fleet_ssh_command_output_info.
	OutputLabel bool `yaml:"output_label"`
}

// Duration is a time.Duration that reads Prometheus-style strings ("90s",
// "5m", "1h30m", "1d") from YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func defaultGlobal() Global {
	return Global{
		Interval:         Duration(DefaultInterval),
		Timeout:          0, // DefaultTimeout, clamped to the interval by applyDefaults
		Concurrency:      DefaultConcurrency,
		MaxTargets:       DefaultMaxTargets,
		MaxTargetsPerSet: DefaultMaxTargetsPerSet,
		Limits: ProbeLimits{
			ICMP:    Limit{Concurrency: DefaultICMPConcurrency},
			TCP:     Limit{Concurrency: DefaultTCPConcurrency},
			SSH:     Limit{Concurrency: DefaultSSHConcurrency},
			Bastion: Limit{Concurrency: DefaultBastionConcurrency},
		},
		DNS: DNS{
			MinTTL:      Duration(DefaultDNSMinTTL),
			MaxTTL:      Duration(DefaultDNSMaxTTL),
			NegativeTTL: Duration(DefaultDNSNegativeTTL),
			MaxStale:    Duration(DefaultDNSMaxStale),
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
	return SSHProbe{Port: DefaultSSHPort, MaxOutputBytes: DefaultMaxOutputBytes, Mode: SSHModeExec, Shell: defaultShell(), HostKeyPolicy: HostKeyPolicyStrict}
}

func defaultShell() Shell {
	return Shell{
		Term: DefaultShellTerm, Width: DefaultShellWidth, Height: DefaultShellHeight,
		Prompt: DefaultShellPrompt, Pager: DefaultShellPager, Exit: DefaultShellExit,
	}
}

// UnmarshalYAML applies the shell defaults, then decodes strictly.
func (s *Shell) UnmarshalYAML(unmarshal func(any) error) error {
	*s = defaultShell()
	type plain Shell
	return unmarshal((*plain)(s))
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

// durationErrPrefix starts the decode error of a bad duration; the locator
// finds the offending node by the line and the quoted value that follow.
const durationErrPrefix = "invalid duration "

// durationErrFormat words a bad duration, given its text.
const durationErrFormat = durationErrPrefix + `%q: want a number with a unit (ms, s, m, h, d, w, y), e.g. "30s", "5m", "1h30m"`

// UnmarshalYAML reads a Prometheus-style duration such as "90s", "5m",
// "1h30m" or "1d". It takes the node, unlike the struct types' hooks, for
// the line its error reports; a scalar has no fields for KnownFields to
// check, so nothing is lost.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	s := n.Value
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!binary" {
		// Let the decoder refuse a collection, or decode the rare tagged
		// scalar; a plain one is its text, without a decoder per value.
		if err := n.Decode(&s); err != nil {
			return err
		}
	}
	v, err := model.ParseDuration(s)
	if err != nil {
		// A TypeError lets the decoder carry on and report every bad field.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: "+durationErrFormat, n.Line, s)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration in the form UnmarshalYAML reads.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String formats the duration Prometheus-style, e.g. "1m30s" or "1d".
func (d Duration) String() string { return model.Duration(d).String() }
