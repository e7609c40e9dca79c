package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadFileKinds checks what ReadFile (start, --config.check) and
// ReadRegularFile (reload) accept: a regular file both; a pipe with a
// writer that finishes only ReadFile; a FIFO without a writer, a writer
// that never finishes, a device and a directory neither, each with an
// error naming the file, and never a wait beyond the pipe timeout.
func TestReadFileKinds(t *testing.T) {
	old := pipeReadTimeout
	pipeReadTimeout = 500 * time.Millisecond
	t.Cleanup(func() { pipeReadTimeout = old })
	dir := t.TempDir()
	const body = "global:\n  interval: 30s\n"
	regular := filepath.Join(dir, "fleet.yml")
	if err := os.WriteFile(regular, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := func(t *testing.T) string {
		t.Helper()
		p := filepath.Join(t.TempDir(), "fifo.yml")
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// writer opens p for writing once a reader has it open, writes data,
	// and closes it unless hold is set, in which case it keeps the pipe
	// open until the test ends.
	writer := func(t *testing.T, p, data string, hold bool) {
		t.Helper()
		done := make(chan struct{})
		release := make(chan struct{})
		t.Cleanup(func() {
			// A refused read never opened the FIFO: a reader held open
			// here lets the writer's open return, wherever it has got to.
			r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
			close(release)
			<-done
			if err == nil {
				_ = r.Close()
			}
		})
		go func() {
			defer close(done)
			// Opening for writing blocks until the reader opens it.
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			_, _ = f.WriteString(data)
			if hold {
				<-release
			}
			_ = f.Close()
		}()
	}

	for _, tc := range []struct {
		name    string
		path    func(t *testing.T) string
		start   string // "" when ReadFile must succeed, else a part of its error
		reload  string // the same for ReadRegularFile
		maxWait time.Duration
	}{
		{name: "regular file", path: func(*testing.T) string { return regular }},
		{
			name:   "pipe with a writer",
			path:   func(t *testing.T) string { p := fifo(t); writer(t, p, body, false); return p },
			reload: "a reload reads a regular file only",
		},
		{
			name:   "fifo without a writer",
			path:   fifo,
			start:  "no process is writing to it",
			reload: "a reload reads a regular file only",
		},
		{
			name:    "pipe whose writer never finishes",
			path:    func(t *testing.T) string { p := fifo(t); writer(t, p, "global:\n", true); return p },
			start:   "did not reach its end within",
			reload:  "a reload reads a regular file only",
			maxWait: 5 * time.Second,
		},
		{name: "device", path: func(*testing.T) string { return "/dev/zero" }, start: "a character device", reload: "a character device"},
		{name: "directory", path: func(*testing.T) string { return dir }, start: "a directory", reload: "a directory"},
	} {
		for _, fn := range []struct {
			name string
			read func(string) ([]byte, error)
			want string
		}{{"ReadFile", ReadFile, tc.start}, {"ReadRegularFile", ReadRegularFile, tc.reload}} {
			t.Run(tc.name+"/"+fn.name, func(t *testing.T) {
				p := tc.path(t)
				start := time.Now()
				data, err := fn.read(p)
				if took, limit := time.Since(start), max(tc.maxWait, 2*time.Second); took > limit {
					t.Errorf("took %v, want at most %v", took, limit)
				}
				if fn.want == "" {
					if err != nil || string(data) != body {
						t.Fatalf("= %q, %v; want the file's contents", data, err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), fn.want) || !strings.Contains(err.Error(), p) {
					t.Fatalf("error %v, want one naming %s and saying %q", err, p, fn.want)
				}
			})
		}
	}
}
