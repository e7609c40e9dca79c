package ssh

import (
	"context"
	"strings"
	"testing"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
)

func TestFirstLineWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"nothing", nil, ""},
		{"one line", []string{"permission denied\n"}, "permission denied"},
		{"second line dropped", []string{"first\nsecond\n"}, "first"},
		{"line split over writes", []string{"fir", "st", "\nsecond"}, "first"},
		{"no newline", []string{"partial"}, "partial"},
		{"capped", []string{strings.Repeat("y", 300) + "\n"}, strings.Repeat("y", maxStderrLine)},
		{"capped over writes", []string{strings.Repeat("y", 200), strings.Repeat("z", 200)}, strings.Repeat("y", 200) + strings.Repeat("z", 56)},
		{"control characters", []string{"a\x1b[31mred\x07\tb\r\n"}, "a\uFFFD[31mred\uFFFD b"},
		{"invalid utf-8", []string{"bad \xff byte"}, "bad \uFFFD byte"},
		{"rune cut by the cap", []string{strings.Repeat("y", maxStderrLine-1) + "é"}, strings.Repeat("y", maxStderrLine-1) + "\uFFFD"},
		{"bidi override", []string{"a\u202eb"}, "a\uFFFDb"},
		{"surrounding space", []string{"  msg  \n"}, "msg"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var w firstLineWriter
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
				}
			}
			if got := w.line(); got != tc.want {
				t.Errorf("line() = %q, want %q", got, tc.want)
			}
			if len(w.buf) > maxStderrLine {
				t.Errorf("kept %d bytes, want at most %d", len(w.buf), maxStderrLine)
			}
		})
	}
}

func TestSSHProbeStderrFirstLine(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	tests := []struct {
		run  string
		want string
	}{
		{"frobnicate now", `unknown command "frobnicate now"`},
		{"errflood 100000", strings.Repeat("x", maxStderrLine)},
		{"echo quiet", ""},
	}
	for _, tc := range tests {
		t.Run(tc.run, func(t *testing.T) {
			res := p.Probe(context.Background(), testTarget(f.srv.Port, f.cfg(config.Command{Name: "c", Run: tc.run})))
			if res.SSH == nil || len(res.SSH.Commands) != 1 {
				t.Fatalf("no command result: %+v", res)
			}
			if got := res.SSH.Commands[0].StderrFirstLine; got != tc.want {
				t.Errorf("StderrFirstLine = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSSHProbeKeepOutput(t *testing.T) {
	f := newFixture(t, sshserver.TestOptions{})
	p := newProber(t)
	tests := []struct {
		name      string
		run       string
		keep, max int64
		want      string
	}{
		{"nothing kept by default", "echo hello", 0, 0, ""},
		{"whole output", "echo hello", 1024, 0, "hello\n"},
		{"first bytes", "printf 123456789", 4, 0, "1234"},
		{"never past max_output_bytes", "printf 123456789", 100, 3, "123"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.cfg(config.Command{Name: "c", Run: tc.run})
			cfg.KeepOutputBytes, cfg.MaxOutputBytes = tc.keep, tc.max
			res := p.Probe(context.Background(), testTarget(f.srv.Port, cfg))
			if res.SSH == nil || len(res.SSH.Commands) != 1 {
				t.Fatalf("no command result: %+v", res)
			}
			if got := string(res.SSH.Commands[0].Output); got != tc.want {
				t.Errorf("Output = %q, want %q", got, tc.want)
			}
		})
	}
}
