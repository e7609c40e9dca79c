package config

import (
	"errors"
	"maps"
	"math"
	"net"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// reservedLabel says why a set's static labels must not use name, or returns
// "" when they may: the exporter sets some names itself, Prometheus sets job
// and instance on every scraped series, and le and quantile belong to
// histogram and summary series.
func reservedLabel(name string) string {
	switch name {
	case "set", "host", "probe", "port", "reason", "phase", "command", "result",
		"sha256", "value", "server_version", "kex", "cipher", "mac", "host_key_algorithm":
		return "the exporter sets it itself"
	case "job", "instance":
		return "Prometheus sets it on every series it scrapes"
	case "le", "quantile":
		return "it belongs to histogram and summary series"
	}
	return ""
}

// validator collects the problems validate finds.
type validator struct {
	errs []fieldError
}

// at returns base with elems appended, never sharing base's backing array.
func at(base []any, elems ...any) []any {
	return append(slices.Clip(base), elems...)
}

// add records a problem at path; the message is formatted only if shown.
func (v *validator) add(path []any, format string, args ...any) {
	v.errs = append(v.errs, fieldError{path: path, format: format, args: args})
}

// validate checks every cross-field rule in one pass and returns all
// problems found.
func (c *Config) validate() []fieldError {
	v := &validator{}
	g := &c.Global
	gp := []any{"global"}
	globalOK := v.intervalTimeout(gp, g.Interval, g.Timeout)
	v.intRange(at(gp, "concurrency"), "concurrency", int64(g.Concurrency), 1, MaxConcurrency)
	if g.MaxTargets < 1 || g.MaxTargets > MaxTargetsCeiling {
		v.add(at(gp, "max_targets"), "max_targets must be between 1 and %d, got %d", MaxTargetsCeiling, g.MaxTargets)
	}
	if g.MaxTargetsPerSet < 1 || g.MaxTargetsPerSet > MaxTargetsPerSetCeiling {
		v.add(at(gp, "max_targets_per_set"), "max_targets_per_set must be between 1 and %d, got %d", MaxTargetsPerSetCeiling, g.MaxTargetsPerSet)
	}
	for _, pt := range ProbeTypes() {
		v.limit(at(gp, "limits", pt), g.Limits.For(pt))
	}
	v.limit(at(gp, "limits", "bastion"), g.Limits.Bastion)
	v.dns(at(gp, "dns"), &g.DNS)

	if len(c.HostSets) == 0 {
		v.add([]any{"host_sets"}, "at least one host set is required")
	}
	names := map[string]int{}
	var total targetTally
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

// limit checks one block of global.limits.
func (v *validator) limit(lp []any, l Limit) {
	v.intRange(at(lp, "concurrency"), "concurrency", int64(l.Concurrency), 1, MaxConcurrency)
	switch {
	case !(l.Rate >= 0) || math.IsInf(l.Rate, 0):
		v.add(at(lp, "rate"), "rate must be a finite number >= 0 (0 means unlimited), got %v", l.Rate)
	case l.Rate > MaxRate:
		v.add(at(lp, "rate"), "rate must be at most %v, got %v", float64(MaxRate), l.Rate)
	}
	if l.Burst < 0 {
		v.add(at(lp, "burst"), "burst must be >= 0, got %d", l.Burst)
	} else {
		v.intRange(at(lp, "burst"), "burst", int64(l.Burst), 0, MaxBurst)
	}
}

// dns checks global.dns: each duration between MinTimeout and MaxInterval
// (the schema check refuses an explicit zero first), and the TTL clamp in
// order.
func (v *validator) dns(p []any, d *DNS) {
	ok := true
	for _, f := range []struct {
		key string
		val Duration
	}{
		{"min_ttl", d.MinTTL}, {"max_ttl", d.MaxTTL}, {"negative_ttl", d.NegativeTTL}, {"max_stale", d.MaxStale},
	} {
		if !v.durationRange(at(p, f.key), f.key, f.val, MinTimeout, MaxInterval) {
			ok = false
		}
	}
	if ok && d.MinTTL > d.MaxTTL {
		v.add(at(p, "min_ttl"), "min_ttl %s exceeds max_ttl %s", d.MinTTL, d.MaxTTL)
	}
}

// ipProtocol checks a set's address family keys.
func (v *validator) ipProtocol(sp []any, hs *HostSet) {
	for _, f := range []struct{ key, val string }{
		{"ip_protocol", hs.IPProtocol},
		{"preferred_ip_protocol", hs.PreferredIPProtocol},
	} {
		if f.val != "" && f.val != IP4 && f.val != IP6 {
			v.add(at(sp, f.key), "%s must be %q or %q, got %q", f.key, IP4, IP6, f.val)
		}
	}
	// ip_protocol pins one family, so a preference or a fallback next to
	// it would say something it cannot do.
	if hs.IPProtocol != "" && (hs.PreferredIPProtocol != "" || hs.IPProtocolFallback != nil) {
		v.add(at(sp, "ip_protocol"), "ip_protocol pins the address family: leave out preferred_ip_protocol and ip_protocol_fallback")
	}
	// A source address pins its own family (IPPolicy); asking for the
	// other one could never be satisfied.
	if fam := hs.sourceFamily(); fam != "" {
		for _, f := range []struct{ key, val string }{
			{"ip_protocol", hs.IPProtocol},
			{"preferred_ip_protocol", hs.PreferredIPProtocol},
		} {
			if (f.val == IP4 || f.val == IP6) && f.val != fam {
				v.add(at(sp, f.key), "%s %s contradicts source_address %s, which can only reach %s addresses", f.key, f.val, hs.SourceAddress, fam)
			}
		}
	}
}

// intRange checks lo <= got <= hi, reporting whether it holds.
func (v *validator) intRange(p []any, name string, got, lo, hi int64) bool {
	switch {
	case got < lo:
		v.add(p, "%s must be at least %d, got %d", name, lo, got)
	case got > hi:
		v.add(p, "%s must be at most %d, got %d", name, hi, got)
	default:
		return true
	}
	return false
}

// durationRange checks lo <= got <= hi, reporting whether it holds.
func (v *validator) durationRange(p []any, name string, got Duration, lo, hi time.Duration) bool {
	switch {
	case got <= 0:
		v.add(p, "%s must be positive", name)
	case got.D() < lo:
		v.add(p, "%s must be at least %s, got %s", name, Duration(lo), got)
	case got.D() > hi:
		v.add(p, "%s must be at most %s, got %s", name, Duration(hi), got)
	default:
		return true
	}
	return false
}

// intervalTimeout checks an interval and the timeout that applies to it,
// reporting whether both are usable.
func (v *validator) intervalTimeout(p []any, interval, timeout Duration) bool {
	ok := v.durationRange(at(p, "interval"), "interval", interval, MinInterval, MaxInterval)
	if !v.durationRange(at(p, "timeout"), "timeout", timeout, MinTimeout, MaxInterval) {
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
	if !v.durationRange(at(p, "timeout"), "timeout", timeout, MinTimeout, MaxInterval) {
		return
	}
	if interval > 0 && timeout > interval {
		v.add(at(p, "timeout"), "timeout %s exceeds the set's interval %s", timeout, interval)
	}
}

func (c *Config) validateSet(v *validator, sp []any, hs *HostSet, globalOK bool, total *targetTally) {
	if globalOK || hs.Interval > 0 {
		v.intervalTimeout(sp, hs.Interval, hs.Timeout)
	}
	// An inherited retry_interval is the interval itself: when that is
	// out of range it has been reported already.
	intervalOK := hs.Interval.D() >= MinInterval && hs.Interval.D() <= MaxInterval
	if (intervalOK || hs.RetryInterval != hs.Interval) &&
		v.durationRange(at(sp, "retry_interval"), "retry_interval", hs.RetryInterval, MinInterval, MaxInterval) &&
		intervalOK && hs.RetryInterval > hs.Interval {
		v.add(at(sp, "retry_interval"), "retry_interval %s exceeds the interval %s", hs.RetryInterval, hs.Interval)
	}
	if hs.SourceAddress != "" {
		v.sourceAddress(at(sp, "source_address"), hs.SourceAddress)
	}

	labels := slices.Sorted(maps.Keys(hs.Labels))
	if len(labels) > MaxLabelsPerSet {
		// Parse refuses this before decoding; a hand-built config may not.
		v.add(at(sp, "labels"), "%d labels, more than the %d a set may have", len(labels), MaxLabelsPerSet)
	}
	for _, k := range labels {
		lp := at(sp, "labels", mapKey(k))
		switch {
		case !isLabelName(k):
			v.add(lp, "label name %q is invalid: want [a-zA-Z_][a-zA-Z0-9_]*", k)
		case strings.HasPrefix(k, "__"):
			v.add(lp, "label name %q is invalid: names starting with \"__\" are reserved", k)
		case reservedLabel(k) != "":
			v.add(lp, "label name %q is reserved: %s", k, reservedLabel(k))
		}
		if !utf8.ValidString(hs.Labels[k]) {
			v.add(lp, "label %q has a value that is not valid UTF-8", k)
		}
	}

	v.ipProtocol(sp, hs)
	v.validateDiscovery(sp, hs)

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
		if icmp.Size < 0 || icmp.Size > MaxICMPSize {
			v.add(at(ip, "size"), "size must be between 0 and %d, got %d", MaxICMPSize, icmp.Size)
		}
		v.durationRange(at(ip, "packet_interval"), "packet_interval", icmp.PacketInterval, MinPacketInterval, MaxPacketInterval)
		v.probeTimeout(ip, icmp.Timeout, hs.Interval)
		if icmp.Count > 1 && icmp.PacketInterval > 0 && icmp.Timeout > 0 &&
			float64(icmp.Count-1)*float64(icmp.PacketInterval) >= float64(icmp.Timeout) {
			v.add(at(ip, "count"), "count %d with packet_interval %s cannot complete within the timeout %s", icmp.Count, icmp.PacketInterval, icmp.Timeout)
		}
	}
	if tcp := p.TCP; tcp != nil {
		tp := at(pp, ProbeTCP)
		// 0 means "not set": every host entry must then carry a port.
		if tcp.Port < 0 || tcp.Port > MaxPort {
			v.add(at(tp, "port"), "port must be between 1 and %d, got %d", MaxPort, tcp.Port)
		}
		validateTCPPorts(v, tp, tcp)
		v.probeTimeout(tp, tcp.Timeout, hs.Interval)
	}
	if ssh := p.SSH; ssh != nil {
		validateSSH(v, at(pp, ProbeSSH), ssh, hs.Interval)
	}

	c.validateHosts(v, sp, hs, total)
}

func validateSSH(v *validator, p []any, s *SSHProbe, interval Duration) {
	if s.Port < 1 || s.Port > MaxPort {
		v.add(at(p, "port"), "port must be between 1 and %d, got %d", MaxPort, s.Port)
	}
	v.login(p, s)
	v.proxyJump(at(p, "proxy_jump"), s.ProxyJump)
	v.intRange(at(p, "max_output_bytes"), "max_output_bytes", s.MaxOutputBytes, 1, MaxOutputBytesCeiling)
	v.probeTimeout(p, s.Timeout, interval)
	shell := false
	switch s.Mode {
	case SSHModeExec:
		if d, sh := defaultShell(), s.Shell; len(sh.Setup) > 0 || sh.Term != d.Term || sh.Width != d.Width ||
			sh.Height != d.Height || sh.Prompt != d.Prompt || sh.Exit != d.Exit || sh.Pager != d.Pager {
			v.add(at(p, "shell"), "shell settings apply to mode: shell only; add mode: shell or remove the shell block")
		}
	case SSHModeShell:
		shell = true
		v.shell(at(p, "shell"), &s.Shell)
	default:
		v.add(at(p, "mode"), "mode must be %q or %q, got %q", SSHModeExec, SSHModeShell, s.Mode)
	}

	if len(s.Commands) > MaxCommandsPerProbe {
		v.add(at(p, "commands"), "%d commands, more than the %d one probe may run", len(s.Commands), MaxCommandsPerProbe)
	}
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
		} else if shell && strings.ContainsAny(cmd.Run, "\r\n") {
			v.add(at(cp, "run"), "run must be one line in mode: shell")
		}
		v.regexps(at(cp, "ignore_lines"), "ignore_lines", cmd.IgnoreLines)
		if v.durationRange(at(cp, "timeout"), "timeout", cmd.Timeout, MinTimeout, MaxInterval) &&
			s.Timeout > 0 && cmd.Timeout > s.Timeout {
			v.add(at(cp, "timeout"), "timeout %s exceeds the ssh probe's timeout %s", cmd.Timeout, s.Timeout)
		}
	}
}

// login checks the user, authentication and host key settings an ssh
// block and a proxy_jump entry share.
func (v *validator) login(p []any, s *SSHProbe) {
	if s.User == "" {
		v.add(at(p, "user"), "user is required")
	}
	if s.PrivateKeyFile == "" && s.PasswordFile == "" && !s.Agent && len(s.KeyboardInteractive) == 0 {
		v.add(p, "at least one authentication method is required: private_key_file, password_file, keyboard_interactive or agent: true")
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
	switch s.HostKeyPolicy {
	case HostKeyPolicyStrict:
	case HostKeyPolicyTOFU:
		if s.InsecureSkipHostKeyVerification {
			v.add(at(p, "host_key_policy"), "host_key_policy tofu verifies host keys, insecure_skip_host_key_verification turns that off: choose one")
		}
	default:
		v.add(at(p, "host_key_policy"), "host_key_policy must be %q or %q, got %q", HostKeyPolicyStrict, HostKeyPolicyTOFU, s.HostKeyPolicy)
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
	v.keyboardInteractive(at(p, "keyboard_interactive"), s.KeyboardInteractive)
	v.algorithms(at(p, "algorithms"), &s.Algorithms)
}

// proxyJump checks a proxy_jump chain.
func (v *validator) proxyJump(p []any, hops []ProxyJump) {
	if len(hops) > MaxProxyJumpHops {
		v.add(p, "%d proxy_jump entries, more than %d", len(hops), MaxProxyJumpHops)
	}
	for i := range hops {
		j := &hops[i]
		hp := at(p, i)
		if j.Host == "" {
			v.add(at(hp, "host"), "host is required: the jump host as host or host:port")
		} else if host, port, err := net.SplitHostPort(j.HostPort()); err != nil || host == "" || strings.ContainsAny(host, " /\t") {
			v.add(at(hp, "host"), "host %q is not host, host:port or [v6]:port", j.Host)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > MaxPort {
			v.add(at(hp, "host"), "host %q: port must be between 1 and %d", j.Host, MaxPort)
		}
		switch {
		case i > 0 && j.Connections != 0:
			v.add(at(hp, "connections"), "connections applies to the whole chain: set it on the first proxy_jump entry only")
		case i == 0 && j.Connections != 0:
			v.intRange(at(hp, "connections"), "connections", int64(j.Connections), 1, MaxBastionConnections)
		}
		v.login(hp, j.Auth())
	}
}

// shell checks the shell block of mode: shell.
func (v *validator) shell(p []any, sh *Shell) {
	if sh.Term == "" || strings.ContainsFunc(sh.Term, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		v.add(at(p, "term"), "term must be a terminal type such as %q, got %q", DefaultShellTerm, sh.Term)
	}
	v.intRange(at(p, "width"), "width", int64(sh.Width), 0, 65535)
	v.intRange(at(p, "height"), "height", int64(sh.Height), 0, 65535)
	if strings.TrimSpace(sh.Prompt) == "" {
		v.add(at(p, "prompt"), "prompt must be a regular expression; leave the key out for the default")
	} else {
		v.regexp(at(p, "prompt"), "prompt", sh.Prompt)
	}
	if sh.Pager != "" {
		v.regexp(at(p, "pager"), "pager", sh.Pager)
	}
	if len(sh.Setup) > MaxShellLines {
		v.add(at(p, "setup"), "%d setup lines, more than %d", len(sh.Setup), MaxShellLines)
	}
	for i, l := range sh.Setup {
		if strings.TrimSpace(l) == "" || strings.ContainsAny(l, "\r\n") {
			v.add(at(p, "setup", i), "setup line must be one non-empty line, got %q", l)
		}
	}
	if strings.ContainsAny(sh.Exit, "\r\n") {
		v.add(at(p, "exit"), "exit must be one line, got %q", sh.Exit)
	}
}

// regexp checks that src compiles as a Go regular expression (RE2 syntax).
func (v *validator) regexp(p []any, name, src string) {
	if _, err := regexp.Compile(src); err != nil {
		var se *syntax.Error
		msg := err.Error()
		if errors.As(err, &se) {
			msg = se.Code.String()
		}
		v.add(p, "%s %q is not a valid regular expression: %s", name, src, msg)
	}
}

// regexps checks a list of regular expressions.
func (v *validator) regexps(p []any, name string, list []string) {
	if len(list) > MaxShellLines {
		v.add(p, "%d %s patterns, more than %d", len(list), name, MaxShellLines)
	}
	for i, src := range list {
		if src == "" {
			v.add(at(p, i), "%s pattern must not be empty: it would match every line", name)
			continue
		}
		v.regexp(at(p, i), name, src)
	}
}

// keyboardInteractive checks the keyboard_interactive answers.
func (v *validator) keyboardInteractive(p []any, answers []KeyboardInteractiveAnswer) {
	if len(answers) > MaxKeyboardInteractiveAnswers {
		v.add(p, "%d keyboard_interactive answers, more than %d", len(answers), MaxKeyboardInteractiveAnswers)
	}
	for i, a := range answers {
		ap := at(p, i)
		if a.Prompt == "" {
			v.add(at(ap, "prompt"), "prompt is required: a regular expression matching the question")
		} else {
			v.regexp(at(ap, "prompt"), "prompt", a.Prompt)
		}
		switch {
		case a.AnswerFile == "":
			v.add(at(ap, "answer_file"), "answer_file is required")
		case strings.HasPrefix(a.AnswerFile, "~"):
			v.add(at(ap, "answer_file"), "path %q starts with '~', which is not expanded: use an absolute path or one relative to the config file", a.AnswerFile)
		}
	}
}

// algorithms checks every name of the algorithms block against what the
// SSH library implements.
func (v *validator) algorithms(p []any, a *Algorithms) {
	for _, k := range AlgorithmKinds() {
		list := a.List(k)
		if list == nil {
			continue
		}
		kp := at(p, string(k))
		if len(list) == 0 {
			v.add(kp, "%s is an empty list, which leaves no algorithm: leave the key out for the defaults", k)
			continue
		}
		known := KnownAlgorithms(k)
		appends := strings.HasPrefix(list[0], "+")
		for i, n := range list {
			if strings.HasPrefix(n, "+") != appends {
				v.add(at(kp, i), "either every entry starts with '+' (append to the defaults) or none does (replace them); got %q", n)
				continue
			}
			name := strings.TrimPrefix(n, "+")
			if !slices.Contains(known, name) {
				v.add(at(kp, i), "unknown %s algorithm %q (known: %s)", k, name, strings.Join(known, ", "))
			}
		}
	}
}

// targetTally counts the targets of the sets validated so far.
type targetTally struct {
	targets uint64
	// over is set once the count passed max_targets: later sets are
	// counted, never expanded, and the excess is reported once.
	over bool
}

// enabledProbes is the number of probes a set runs per host.
// A tcp probe counts once per port it lists.
func enabledProbes(p *Probes) uint64 {
	var n uint64
	for _, on := range []bool{p.ICMP != nil, p.TCP != nil, p.SSH != nil} {
		if on {
			n++
		}
	}
	if p.TCP != nil && len(p.TCP.Ports) > 1 {
		n += uint64(min(len(p.TCP.Ports), MaxTCPPorts)) - 1
	}
	return n
}

// validateTCPPorts checks the ports list of a tcp probe: 1 to MaxTCPPorts
// distinct ports, and not together with port.
func validateTCPPorts(v *validator, tp []any, tcp *TCPProbe) {
	if tcp.Ports == nil {
		return
	}
	pp := at(tp, "ports")
	switch {
	case len(tcp.Ports) == 0:
		v.add(pp, "ports must list at least one port; leave it out to use port")
		return
	case len(tcp.Ports) > MaxTCPPorts:
		v.add(pp, "%d ports, more than the %d a tcp probe may list", len(tcp.Ports), MaxTCPPorts)
		return
	case tcp.Port != 0:
		v.add(pp, "ports and port cannot both be set: port is the one-port form of ports")
	}
	seen := make(map[int]bool, len(tcp.Ports))
	for i, port := range tcp.Ports {
		switch {
		case port < 1 || port > MaxPort:
			v.add(at(pp, i), "port must be between 1 and %d, got %d", MaxPort, port)
		case seen[port]:
			v.add(at(pp, i), "port %d is listed twice", port)
		}
		seen[port] = true
	}
}

// validateHosts parses and counts every entry, refusing an oversized set and
// a config past max_targets before expanding anything, then expands the
// entries to check every resulting host and the tcp port rule.
func (c *Config) validateHosts(v *validator, sp []any, hs *HostSet, total *targetTally) {
	hp := at(sp, "hosts")
	if len(hs.Hosts) == 0 {
		if !hs.HasDiscovery() {
			v.add(hp, "at least one host is required, or a discovery source (file_sd, http_sd)")
		}
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
	// Each set is bounded by its ceiling and the sets by the input size:
	// the sum cannot overflow.
	total.targets += setCount(entries) * enabledProbes(&hs.Probes)
	maxTargets := c.Global.MaxTargets
	if maxTargets < 1 || maxTargets > MaxTargetsCeiling {
		maxTargets = MaxTargetsCeiling
	}
	if total.over {
		return
	}
	if total.targets > uint64(maxTargets) {
		total.over = true
		v.add(hp, "the host sets up to this one expand to %d targets (hosts times enabled probes), more than max_targets (%d)", total.targets, maxTargets)
		return
	}
	needPort := hs.Probes.TCP != nil && len(hs.Probes.TCP.PortList()) == 0
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

// sourceAddress checks a set's source_address: an IP literal naming an
// address this machine can send from.
func (v *validator) sourceAddress(p []any, s string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		v.add(p, "source_address %q is not an IP address", s)
	case a.IsUnspecified():
		v.add(p, "source_address %s is unspecified: leave the key out to let the kernel choose", a)
	case a.IsMulticast():
		v.add(p, "source_address %s is a multicast address", a)
	case !isLocalAddr(a):
		v.add(p, "source_address %s is not an address of this machine", a)
	}
}

// isLocalAddr reports whether a is an address of one of this machine's
// interfaces, or one it can bind to anyway: a route of type local (AnyIP)
// or net.ipv4.ip_nonlocal_bind make addresses usable that no interface
// lists, and binding is what the probes will do.
func isLocalAddr(a netip.Addr) bool {
	plain := a.Unmap().WithZone("")
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range addrs {
			if n, ok := ia.(*net.IPNet); ok {
				if x, ok := netip.AddrFromSlice(n.IP); ok && x.Unmap() == plain {
					return true
				}
			}
		}
	}
	c, err := net.ListenPacket("udp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		return false
	}
	_ = c.Close() // nothing was sent: the bind was the test
	return true
}
