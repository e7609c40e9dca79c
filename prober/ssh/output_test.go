package ssh

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

func TestOutputHasher(t *testing.T) {
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	ignore := []*regexp.Regexp{regexp.MustCompile(`uptime is`), regexp.MustCompile(`^Last`)}
	tests := []struct {
		name      string
		lines     bool
		ignore    []*regexp.Regexp
		label     bool
		chunks    []string
		wantHash  string
		wantBytes int64
		wantValue string
	}{
		{"raw is the sha256sum of the bytes", false, nil, true, []string{"a\r\nb", "\nc"}, sum("a\r\nb\nc"), 6, "a"},
		{
			"ignore_lines drop lines and CRs", false, ignore, true,
			[]string{"R1 uptime is 1 day\r\nVer", "sion 15\r\nLast reload\r\nend"},
			sum("Version 15\nend\n"), 15, "Version 15",
		},
		{"line mode without patterns", true, nil, false, []string{"x\r\n\r\ny"}, sum("x\n\ny\n"), 5, ""},
		{"empty output", false, ignore, true, nil, sum(""), 0, ""},
		{
			"value is sanitised and bounded", false, nil, true,
			[]string{"\x1b[1m" + strings.Repeat("é", 100) + "\n"},
			sum("\x1b[1m" + strings.Repeat("é", 100) + "\n"), 205, "[1m" + strings.Repeat("é", 62),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newOutputHasher(tc.lines, tc.ignore, tc.label)
			for _, c := range tc.chunks {
				if n, err := h.Write([]byte(c)); n != len(c) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			short, full, n, value := h.sum()
			if full != tc.wantHash || n != tc.wantBytes || value != tc.wantValue {
				t.Errorf("got %s %d %q, want %s %d %q", full, n, value, tc.wantHash, tc.wantBytes, tc.wantValue)
			}
			if short == 0 {
				t.Error("short hash is zero")
			}
		})
	}
}

func TestOutputHasherLimit(t *testing.T) {
	h := newOutputHasher(false, nil, false)
	h.max = 4
	_, _ = h.Write([]byte("12"))
	_, _ = h.Write([]byte("345"))
	_, full, n, _ := h.sum()
	want := sha256.Sum256([]byte("1234"))
	if full != hex.EncodeToString(want[:]) || n != 4 || h.raw != 5 {
		t.Errorf("got %s %d raw %d, want the hash of the first 4 bytes", full, n, h.raw)
	}
}

func TestFirstLine(t *testing.T) {
	f := &firstLine{limit: 8}
	_, _ = f.Write([]byte("ab\x00c"))
	_, _ = f.Write([]byte("defghijk\nsecond line\n"))
	if got := f.String(); got != "ab cdefg" {
		t.Errorf("first line %q", got)
	}
	g := &firstLine{limit: 256}
	_, _ = g.Write([]byte("only\nmore"))
	if got := g.String(); got != "only" {
		t.Errorf("first line %q", got)
	}
}

func TestScreen(t *testing.T) {
	var s screen
	s.write([]byte("line one\r\n\x1b[?2004h --More-- \b\b\b\b\b\b\b\b\b\b          \b\b\b\b\b\b\b\b\b\bnext\r\n\x1b]0;title\x07R1#"))
	got := make([]string, 0, len(s.lines))
	for _, l := range s.lines {
		got = append(got, string(l))
	}
	if strings.Join(got, "|") != "line one|next" || string(s.current()) != "R1#" {
		t.Errorf("lines %q, current %q", got, s.current())
	}
}
