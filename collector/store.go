package collector

import (
	"cmp"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// TargetState is what the store knows about one configured target. Values in
// a Snapshot are copies; the pointers they hold (Target, SSH) point at data
// that is never mutated after it was published, so readers may keep them.
type TargetState struct {
	// Target is the current configuration of the target (from the last
	// Reconcile), so label changes take effect without losing history.
	Target *config.Target
	// HasResult is false until the first result arrives; the fields below
	// are meaningful only when it is true.
	HasResult bool
	// Success, Reason and Duration describe the last result. Reason is empty
	// when Success is true.
	Success  bool
	Reason   probe.Reason
	Duration time.Duration
	// LastRun is the end time of the last probe.
	LastRun time.Time
	// LastSuccess is the end time of the last successful probe; zero before
	// the first success.
	LastSuccess time.Time
	// FailingSince is the end time of the first failed probe of the current
	// failure streak; zero while the last probe succeeded.
	FailingSince time.Time
	// ConsecutiveFailures counts the failed probes since the last success.
	ConsecutiveFailures int
	// Addr is the address the last probe went to; invalid when its name
	// did not resolve.
	Addr netip.Addr
	// ICMP holds the cumulative packet counters and the last RTT; it stays
	// zero for targets of other probe types.
	ICMP ICMPState
	// SSH is nil for targets of other probe types and before the first
	// result. The store never mutates an SSHState it has published: Update
	// replaces the pointer, so snapshots can share it without copying.
	SSH *SSHState

	// setIdx is the index of the target's (set, probe) entry in the store's
	// sets slice, so Update counts probes without a map lookup.
	setIdx int32
	// port is Target.PortLabel(), formatted once by Reconcile rather than
	// on every scrape.
	port string
}

// portLabel returns the value of the target's port label.
func (t *TargetState) portLabel() string {
	if t.port != "" || t.Target.Probe != config.ProbeTCP {
		return t.port
	}
	// Not a state the store made (a hand-built snapshot).
	return t.Target.PortLabel()
}

// ICMPState holds the ICMP measurements of one target.
type ICMPState struct {
	// PacketsSent and PacketsReceived are cumulative over every probe since
	// the target was first configured.
	PacketsSent, PacketsReceived uint64
	// LastSent and LastReceived are the packet counts of the last probe.
	LastSent, LastReceived int
	// RTT is the mean round-trip time of the last probe; zero when no reply
	// came.
	RTT time.Duration
}

// SSHState holds the SSH measurements of one target. It is immutable once
// stored.
type SSHState struct {
	// Connect, Handshake and Auth are the phase durations of the last probe
	// that established a TCP connection; a phase that probe did not reach is
	// zero. Probes that reused a connection or never connected leave them
	// unchanged.
	Connect, Handshake, Auth time.Duration
	// HasPhases is true once some probe established a connection.
	HasPhases bool
	// Conn is what the handshake of the connection of the last probe that
	// had one negotiated; nil before the first handshake. A failed probe
	// leaves it unchanged.
	Conn *probe.ConnInfo
	// HostKey is the last host key a handshake with the target presented,
	// with its change history; nil before the first. Probes that made no
	// handshake (a reused connection, a failure before the key exchange)
	// leave it unchanged.
	HostKey *HostKeyState
	// Commands holds one entry per configured command that has ever been
	// reported, in the order of the last report.
	Commands []CommandState
}

// HostKeyState is the last host key observed for one SSH target. It is
// immutable once stored.
type HostKeyState struct {
	// Type is the key type ("ssh-ed25519"); for a certificate the type of
	// the certified key.
	Type string
	// FingerprintSHA256 is the key's fingerprint in OpenSSH's form
	// ("SHA256:" and unpadded base64).
	FingerprintSHA256 string
	// Certificate is true when the key came in a host certificate;
	// CertificateExpiry is then its valid-before time, zero for one valid
	// forever.
	Certificate       bool
	CertificateExpiry time.Time
	// Changed is the end time of the probe that first saw this fingerprint
	// after a different one, and Previous that different fingerprint. The
	// first observation of a target is no change: both stay empty until
	// the fingerprint differs from an earlier one.
	Changed  time.Time
	Previous string
}

// HasCertificateExpiry reports whether the key is a certificate with a
// finite expiry.
func (k *HostKeyState) HasCertificateExpiry() bool {
	return k.Certificate && !k.CertificateExpiry.IsZero()
}

// CommandState is the history of one SSH command of one target.
type CommandState struct {
	// Name is the configured command name (the `command` label).
	Name string
	// Ran is true when the command was started by the last SSH probe; the
	// fields Duration, ExitStatus and Reason then describe that run, and
	// otherwise keep the values of the last run, so that a failing probe
	// does not make the command's series vanish.
	Ran        bool
	Duration   time.Duration
	ExitStatus int
	Reason     probe.Reason
	// OutputRead is true when the last run produced an output hash.
	OutputRead bool
	// Hash, SHA256, Bytes and Value describe the last output that was
	// read completely; they keep their value when a later run read none
	// (it failed, timed out, or the probe did not reach it). SHA256 and
	// Value are not kept across restarts.
	Hash   uint64
	SHA256 string
	Bytes  int64
	Value  string
	// HashChanged is the end time of the probe that first saw the current
	// Hash: set when the hash differs from the previously known one and also
	// at the first observation (there is no earlier hash to compare with).
	// Zero while no output has ever been read.
	HashChanged time.Time
}

// Exported reports whether the command has series: once it has run, it
// keeps them until it is no longer configured, through failed probes.
func (c *CommandState) Exported() bool {
	return c.Ran || c.Duration > 0 || !c.HashChanged.IsZero()
}

// HasHash reports whether an output hash of the command is known.
func (c *CommandState) HasHash() bool { return !c.HashChanged.IsZero() }

// SetProbeState holds the exporter-health counts of one (set, probe) pair.
type SetProbeState struct {
	Set, Probe string
	// Targets is the number of configured targets.
	Targets int
	// Successes and Failures count the results received since the pair was
	// first configured.
	Successes, Failures uint64
}

// Snapshot is a consistent copy of the store, taken by Store.Snapshot. It is
// read-only: its slices may share backing data with other snapshots.
type Snapshot struct {
	// LabelNames is the sorted union of the static label names of every
	// configured set.
	LabelNames []string
	// Targets is sorted by set, host and probe, so the probes of one host
	// are adjacent.
	Targets []TargetState
	// SetProbes is sorted by set and probe.
	SetProbes []SetProbeState

	// order lists the indices of Targets in exposition order (see
	// expositionOrder); the collector emits series in that order.
	order []int32
	// drift caches the rows of fleet_ssh_command_output_distinct_hashes,
	// hostKeys the counts of fleet_ssh_host_key_shared_hosts; nil for
	// snapshots not taken from a store.
	drift    *driftCache
	hostKeys *hostKeyCache
}

type setProbeKey struct{ set, probe string }

// Store keeps the last result and the cumulative counters of every configured
// target. It is safe for concurrent use.
type Store struct {
	// mu guards targets, index, sets, setIndex, labelNames, order and
	// logger.
	mu sync.RWMutex
	// targets is sorted by key; index maps a key to its position.
	targets []TargetState
	index   config.KeyIndex[int32]
	// sets is sorted by set and probe; setIndex maps a pair to its position.
	sets     []SetProbeState
	setIndex map[setProbeKey]int32
	// labelNames and order are replaced wholesale, never mutated, so
	// snapshots share them.
	labelNames []string
	order      []int32
	// logger receives the host key changes; nil discards them.
	logger *slog.Logger
}

// NewStore returns an empty store. Until Reconcile is called every result is
// ignored.
func NewStore() *Store {
	return &Store{
		setIndex: map[setProbeKey]int32{},
	}
}

func compareKeys(a, b *config.Target) int {
	return a.Key().Compare(b.Key())
}

// expositionOrder returns the indices of targets in the order in which the
// registry sorts their series: by the values of set, host and the static
// labels taken in label-name order, then by probe. Emitting series already
// in that order turns the registry's per-family sort into a linear pass,
// which is a large part of the cost of a big scrape. The probes of one host
// stay adjacent, because every label but probe is the same for them.
func expositionOrder(targets []*config.Target, labelNames []string) []int32 {
	names := slices.Sorted(slices.Values(append([]string{labelSet, labelHost}, labelNames...)))
	values := make([][]string, len(targets))
	for i, t := range targets {
		v := make([]string, len(names))
		for j, name := range names {
			switch name {
			case labelSet:
				v[j] = t.Set
			case labelHost:
				v[j] = t.Host
			default:
				v[j] = t.Labels[name]
			}
		}
		values[i] = v
	}
	order := make([]int32, len(targets))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		return cmp.Or(slices.Compare(values[a], values[b]), cmp.Compare(targets[a].Probe, targets[b].Probe),
			cmp.Compare(targets[a].Key().Port, targets[b].Key().Port))
	})
	return order
}

// Reconcile takes the configured target list. State of targets whose Key
// is still present is kept, even when the Fingerprint changed (labels then
// come from the new Target); state of removed targets is dropped, so their
// series disappear, and so are the probe counters of removed (set, probe)
// pairs. Command history is pruned to the commands still configured.
// A duplicate key keeps its first occurrence.
func (s *Store) Reconcile(targets []*config.Target) {
	// Sorting and the label union need no lock.
	sorted := slices.DeleteFunc(slices.Clone(targets), func(t *config.Target) bool { return t == nil })
	slices.SortStableFunc(sorted, compareKeys)
	sorted = slices.CompactFunc(sorted, func(a, b *config.Target) bool { return compareKeys(a, b) == 0 })
	names := map[string]struct{}{}
	for _, t := range sorted {
		for name := range t.Labels {
			names[name] = struct{}{}
		}
	}
	labelNames := slices.Sorted(maps.Keys(names))
	order := expositionOrder(sorted, labelNames)

	var sets []SetProbeState
	for _, t := range sorted {
		// Probe types interleave within a set, so this only skips runs;
		// sort and compact below remove the rest.
		if n := len(sets); n == 0 || sets[n-1].Set != t.Set || sets[n-1].Probe != t.Probe {
			sets = append(sets, SetProbeState{Set: t.Set, Probe: t.Probe})
		}
	}
	slices.SortFunc(sets, func(a, b SetProbeState) int {
		return cmp.Or(cmp.Compare(a.Set, b.Set), cmp.Compare(a.Probe, b.Probe))
	})
	sets = slices.CompactFunc(sets, func(a, b SetProbeState) bool { return a.Set == b.Set && a.Probe == b.Probe })
	setIndex := make(map[setProbeKey]int32, len(sets))
	for i, sp := range sets {
		setIndex[setProbeKey{sp.Set, sp.Probe}] = int32(i)
	}

	states := make([]TargetState, len(sorted))
	index := config.MakeKeyIndex[int32](len(sorted))
	newKey := func(i int32) config.Key { return states[i].Target.Key() }

	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range sorted {
		k, h := t.Key(), t.KeyHash()
		st := &states[i]
		if j, ok := s.lookup(h, k); ok {
			*st = s.targets[j]
		}
		st.Target = t
		index.Put(h, k, int32(i), newKey)
		st.SSH = pruneCommands(st.SSH, t.SSH)
		st.setIdx = setIndex[setProbeKey{t.Set, t.Probe}]
		st.port = t.PortLabel()
		sets[st.setIdx].Targets++
	}
	for i := range sets {
		if j, ok := s.setIndex[setProbeKey{sets[i].Set, sets[i].Probe}]; ok {
			sets[i].Successes = s.sets[j].Successes
			sets[i].Failures = s.sets[j].Failures
		}
	}
	s.targets, s.index = states, index
	s.sets, s.setIndex = sets, setIndex
	s.labelNames = labelNames
	s.order = order
}

// pruneCommands returns st without the commands that cfg no longer lists,
// copying st only when something is dropped.
func pruneCommands(st *SSHState, cfg *config.SSHProbe) *SSHState {
	if st == nil || cfg == nil {
		return st
	}
	configured := func(name string) bool {
		return slices.ContainsFunc(cfg.Commands, func(c config.Command) bool { return c.Name == name })
	}
	for _, c := range st.Commands {
		if !configured(c.Name) {
			n := *st
			n.Commands = slices.DeleteFunc(slices.Clone(st.Commands), func(c CommandState) bool { return !configured(c.Name) })
			return &n
		}
	}
	return st
}

// SetLogger makes the store log every change of a target's SSH host key
// fingerprint at Warn level (set, host, old and new fingerprint); nil, the
// default, logs nothing. It may be called at any time.
func (s *Store) SetLogger(l *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logger = l
}

// hostKeyChange is one change of a target's host key fingerprint, logged
// once the store's lock is released.
type hostKeyChange struct {
	key      config.Key
	from, to *HostKeyState
}

// Update records one probe result. Results for keys that are not configured
// (a late result of a removed target) are ignored. A failed result without a
// reason is recorded with probe.ReasonError.
func (s *Store) Update(r probe.Result) {
	s.mu.Lock()
	changes := s.update(&r, nil)
	logger := s.logger
	s.mu.Unlock()
	logHostKeyChanges(logger, changes)
}

// UpdateBatch records many results under one lock, as Update does each.
func (s *Store) UpdateBatch(rs []probe.Result) {
	var changes []hostKeyChange
	s.mu.Lock()
	for i := range rs {
		changes = s.update(&rs[i], changes)
	}
	logger := s.logger
	s.mu.Unlock()
	logHostKeyChanges(logger, changes)
}

// logHostKeyChanges logs changes, outside the store's lock: a slow log
// sink must not hold up probes and scrapes.
func logHostKeyChanges(logger *slog.Logger, changes []hostKeyChange) {
	if logger == nil {
		return
	}
	for _, c := range changes {
		logger.Warn("SSH host key changed",
			"set", c.key.Set, "host", c.key.Host,
			"old_fingerprint", c.from.FingerprintSHA256, "old_type", c.from.Type,
			"new_fingerprint", c.to.FingerprintSHA256, "new_type", c.to.Type)
	}
}

// update records r and returns changes with the host key change r brought,
// if any. Callers hold s.mu.
func (s *Store) update(r *probe.Result, changes []hostKeyChange) []hostKeyChange {
	i, ok := s.lookupResult(r)
	if !ok {
		return changes
	}
	st := &s.targets[i]
	end := r.End()

	st.HasResult = true
	st.Success = r.Success
	st.Duration = r.Duration
	st.Addr = r.Addr
	st.LastRun = end
	sp := &s.sets[st.setIdx]
	if r.Success {
		st.Reason = probe.ReasonNone
		st.LastSuccess = end
		st.FailingSince = time.Time{}
		st.ConsecutiveFailures = 0
		sp.Successes++
	} else {
		st.Reason = cmp.Or(r.Reason, probe.ReasonError)
		if st.ConsecutiveFailures == 0 {
			st.FailingSince = end
		}
		st.ConsecutiveFailures++
		sp.Failures++
	}

	switch st.Target.Probe {
	case config.ProbeICMP:
		st.ICMP.LastSent, st.ICMP.LastReceived, st.ICMP.RTT = 0, 0, 0
		if r.ICMP != nil {
			st.ICMP.LastSent, st.ICMP.LastReceived = r.ICMP.Sent, r.ICMP.Received
			st.ICMP.PacketsSent += uint64(max(r.ICMP.Sent, 0))
			st.ICMP.PacketsReceived += uint64(max(r.ICMP.Received, 0))
			if r.ICMP.Received > 0 {
				st.ICMP.RTT = r.ICMP.RTT
			}
		}
	case config.ProbeSSH:
		prev := st.SSH
		st.SSH = nextSSHState(prev, r.SSH, end)
		if prev != nil && prev.HostKey != nil && st.SSH.HostKey.FingerprintSHA256 != prev.HostKey.FingerprintSHA256 {
			changes = append(changes, hostKeyChange{key: r.Key, from: prev.HostKey, to: st.SSH.HostKey})
		}
	}
	return changes
}

// nextHostKey returns the host key state that follows prev after a
// handshake presented k (nil when the probe made none) at end. prev is not
// modified.
func nextHostKey(prev *HostKeyState, k *probe.HostKey, end time.Time) *HostKeyState {
	if k == nil || k.FingerprintSHA256 == "" {
		return prev
	}
	next := &HostKeyState{
		Type: k.Type, FingerprintSHA256: k.FingerprintSHA256,
		Certificate: k.Certificate, CertificateExpiry: k.CertificateExpiry,
	}
	switch {
	case prev == nil:
		// The first observation: nothing to compare with.
	case prev.FingerprintSHA256 == k.FingerprintSHA256:
		if prev.Type == k.Type && prev.Certificate == k.Certificate && prev.CertificateExpiry.Equal(k.CertificateExpiry) {
			// Nothing new: share the published state.
			return prev
		}
		// The same key, e.g. in a renewed certificate: no change.
		next.Changed, next.Previous = prev.Changed, prev.Previous
	default:
		next.Changed, next.Previous = end, prev.FingerprintSHA256
	}
	return next
}

// outputRead reports whether the prober read a command's output. The prober
// always sets Hash when it read the output (SHA-256 of any output, the empty
// one included, has non-zero top 52 bits except with probability 2^-52), and
// leaves it zero otherwise.
func outputRead(c *probe.CommandResult) bool { return c.Ran && c.Hash != 0 }

// nextSSHState builds the state that follows prev after the SSH result r
// (nil when the probe failed before producing one). prev is not modified.
func nextSSHState(prev *SSHState, r *probe.SSHResult, end time.Time) *SSHState {
	next := &SSHState{}
	if prev != nil {
		next.Connect, next.Handshake, next.Auth, next.HasPhases = prev.Connect, prev.Handshake, prev.Auth, prev.HasPhases
	}
	// Only NewConnection says a connection was established: the prober
	// also times a failed dial in Connect, and that must not replace the
	// phases of the last real connection.
	if r != nil && r.NewConnection {
		next.Connect, next.Handshake, next.Auth, next.HasPhases = r.Connect, r.Handshake, r.Auth, true
	}
	if prev != nil {
		next.Conn, next.HostKey = prev.Conn, prev.HostKey
	}
	if r != nil && r.Conn != nil {
		next.Conn = r.Conn
	}
	if r != nil {
		next.HostKey = nextHostKey(next.HostKey, r.HostKey, end)
	}

	var reported []probe.CommandResult
	if r != nil {
		reported = r.Commands
	}
	var prevCmds []CommandState
	if prev != nil {
		prevCmds = prev.Commands
	}
	cmds := make([]CommandState, 0, max(len(reported), len(prevCmds)))
	for i := range reported {
		c := &reported[i]
		cs := CommandState{Name: c.Name}
		if j := slices.IndexFunc(prevCmds, func(p CommandState) bool { return p.Name == c.Name }); j >= 0 {
			p := prevCmds[j]
			cs.Hash, cs.SHA256, cs.Bytes, cs.Value, cs.HashChanged = p.Hash, p.SHA256, p.Bytes, p.Value, p.HashChanged
			cs.Duration, cs.ExitStatus, cs.Reason = p.Duration, p.ExitStatus, p.Reason
		}
		cs.Ran = c.Ran
		if c.Ran {
			cs.Duration, cs.ExitStatus, cs.Reason = c.Duration, c.ExitStatus, c.Reason
		}
		if outputRead(c) {
			cs.OutputRead = true
			if cs.HashChanged.IsZero() || cs.Hash != c.Hash {
				cs.HashChanged = end
			}
			cs.Hash, cs.SHA256, cs.Bytes, cs.Value = c.Hash, c.SHA256, c.Bytes, c.Value
		}
		cmds = append(cmds, cs)
	}
	// Commands the last probe did not report keep their output history but
	// did not run.
	for _, p := range prevCmds {
		if !slices.ContainsFunc(reported, func(c probe.CommandResult) bool { return c.Name == p.Name }) {
			cmds = append(cmds, CommandState{
				Name: p.Name, Hash: p.Hash, SHA256: p.SHA256, Bytes: p.Bytes, Value: p.Value, HashChanged: p.HashChanged,
				Duration: p.Duration, ExitStatus: p.ExitStatus, Reason: p.Reason,
			})
		}
	}
	if len(cmds) == 0 {
		cmds = nil
	}
	next.Commands = cmds
	return next
}

// Snapshot returns a consistent copy of the store, taken under the read lock.
func (s *Store) Snapshot() *Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &Snapshot{
		LabelNames: s.labelNames,
		Targets:    slices.Clone(s.targets),
		SetProbes:  slices.Clone(s.sets),
		order:      s.order,
		drift:      &driftCache{},
		hostKeys:   &hostKeyCache{},
	}
}

// Saved is the part of the store that outlives the process: what Export
// copies out for a snapshot file and Import puts back at the next start.
// Configuration (labels, the Target pointer, target counts) is not part of
// it: that comes from the config the new process loaded.
type Saved struct {
	// Targets holds the state of every configured target, sorted by key.
	Targets []SavedTarget
	// SetProbes holds the probe counters of every configured (set, probe)
	// pair; Targets in each entry is the count at export and is ignored by
	// Import.
	SetProbes []SetProbeState
}

// SavedTarget is the state of one target, identified by its key. State.Target
// is ignored by Import: the target's current configuration is kept.
type SavedTarget struct {
	Key   config.Key
	State TargetState
}

// Export copies the state of every configured target, taken under the read
// lock. SSH states are shared with the store, which never mutates them.
func (s *Store) Export() *Saved {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := &Saved{
		Targets:   make([]SavedTarget, len(s.targets)),
		SetProbes: slices.Clone(s.sets),
	}
	for i := range s.targets {
		out.Targets[i] = SavedTarget{Key: s.targets[i].Target.Key(), State: s.targets[i]}
	}
	return out
}

// lookup returns the position in s.targets of the target with key k, whose
// hash is h. Callers hold s.mu.
func (s *Store) lookup(h uint64, k config.Key) (int32, bool) {
	return s.index.Get(h, k, func(i int32) config.Key { return s.targets[i].Target.Key() })
}

// lookupResult is lookup for r: the entry whose target r's is, without
// comparing keys, when r carries its target (probe.Result.Target).
func (s *Store) lookupResult(r *probe.Result) (int32, bool) {
	h := r.Hash()
	if r.Target != nil {
		if i, ok := s.index.Peek(h); ok && s.targets[i].Target == r.Target {
			return i, true
		}
	}
	return s.lookup(h, r.Key)
}

// Import puts saved state back into the store, for targets that are
// configured now: call it after Reconcile, before the first Update. It
// matches by key only, as Reconcile does, so a target whose configuration
// changed but whose key stayed keeps its results; saved targets and (set,
// probe) pairs that are no longer configured are dropped, and so is the
// history of commands the target no longer runs. Import returns how many
// targets it restored.
func (s *Store) Import(saved *Saved) (restored int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var onlyTCP map[[2]string]int32
	for i := range saved.Targets {
		sv := &saved.Targets[i]
		j, ok := s.lookup(sv.Key.Hash(), sv.Key)
		if !ok && sv.Key.Probe == config.ProbeTCP && sv.Key.Port == 0 {
			// Saved before TCP keys had a port, when a host had one TCP
			// target: it is the host's TCP target if there is one only.
			if onlyTCP == nil {
				onlyTCP = s.onlyTCPTargets()
			}
			j, ok = onlyTCP[[2]string{sv.Key.Set, sv.Key.Host}]
			ok = ok && j >= 0
		}
		if !ok {
			continue
		}
		st := &s.targets[j]
		target, setIdx, port := st.Target, st.setIdx, st.port
		*st = sv.State
		st.Target, st.setIdx, st.port = target, setIdx, port
		st.SSH = pruneCommands(st.SSH, target.SSH)
		restored++
	}
	for _, sp := range saved.SetProbes {
		if j, ok := s.setIndex[setProbeKey{sp.Set, sp.Probe}]; ok {
			s.sets[j].Successes, s.sets[j].Failures = sp.Successes, sp.Failures
		}
	}
	return restored
}

// onlyTCPTargets maps (set, host) to the index of the host's TCP target,
// or to -1 when the host has several. s.mu must be held.
func (s *Store) onlyTCPTargets() map[[2]string]int32 {
	m := map[[2]string]int32{}
	for i := range s.targets {
		t := s.targets[i].Target
		if t.Probe != config.ProbeTCP {
			continue
		}
		k := [2]string{t.Set, t.Host}
		if _, dup := m[k]; dup {
			m[k] = -1
			continue
		}
		m[k] = int32(i)
	}
	return m
}

// addrHash is the value of fleet_probe_ip_addr_hash: FNV-1a 32 of the
// address's text, as blackbox_exporter's probe_ip_addr_hash, so the two
// can be compared; 32 bits are exact in a float64.
// It is computed inline on a stack buffer: the writers call it for every
// target on every scrape and must not allocate.
func addrHash(a netip.Addr) float64 {
	var buf [64]byte
	h := uint32(fnvOffset32)
	for _, c := range a.AppendTo(buf[:0]) {
		h ^= uint32(c)
		h *= fnvPrime32
	}
	return float64(h)
}

// FNV-1a 32-bit parameters (the same as hash/fnv's).
const (
	fnvOffset32 = 2166136261
	fnvPrime32  = 16777619
)

// addrProtocol is the value of fleet_probe_ip_protocol: 4 or 6.
func addrProtocol(a netip.Addr) float64 {
	if a.Is4() {
		return 4
	}
	return 6
}
