package collector

import (
	"cmp"
	"slices"

	dto "github.com/prometheus/client_model/go"
)

// This file holds the one definition of every family the store is exported
// as: name, type, HELP text and label layout. The registry road
// (NewCollector), the snapshot gatherer (Gatherer) and the text writers
// (TextWriter) all build their descriptors and headers from it, so the
// three cannot disagree on anything but a bug in how they read a snapshot,
// which the tests compare.

// famID identifies one family of the table.
type famID uint8

const (
	famHostUp famID = iota
	famProbeSuccess
	famProbeDuration
	famProbeLastRun
	famProbeLastSuccess
	famProbeConsecutiveFailures
	famProbeFailureInfo
	famProbeIPAddrHash
	famProbeIPProtocol
	famICMPRTT
	famICMPSent
	famICMPReceived
	famSSHPhase
	famCmdDuration
	famCmdExitStatus
	famCmdHash
	famCmdBytes
	famCmdChanged
	famCmdOutputInfo
	famSSHConnInfo
	famTargets
	famProbesTotal
	famProbeFailingSince
	famCmdDistinct
	famHostKeyInfo
	famHostKeyChanged
	famHostKeyShared
	famHostCertExpiry
	numFamilies
)

// rowKind names one list of series sharing a label layout; several families
// read the same list.
type rowKind uint8

const (
	rowsHost        rowKind = iota // hosts with a result (fleet_host_up)
	rowsICMP                       // ICMP targets with a result, host labels
	rowsTarget                     // targets with a result, probe and port labels
	rowsFailure                    // targets whose last probe failed
	rowsPhase                      // SSH phases reached
	rowsCommand                    // SSH commands that ran
	rowsCmdInfo                    // SSH commands with a known output hash
	rowsConn                       // SSH targets with a known handshake
	rowsHostKey                    // SSH targets with an observed host key, host labels
	rowsHostKeyInfo                // the same, with the key's type and fingerprint
	rowsTargets                    // (set, probe) pairs (fleet_targets)
	rowsProbes                     // (set, probe, result) triples (fleet_probes_total)
	rowsDrift                      // (set, command) pairs with an output hash
	numRowKinds
)

// perHost reports whether series of kind k belong to one host: they carry
// set, host and the set's static labels, then extras().
func (k rowKind) perHost() bool { return k < rowsTargets }

// extras returns the label names of kind k besides set, host and the static
// labels for per-host kinds, and all of its label names for the others.
func (k rowKind) extras() []string {
	switch k {
	case rowsTarget:
		return []string{labelProbe, labelPort}
	case rowsFailure:
		return []string{labelProbe, labelReason, labelPort}
	case rowsPhase:
		return []string{labelPhase}
	case rowsCommand:
		return []string{labelCommand}
	case rowsCmdInfo:
		return []string{labelCommand, labelSHA256, labelValue}
	case rowsConn:
		return []string{labelServerVersion, labelKEX, labelCipher, labelMAC, labelHostKeyAlg}
	case rowsHostKeyInfo:
		return []string{labelKeyType, labelFingerprint}
	case rowsTargets:
		return []string{labelSet, labelProbe}
	case rowsProbes:
		return []string{labelSet, labelProbe, labelResult}
	case rowsDrift:
		return []string{labelSet, labelCommand}
	default:
		return nil
	}
}

// family is one row of the table.
type family struct {
	name string
	typ  dto.MetricType
	help string
	rows rowKind
}

// familyTable returns the table, indexed by famID. It is a function rather
// than a package variable so that nothing can change it for other users.
func familyTable() *[numFamilies]family {
	const gauge, counter = dto.MetricType_GAUGE, dto.MetricType_COUNTER
	return &[numFamilies]family{
		famHostUp: {
			"fleet_host_up", gauge,
			"Whether the last result of any enabled probe of the host succeeded (1) or not (0).", rowsHost,
		},
		famProbeSuccess: {
			"fleet_probe_success", gauge,
			"Whether the last probe succeeded (1) or failed (0).", rowsTarget,
		},
		famProbeDuration: {
			"fleet_probe_duration_seconds", gauge,
			"Wall time of the last probe in seconds.", rowsTarget,
		},
		famProbeLastRun: {
			"fleet_probe_last_run_timestamp_seconds", gauge,
			"Unix time at which the last probe ended.", rowsTarget,
		},
		famProbeLastSuccess: {
			"fleet_probe_last_success_timestamp_seconds", gauge,
			"Unix time at which the last successful probe ended; absent before the first success.", rowsTarget,
		},
		famProbeConsecutiveFailures: {
			"fleet_probe_consecutive_failures", gauge,
			"Number of failed probes since the last successful one.", rowsTarget,
		},
		famProbeFailureInfo: {
			"fleet_probe_failure_info", gauge,
			"Reason of the last probe's failure; present with value 1 only while the last probe failed.", rowsFailure,
		},
		famProbeIPAddrHash: {
			"fleet_probe_ip_addr_hash", gauge,
			"FNV-1a 32-bit hash of the address the last probe went to, so that a change of address shows; absent when the name did not resolve.", rowsTarget,
		},
		famProbeIPProtocol: {
			"fleet_probe_ip_protocol", gauge,
			"IP version (4 or 6) of the address the last probe went to; absent when the name did not resolve.", rowsTarget,
		},
		famICMPRTT: {
			"fleet_icmp_rtt_seconds", gauge,
			"Mean round-trip time of the replies to the last ICMP probe in seconds; absent when no reply came.", rowsICMP,
		},
		famICMPSent: {
			"fleet_icmp_packets_sent_total", counter,
			"Number of ICMP echo requests sent.", rowsICMP,
		},
		famICMPReceived: {
			"fleet_icmp_packets_received_total", counter,
			"Number of ICMP echo replies received.", rowsICMP,
		},
		famSSHPhase: {
			"fleet_ssh_phase_seconds", gauge,
			"Duration of each phase reached by the last SSH probe that established a connection, in seconds.", rowsPhase,
		},
		famCmdDuration: {
			"fleet_ssh_command_duration_seconds", gauge,
			"Wall time of the last run of the command in seconds.", rowsCommand,
		},
		famCmdExitStatus: {
			"fleet_ssh_command_exit_status", gauge,
			"Exit status of the last run of the command; -1 when it had none (signal, timeout, dropped connection, no exit status, shell mode).", rowsCommand,
		},
		famCmdHash: {
			"fleet_ssh_command_output_hash", gauge,
			"The first 52 bits of the SHA-256 of the command's output in its last run that read the output completely.", rowsCommand,
		},
		famCmdBytes: {
			"fleet_ssh_command_output_bytes", gauge,
			"Size of the hashed output of the command in its last run that read the output completely, in bytes.", rowsCommand,
		},
		famCmdChanged: {
			"fleet_ssh_command_output_changed_timestamp_seconds", gauge,
			"Unix time of the end of the probe that first saw the current output hash of the command.", rowsCommand,
		},
		famCmdOutputInfo: {
			"fleet_ssh_command_output_info", gauge,
			"The full hex SHA-256 of the command's last completely read output, and with output_label its first line as value; always 1.", rowsCmdInfo,
		},
		famSSHConnInfo: {
			"fleet_ssh_connection_info", gauge,
			"Server version and the algorithms negotiated by the last successful SSH handshake with the host (cipher and mac client to server); always 1.", rowsConn,
		},
		famTargets: {
			"fleet_targets", gauge,
			"Number of configured targets.", rowsTargets,
		},
		famProbesTotal: {
			"fleet_probes_total", counter,
			"Number of probe results received, by result.", rowsProbes,
		},
		famProbeFailingSince: {
			"fleet_probe_failing_since_timestamp_seconds", gauge,
			"Unix time at which the first failed probe of the current failure streak ended; absent while the last probe succeeded.", rowsTarget,
		},
		famCmdDistinct: {
			"fleet_ssh_command_output_distinct_hashes", gauge,
			"Number of distinct values of fleet_ssh_command_output_hash among the hosts of the set that export one for the command; 1 means every such host agrees.", rowsDrift,
		},
		famHostKeyInfo: {
			"fleet_ssh_host_key_info", gauge,
			"Type and SHA-256 fingerprint (OpenSSH form) of the host key the last SSH handshake with the host presented, also when it was rejected; kept through probes without a handshake; always 1.", rowsHostKeyInfo,
		},
		famHostKeyChanged: {
			"fleet_ssh_host_key_changed_timestamp_seconds", gauge,
			"Unix time of the end of the probe that first saw the host's current host key fingerprint after a different one; 0 while no change was seen.", rowsHostKey,
		},
		famHostKeyShared: {
			"fleet_ssh_host_key_shared_hosts", gauge,
			"Number of configured hosts (distinct names, over every set and port) whose last observed SSH host key has this host's fingerprint; 1 means the key is unique.", rowsHostKey,
		},
		famHostCertExpiry: {
			"fleet_ssh_host_certificate_expiry_timestamp_seconds", gauge,
			"Unix time at which the host certificate the host last presented expires; absent for plain keys and certificates valid forever.", rowsHostKey,
		},
	}
}

// familyOrder returns the famIDs sorted by family name, the order in which a
// registry sorts families.
func familyOrder(t *[numFamilies]family) []famID {
	ids := make([]famID, numFamilies)
	for i := range ids {
		ids[i] = famID(i)
	}
	slices.SortFunc(ids, func(a, b famID) int { return cmp.Compare(t[a].name, t[b].name) })
	return ids
}

// Family describes one metric family the store's snapshots are exported as.
type Family struct {
	// Name is the metric name; counters end in _total.
	Name string
	// Type is the family's type, gauge or counter.
	Type dto.MetricType
	// Help is the HELP text.
	Help string
	// Labels are the label names every series of the family carries.
	Labels []string
	// StaticLabels is true when the series also carry the static labels
	// of their set (the union over all configured sets; a set without one
	// of them has it empty).
	StaticLabels bool
}

// Families returns the definitions of every family NewCollector, Gatherer
// and TextWriter export, sorted by name.
func Families() []Family {
	t := familyTable()
	out := make([]Family, 0, numFamilies)
	for _, id := range familyOrder(t) {
		f := &t[id]
		labels := f.rows.extras()
		if f.rows.perHost() {
			labels = append([]string{labelSet, labelHost}, labels...)
		}
		out = append(out, Family{Name: f.name, Type: f.typ, Help: f.help, Labels: labels, StaticLabels: f.rows.perHost()})
	}
	return out
}
