package collector

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// benchStore returns a store with hosts hosts in 10 sets, every target with a
// result; a tenth of them failing. withSSH adds an SSH target with one
// command per host next to the ICMP one.
// benchConn and benchSHA256 are the connection and output info of the
// bench fleet: a few distinct values, as in a real fleet.
var (
	benchConn = &probe.ConnInfo{
		ServerVersion: "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", KEX: "curve25519-sha256",
		Cipher: "chacha20-poly1305@openssh.com", MAC: "<implicit>", HostKeyAlgorithm: "ssh-ed25519",
	}
	benchSHA256 = [5]string{
		"1" + strings.Repeat("0", 63), "2" + strings.Repeat("0", 63), "3" + strings.Repeat("0", 63),
		"4" + strings.Repeat("0", 63), "5" + strings.Repeat("0", 63),
	}
)

func benchStore(b testing.TB, hosts int, withSSH bool) *Store {
	b.Helper()
	var targets []*config.Target
	var results []probe.Result
	for i := range hosts {
		set := fmt.Sprintf("set%02d", i%10)
		// Static labels belong to a set, as in a config.
		labels := map[string]string{"dc": fmt.Sprintf("dc%d", i%10%3), "team": "net"}
		host := fmt.Sprintf("host%06d.example.net", i)
		icmp := icmpTarget(set, host, labels)
		targets = append(targets, icmp)
		r := icmpResult(icmp, 0, 3, 3, time.Millisecond)
		if i%10 == 0 {
			r = icmpResult(icmp, 0, 3, 0, 0)
		}
		if i%10 != 1 { // a few names that did not resolve
			r.Addr = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		}
		results = append(results, r)
		if withSSH {
			ssh := sshTarget(set, host, labels, "uname")
			targets = append(targets, ssh)
			// Every host its own key but every 50th, which are clones of
			// one image; every third key in a certificate.
			key := &probe.HostKey{Type: "ssh-ed25519", FingerprintSHA256: fmt.Sprintf("SHA256:%043d", i)}
			if i%50 == 0 {
				key.FingerprintSHA256 = "SHA256:" + strings.Repeat("C", 43)
			}
			if i%3 == 0 {
				key.Certificate, key.CertificateExpiry = true, time.Unix(1_800_000_000+int64(i), 0)
			}
			results = append(results, sshResult(ssh, 0, true, "", &probe.SSHResult{
				Connect: time.Millisecond, Handshake: 2 * time.Millisecond, Auth: 3 * time.Millisecond, NewConnection: true,
				Conn: benchConn, HostKey: key,
				Commands: []probe.CommandResult{{
					Name: "uname", Ran: true, Duration: time.Millisecond, Hash: uint64(i%5 + 1), Bytes: 40,
					SHA256: benchSHA256[i%5],
				}},
			}))
			results[len(results)-1].Addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		}
	}
	s := NewStore()
	s.Reconcile(targets)
	for _, r := range results {
		s.Update(r)
	}
	return s
}

var benchCases = []struct {
	name    string
	hosts   int
	withSSH bool
}{
	{"10k_icmp+ssh", 10_000, true},
	{"100k_icmp", 100_000, false},
}

// BenchmarkCollect measures Collect alone, drained by a single consumer.
func BenchmarkCollect(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			c := NewCollector(benchStore(b, bc.hosts, bc.withSSH))
			b.ReportAllocs()
			b.ResetTimer()
			var series int
			for b.Loop() {
				ch := make(chan prometheus.Metric, 1024)
				done := make(chan int)
				go func() {
					n := 0
					for range ch {
						n++
					}
					done <- n
				}()
				c.Collect(ch)
				close(ch)
				series = <-done
			}
			b.ReportMetric(float64(series), "series")
		})
	}
}

// BenchmarkScrape measures a whole scrape: gathering through a registry and
// encoding the text format.
func BenchmarkScrape(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(NewCollector(benchStore(b, bc.hosts, bc.withSSH)))
			format := expfmt.NewFormat(expfmt.TypeTextPlain)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				mfs, err := reg.Gather()
				if err != nil {
					b.Fatal(err)
				}
				enc := expfmt.NewEncoder(io.Discard, format)
				for _, mf := range mfs {
					if err := enc.Encode(mf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkWriteText measures the text fast path over the same fleets as
// BenchmarkScrape: a snapshot and its text exposition per iteration, with a
// TextWriter reused across scrapes as the /metrics handler does. Compare
// with BenchmarkScrape in the same run; the machine is noisy.
func BenchmarkWriteText(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			s := benchStore(b, bc.hosts, bc.withSSH)
			w := NewTextWriter()
			var out countingWriter
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				out = countingWriter{}
				if err := w.Write(&out, s.Snapshot(), nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
			b.ReportMetric(float64(out.n), "bytes")
		})
	}
}

// countingWriter discards what it is given and counts the bytes.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// BenchmarkDriftRows measures the distinct-hash count a scrape computes
// once per snapshot for fleet_ssh_command_output_distinct_hashes.
func BenchmarkDriftRows(b *testing.B) {
	s := benchStore(b, 10_000, true).Snapshot()
	b.ReportAllocs()
	for b.Loop() {
		if rows := computeDrift(s.Targets); len(rows) == 0 {
			b.Fatal("no drift rows")
		}
	}
}
