package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

func TestHostAddrs(t *testing.T) {
	tests := []struct {
		name    string
		base    string
		n       int
		want    []string
		wantErr string
	}{
		{name: "simple", base: "127.10.0.1", n: 3, want: []string{"127.10.0.1", "127.10.0.2", "127.10.0.3"}},
		{
			name: "skips .255 and .0", base: "127.10.0.253", n: 4,
			want: []string{"127.10.0.253", "127.10.0.254", "127.10.1.1", "127.10.1.2"},
		},
		{name: "base on .0 is skipped", base: "127.10.1.0", n: 1, want: []string{"127.10.1.1"}},
		{name: "last addresses of 127/8", base: "127.255.255.253", n: 2, want: []string{"127.255.255.253", "127.255.255.254"}},
		{name: "overflows 127/8", base: "127.255.255.253", n: 3, wantErr: "do not fit in 127.0.0.0/8"},
		{name: "not loopback", base: "10.0.0.1", n: 1, wantErr: "not in 127.0.0.0/8"},
		{name: "ipv6", base: "::1", n: 1, wantErr: "not in 127.0.0.0/8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addrs, err := hostAddrs(netip.MustParseAddr(tc.base), tc.n)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := make([]string, len(addrs))
			for i, a := range addrs {
				got[i] = a.String()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("addresses (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuildFleet(t *testing.T) {
	base := fleetOptions{N: 100, Base: netip.MustParseAddr("127.10.0.1"), Port: 2222, Seed: "s"}
	with := func(f func(o *fleetOptions)) fleetOptions {
		o := base
		f(&o)
		return o
	}
	tests := []struct {
		name       string
		opts       fleetOptions
		wantCounts map[hostClass]int
		wantDrift  int
		wantErr    string
	}{
		{name: "all healthy", opts: base, wantCounts: map[hostClass]int{classHealthy: 100}},
		{
			name: "every class",
			opts: with(func(o *fleetOptions) {
				o.Fractions = [numClasses]float64{classRefused: 0.1, classTarpit: 0.05, classAuthReject: 0.2, classHang: 0.01, classSlow: 0.3}
				o.Drift = 0.25
			}),
			wantCounts: map[hostClass]int{
				classHealthy: 34, classRefused: 10, classTarpit: 5, classAuthReject: 20, classHang: 1, classSlow: 30,
			},
			wantDrift: 25,
		},
		{
			name:       "fractions summing to one leave no healthy host",
			opts:       with(func(o *fleetOptions) { o.Fractions = [numClasses]float64{classRefused: 0.7, classSlow: 0.3} }),
			wantCounts: map[hostClass]int{classRefused: 70, classSlow: 30},
		},
		{
			name: "rounding never exceeds N",
			opts: with(func(o *fleetOptions) {
				o.N = 7
				o.Fractions = [numClasses]float64{classRefused: 0.2, classTarpit: 0.2, classAuthReject: 0.2, classHang: 0.2, classSlow: 0.2}
			}),
			// Cumulative boundaries round(1.4)=1, 3, 4, 6, 7.
			wantCounts: map[hostClass]int{classRefused: 1, classTarpit: 2, classAuthReject: 1, classHang: 2, classSlow: 1},
		},
		{
			name:    "fractions above one",
			opts:    with(func(o *fleetOptions) { o.Fractions = [numClasses]float64{classRefused: 0.6, classHang: 0.5} }),
			wantErr: "add up to",
		},
		{
			name:    "negative fraction",
			opts:    with(func(o *fleetOptions) { o.Fractions[classTarpit] = -0.1 }),
			wantErr: "tarpit",
		},
		{name: "drift above one", opts: with(func(o *fleetOptions) { o.Drift = 1.5 }), wantErr: "--drift"},
		{name: "no hosts", opts: with(func(o *fleetOptions) { o.N = 0 }), wantErr: "--n"},
		{name: "bad port", opts: with(func(o *fleetOptions) { o.Port = 70000 }), wantErr: "--port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hosts, err := buildFleet(&tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[hostClass]int{}
			drift := 0
			for _, h := range hosts {
				got[h.Class]++
				if h.Drift {
					drift++
				}
			}
			if diff := cmp.Diff(tc.wantCounts, got); diff != "" {
				t.Errorf("class counts (-want +got):\n%s", diff)
			}
			if drift != tc.wantDrift {
				t.Errorf("drifted hosts = %d, want %d", drift, tc.wantDrift)
			}
			again, err := buildFleet(&tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(hosts, again, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("second build differs (-first +second):\n%s", diff)
			}
		})
	}
}

func TestBuildFleetDependsOnSeed(t *testing.T) {
	o := fleetOptions{N: 200, Base: netip.MustParseAddr("127.10.0.1"), Port: 2222, Seed: "a", Drift: 0.1}
	o.Fractions[classRefused] = 0.1
	classesOf := func(seed string) (string, string) {
		o.Seed = seed
		hosts, err := buildFleet(&o)
		if err != nil {
			t.Fatal(err)
		}
		var c, d strings.Builder
		for _, h := range hosts {
			c.WriteString(h.Class.String()[:1])
			if h.Drift {
				d.WriteByte('d')
			} else {
				d.WriteByte('.')
			}
		}
		return c.String(), d.String()
	}
	ca, da := classesOf("a")
	cb, db := classesOf("b")
	if ca == cb {
		t.Errorf("classes do not depend on the seed: %s", ca)
	}
	if da == db {
		t.Errorf("drift does not depend on the seed: %s", da)
	}
	if ca == strings.Repeat("h", 180)+strings.Repeat("r", 20) {
		t.Errorf("refused hosts are simply the last ones, not hash-chosen")
	}
}

func TestHostSigner(t *testing.T) {
	a1, a2 := netip.MustParseAddr("127.10.0.1"), netip.MustParseAddr("127.10.0.2")
	tests := []struct {
		name      string
		seed      string
		addr      netip.Addr
		otherSeed string
		otherAddr netip.Addr
	}{
		{name: "different address", seed: "s", addr: a1, otherSeed: "s", otherAddr: a2},
		{name: "different seed", seed: "s", addr: a1, otherSeed: "t", otherAddr: a1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hostSigner(tc.seed, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			// The documented derivation, so other tools can reproduce it.
			sum := sha256.Sum256([]byte(tc.seed + tc.addr.String()))
			want, err := ssh.NewPublicKey(ed25519.NewKeyFromSeed(sum[:]).Public())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.PublicKey().Marshal(), want.Marshal()) {
				t.Errorf("host key is not ed25519.NewKeyFromSeed(sha256(seed||addr))")
			}
			other, err := hostSigner(tc.otherSeed, tc.otherAddr)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got.PublicKey().Marshal(), other.PublicKey().Marshal()) {
				t.Errorf("%s/%s and %s/%s share a host key", tc.seed, tc.addr, tc.otherSeed, tc.otherAddr)
			}
		})
	}
}

func TestKnownHostsLine(t *testing.T) {
	signer, err := hostSigner("s", netip.MustParseAddr("127.10.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	tests := []struct {
		name string
		port int
		want string
	}{
		{name: "port 22", port: 22, want: "127.10.0.1 " + key},
		{name: "other port", port: 2222, want: "[127.10.0.1]:2222 " + key},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := knownHostsLine(netip.MustParseAddr("127.10.0.1"), tc.port, signer.PublicKey()); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCommandOutput(t *testing.T) {
	plain := &simHost{Addr: netip.MustParseAddr("127.10.0.1")}
	other := &simHost{Addr: netip.MustParseAddr("127.10.0.2")}
	drifted := &simHost{Addr: netip.MustParseAddr("127.10.0.3"), Drift: true}
	out := func(h *simHost, cmd string) string {
		b, _ := commandOutput("seed", h, cmd)
		return string(b)
	}
	tests := []struct {
		name       string
		host       *simHost
		cmd        string
		wantOut    string
		wantLen    int // checked instead of wantOut when > 0
		wantStatus uint32
	}{
		{name: "same on every healthy host", host: other, cmd: "check", wantOut: out(plain, "check")},
		{name: "depends on the command", host: plain, cmd: "check", wantOut: "ok\n" + cmdDigest("seed", false, "check") + "\n"},
		{name: "hostname", host: plain, cmd: "hostname", wantOut: "127.10.0.1\n"},
		{name: "exit status", host: plain, cmd: "exit 3", wantOut: "", wantStatus: 3},
		{name: "exit status out of range is a plain command", host: plain, cmd: "exit 300", wantOut: out(plain, "exit 300")},
		{name: "bytes", host: plain, cmd: "bytes 1000", wantLen: 1000},
		{name: "drifted host", host: drifted, cmd: "check", wantOut: "ok\n" + cmdDigest("seed", true, "check") + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, status := commandOutput("seed", tc.host, tc.cmd)
			if tc.wantLen > 0 {
				if len(got) != tc.wantLen {
					t.Errorf("len(output) = %d, want %d", len(got), tc.wantLen)
				}
			} else if string(got) != tc.wantOut {
				t.Errorf("output = %q, want %q", got, tc.wantOut)
			}
			if status != tc.wantStatus {
				t.Errorf("status = %d, want %d", status, tc.wantStatus)
			}
		})
	}
	if out(plain, "check") == out(drifted, "check") {
		t.Error("drifted output equals healthy output")
	}
	if out(plain, "check") == out(plain, "check2") {
		t.Error("output does not depend on the command")
	}
}
