package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/fleet-exporter/fleet_exporter/collector"
	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// created is the creation time of the test files: nanoseconds set, so a
// round trip that rounds to microseconds or seconds fails.
var created = time.Unix(1_750_000_000, 123_456_789)

// at returns a time d after created.
func at(d time.Duration) time.Time { return created.Add(d) }

// fullSaved returns state in which every field of every type is set to a
// distinct non-zero value somewhere, next to targets with zero times, no
// result, no SSH state and SSH state without commands.
func fullSaved() *collector.Saved {
	return &collector.Saved{
		Targets: []collector.SavedTarget{
			{Key: config.Key{Set: "a", Host: "h1", Probe: config.ProbeICMP}, State: collector.TargetState{
				HasResult: true, Success: true, Duration: 1234567 * time.Nanosecond,
				LastRun: at(-time.Second), LastSuccess: at(-time.Second),
				ICMP: collector.ICMPState{PacketsSent: 1 << 40, PacketsReceived: 1<<40 - 3, LastSent: 3, LastReceived: 2, RTT: 987654 * time.Nanosecond},
			}},
			{Key: config.Key{Set: "a", Host: "[2001:db8::1]:22", Probe: config.ProbeTCP}, State: collector.TargetState{
				HasResult: true, Reason: probe.ReasonRefused, Duration: 5 * time.Millisecond,
				LastRun: at(-3 * 24 * time.Hour), LastSuccess: at(-400 * 24 * time.Hour), FailingSince: at(-5 * 24 * time.Hour),
				ConsecutiveFailures: 1 << 20, Addr: netip.MustParseAddr("2001:db8::1"),
			}},
			{Key: config.Key{Set: "a", Host: "never", Probe: config.ProbeTCP, Port: 443}},
			{Key: config.Key{Set: "a", Host: "never", Probe: config.ProbeTCP, Port: 65535}},
			{Key: config.Key{Set: "b", Host: "web001.dc1", Probe: config.ProbeSSH}, State: collector.TargetState{
				HasResult: true, Reason: probe.ReasonCommand, Duration: 2 * time.Second,
				LastRun: at(time.Millisecond), FailingSince: at(time.Millisecond), ConsecutiveFailures: 1, Addr: netip.MustParseAddr("127.0.0.7"),
				SSH: &collector.SSHState{
					Connect: 1, Handshake: 2 * time.Millisecond, Auth: 3 * time.Second, HasPhases: true,
					Commands: []collector.CommandState{
						{Name: "uname", Ran: true, Duration: 7, ExitStatus: -1, Reason: probe.ReasonTimeout, OutputRead: true, Hash: 0xfedcba9876543210, Bytes: 1 << 33, HashChanged: at(-72 * time.Hour)},
						{Name: "df -h", Hash: 1, Bytes: 1, HashChanged: at(-time.Nanosecond)},
						{Name: "never read", Ran: true, ExitStatus: 255},
					},
					HostKey: &collector.HostKeyState{
						Type: "ssh-ed25519", FingerprintSHA256: "SHA256:uFl6hIB+0Q2HiNx4ZnWNwEZlHmXl8y6qG/KqHxA9vJ0",
						Certificate: true, CertificateExpiry: time.Unix(1<<62, 999_999_999),
						Changed: at(-36 * time.Hour), Previous: "SHA256:0ld",
					},
				},
			}},
			{Key: config.Key{Set: "b", Host: "cert-forever", Probe: config.ProbeSSH}, State: collector.TargetState{
				HasResult: true, Success: true, LastRun: at(0), LastSuccess: at(0),
				SSH: &collector.SSHState{HostKey: &collector.HostKeyState{Type: "ecdsa-sha2-nistp256", FingerprintSHA256: "SHA256:c", Certificate: true}},
			}},
			{Key: config.Key{Set: "b", Host: "plain-key", Probe: config.ProbeSSH}, State: collector.TargetState{
				HasResult: true, Reason: probe.ReasonHostKey, LastRun: at(0), FailingSince: at(0), ConsecutiveFailures: 1,
				SSH: &collector.SSHState{HostKey: &collector.HostKeyState{Type: "ssh-rsa", FingerprintSHA256: "SHA256:p", Changed: at(-time.Minute), Previous: "SHA256:q"}},
			}},
			{Key: config.Key{Set: "b", Host: "dial-failed", Probe: config.ProbeSSH}, State: collector.TargetState{
				HasResult: true, Reason: probe.ReasonTimeout, LastRun: at(0), FailingSince: at(0), ConsecutiveFailures: 2,
				SSH: &collector.SSHState{Connect: 5 * time.Second},
			}},
		},
		SetProbes: []collector.SetProbeState{
			{Set: "a", Probe: config.ProbeICMP, Targets: 1, Successes: 1 << 50, Failures: 7},
			{Set: "a", Probe: config.ProbeTCP, Targets: 2, Failures: 1 << 20},
			{Set: "b", Probe: config.ProbeSSH, Targets: 4, Successes: 3, Failures: 4},
		},
	}
}

var ignoreUnexported = cmp.Options{cmpopts.IgnoreUnexported(collector.TargetState{}), cmpopts.EquateComparable(netip.Addr{})}

func TestRoundTrip(t *testing.T) {
	for _, clean := range []bool{false, true} {
		want := fullSaved()
		data := Marshal(Header{Clean: clean, Created: created}, want)
		h, got, err := Unmarshal(data)
		if err != nil {
			t.Fatalf("clean=%v: Unmarshal: %v", clean, err)
		}
		wantH := Header{Version: Version, Clean: clean, Created: created}
		// cmp compares time.Time with its Equal method: the same instant to
		// the nanosecond, whatever the location.
		if diff := cmp.Diff(wantH, h); diff != "" {
			t.Errorf("clean=%v: header (-want +got):\n%s", clean, diff)
		}
		if diff := cmp.Diff(want, got, ignoreUnexported); diff != "" {
			t.Errorf("clean=%v: state (-want +got):\n%s", clean, diff)
		}
	}
}

// TestReadVersion1 reads a file written before TCP keys had a port: its
// TCP state goes to a host's TCP target when the host has only one.
func TestReadVersion1(t *testing.T) {
	old := &collector.Saved{SetProbes: []collector.SetProbeState{}, Targets: []collector.SavedTarget{
		{Key: config.Key{Set: "a", Host: "one", Probe: config.ProbeTCP}, State: collector.TargetState{HasResult: true, LastRun: at(0), ConsecutiveFailures: 3}},
		{Key: config.Key{Set: "a", Host: "two", Probe: config.ProbeTCP}, State: collector.TargetState{HasResult: true, LastRun: at(0), ConsecutiveFailures: 4}},
		{Key: config.Key{Set: "a", Host: "one", Probe: config.ProbeICMP}, State: collector.TargetState{HasResult: true, LastRun: at(0), ConsecutiveFailures: 5}},
	}}
	h, got, err := Unmarshal(marshal(Header{Created: created}, old, 1))
	if err != nil || h.Version != 1 {
		t.Fatalf("Unmarshal: version %d, %v", h.Version, err)
	}
	if diff := cmp.Diff(old, got, ignoreUnexported); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	tcp := func(host string, port int) *config.Target {
		return &config.Target{Set: "a", Host: host, Name: host, Probe: config.ProbeTCP, Port: port, TCP: &config.TCPProbe{}}
	}
	one := tcp("one", 22)
	two22, two443 := tcp("two", 22), tcp("two", 443)
	icmp := &config.Target{Set: "a", Host: "one", Name: "one", Probe: config.ProbeICMP, ICMP: &config.ICMPProbe{}}
	store := collector.NewStore()
	store.Reconcile([]*config.Target{one, two22, two443, icmp})
	if n := store.Import(got); n != 2 {
		t.Errorf("restored %d targets, want 2 (one's tcp and icmp; two has two tcp ports)", n)
	}
	want := map[config.Key]int{one.Key(): 3, icmp.Key(): 5, two22.Key(): 0, two443.Key(): 0}
	for _, st := range store.Snapshot().Targets {
		if w := want[st.Target.Key()]; st.ConsecutiveFailures != w {
			t.Errorf("%v: %d consecutive failures, want %d", st.Target.Key(), st.ConsecutiveFailures, w)
		}
	}
}

// TestReadVersion2 reads a file written before host keys were saved: every
// other field comes back, the host keys are unknown.
func TestReadVersion2(t *testing.T) {
	h, got, err := Unmarshal(marshal(Header{Created: created}, fullSaved(), 2))
	if err != nil || h.Version != 2 {
		t.Fatalf("Unmarshal: version %d, %v", h.Version, err)
	}
	want := fullSaved()
	keys := 0
	for i := range want.Targets {
		if ssh := want.Targets[i].State.SSH; ssh != nil && ssh.HostKey != nil {
			c := *ssh
			c.HostKey = nil
			want.Targets[i].State.SSH = &c
			keys++
		}
	}
	if keys == 0 {
		t.Fatal("fullSaved has no host key: the test would prove nothing")
	}
	if diff := cmp.Diff(want, got, ignoreUnexported); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
}

func TestRoundTripEmpty(t *testing.T) {
	_, got, err := Unmarshal(Marshal(Header{Created: created}, &collector.Saved{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Targets) != 0 || len(got.SetProbes) != 0 {
		t.Errorf("empty state came back as %+v", got)
	}
}

// reseal rewrites the body length and checksum of a file whose body was
// edited, so the decoder itself must catch the damage.
func reseal(data []byte) []byte {
	binary.BigEndian.PutUint64(data[20:], uint64(len(data)-headerSize))
	crc := crc32.Update(crc32.Checksum(data[:28], castagnoli), castagnoli, data[headerSize:])
	binary.BigEndian.PutUint32(data[28:], crc)
	return data
}

func TestUnmarshalRejects(t *testing.T) {
	good := Marshal(Header{Created: created}, fullSaved())
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrCorrupt},
		{"header only, truncated", good[:headerSize-1], ErrCorrupt},
		{"body truncated", good[:len(good)-1], ErrCorrupt},
		{"bad magic", edit(func(b []byte) []byte { b[0] = 'X'; return b }), ErrCorrupt},
		{"version 0", edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[8:], 0); return b }), ErrCorrupt},
		{"future version", edit(func(b []byte) []byte { binary.BigEndian.PutUint16(b[8:], Version+1); return b }), ErrVersion},
		{"unknown flag", edit(func(b []byte) []byte { b[11] |= 2; return reseal(b) }), ErrCorrupt},
		{"trailing bytes", edit(func(b []byte) []byte { return reseal(append(b, 0)) }), ErrCorrupt},
		{"body cut short but resealed", edit(func(b []byte) []byte { return reseal(b[:len(b)-3]) }), ErrCorrupt},
		{"huge count", edit(func(b []byte) []byte {
			b = append(b[:headerSize], binary.AppendUvarint(nil, 1<<62)...)
			return reseal(b)
		}), ErrCorrupt},
		{"host key flags without a key", hostKeyFile(t, []byte{kCertificate}), ErrCorrupt},
		{"unknown host key flag", hostKeyFile(t, []byte{kKnown | 1<<7, 0, 1, 'x'}), ErrCorrupt},
		{"host key without a fingerprint", hostKeyFile(t, []byte{kKnown, 0, 0}), ErrCorrupt},
		{"certificate expiry nanoseconds out of range", hostKeyFile(t, append([]byte{kKnown | kCertificate | kCertificateExpiry, 0, 1, 'x', 2}, binary.AppendUvarint(nil, 1e9)...)), ErrCorrupt},
		{"string reference beyond the table", edit(func(b []byte) []byte {
			body := binary.AppendUvarint(nil, 0) // no strings
			body = binary.AppendUvarint(body, 1) // one target
			body = binary.AppendUvarint(body, 0) // set: reference 0
			return reseal(append(b[:headerSize], body...))
		}), ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, saved, err := Unmarshal(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Unmarshal: err = %v, want %v", err, tc.want)
			}
			if saved != nil {
				t.Errorf("Unmarshal returned state with error %v", err)
			}
		})
	}
}

// hostKeyFile returns a file of one SSH target without commands whose host
// key block is hostKey; the string table holds "t" (reference 0) only, for
// the set, the probe, the reason and the key type.
func hostKeyFile(t *testing.T, hostKey []byte) []byte {
	t.Helper()
	good := Marshal(Header{Created: created}, &collector.Saved{Targets: []collector.SavedTarget{{
		Key:   config.Key{Set: "t", Host: "h", Probe: "t"},
		State: collector.TargetState{Reason: "t", SSH: &collector.SSHState{HostKey: &collector.HostKeyState{Type: "t", FingerprintSHA256: "x"}}},
	}}})
	// The body ends with the host key block (flags, type ref 0, "x") and
	// the empty set probe list.
	tail := []byte{kKnown, 0, 1, 'x', 0}
	if !bytes.HasSuffix(good, tail) {
		t.Fatalf("unexpected layout: file ends in %x", good[len(good)-len(tail):])
	}
	b := append(good[:len(good)-len(tail):len(good)-len(tail)], hostKey...)
	b = append(b, 0)
	if _, _, err := Unmarshal(reseal(append([]byte(nil), good...))); err != nil {
		t.Fatalf("the unedited file does not decode: %v", err)
	}
	return reseal(b)
}

// TestUnmarshalEveryDamage flips each bit of a small file and cuts it at
// every length: none of these may decode.
func TestUnmarshalEveryDamage(t *testing.T) {
	good := Marshal(Header{Created: created}, fullSaved())
	for i := range good {
		for bit := range 8 {
			b := append([]byte(nil), good...)
			b[i] ^= 1 << bit
			if _, _, err := Unmarshal(b); err == nil {
				t.Fatalf("flipping bit %d of byte %d went unnoticed", bit, i)
			}
		}
	}
	for n := range len(good) {
		if _, _, err := Unmarshal(good[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("file cut to %d of %d bytes: err = %v, want ErrCorrupt", n, len(good), err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(Marshal(Header{Created: created}, fullSaved()))
	f.Add(Marshal(Header{Clean: true, Created: created}, &collector.Saved{}))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Reseal so the fuzzer reaches the body decoder, not only the
		// checksum; it must never panic or return state with an error.
		if len(data) >= headerSize {
			data = reseal(append([]byte(nil), data...))
		}
		if _, saved, err := Unmarshal(data); err != nil && saved != nil {
			t.Errorf("state returned with error %v", err)
		}
	})
}
