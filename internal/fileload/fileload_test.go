package fileload

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// quick bounds every Read in these tests: none may wait for anything.
const quick = 2 * time.Second

// readers are the two layers of Read, tested alike: Read itself, whose
// stat refuses most non-regular files before they are opened, and
// readOpened, the checks on the opened descriptor that must hold alone
// when the path is swapped between that stat and the open.
var readers = []struct {
	name string
	read func(string, int64) ([]byte, error)
}{
	{"Read", Read},
	{"readOpened", readOpened},
}

// readQuickly calls Read and fails the test when it does not return within
// quick. A Read stuck opening a FIFO is released by opening the FIFO for
// writing, so the goroutine does not outlive the test.
func readQuickly(t *testing.T, read func(string, int64) ([]byte, error), path string, limit int64) ([]byte, error) {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		b, err := read(path, limit)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		if d := time.Since(start); d > quick {
			t.Errorf("Read(%s) took %v, want under %v", path, d, quick)
		}
		return r.b, r.err
	case <-time.After(quick):
		t.Errorf("Read(%s) still blocked after %v", path, quick)
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
		r := <-done
		return r.b, r.err
	}
}

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mkfifo(t *testing.T, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func symlink(t *testing.T, target, path string) string {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// unreadable returns a regular file this process cannot open for reading.
// A file of mode 0000 does that for everyone but a process with
// CAP_DAC_OVERRIDE (root, usually). For such a process it falls back to a
// write-only sysctl file: procfs checks the mode bits of /proc/sys entries
// against root too, so root cannot read a 0200 one. Without either the
// case is skipped.
func unreadable(t *testing.T, dir string) string {
	t.Helper()
	p := writeFile(t, filepath.Join(dir, "mode0000"), []byte("secret\n"))
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		return p
	}
	f.Close()
	for _, p := range []string{"/proc/sys/vm/compact_memory", "/proc/sys/net/ipv4/route/flush"} {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if f, err := os.Open(p); err == nil {
			f.Close()
			continue
		}
		return p
	}
	t.Skip("this process can read a mode 0000 file and no write-only sysctl file is available")
	return ""
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	content := []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
	regular := writeFile(t, filepath.Join(dir, "regular"), content)
	atCap := bytes.Repeat([]byte{'k'}, MaxSecretSize)
	overCap := append(bytes.Clone(atCap), 'k')
	fifo := mkfifo(t, filepath.Join(dir, "fifo"))

	// A FIFO with a writer holding it open: open succeeds even without
	// O_NONBLOCK, and a read would block forever, as nothing is written.
	heldFIFO := mkfifo(t, filepath.Join(dir, "held-fifo"))
	rd, err := os.OpenFile(heldFIFO, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	wr, err := os.OpenFile(heldFIFO, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wr.Close() })

	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })

	tests := []struct {
		name  string
		path  string
		limit int64
		want  []byte
		// wantErr is the error the result must match with errors.Is;
		// wantText are substrings of its message besides the path.
		wantErr  error
		wantText []string
	}{
		{name: "regular file", path: regular, limit: MaxSecretSize, want: content},
		{name: "empty file", path: writeFile(t, filepath.Join(dir, "empty"), nil), limit: MaxSecretSize, want: []byte{}},
		{name: "at cap", path: writeFile(t, filepath.Join(dir, "at-cap"), atCap), limit: MaxSecretSize, want: atCap},
		{name: "over cap", path: writeFile(t, filepath.Join(dir, "over-cap"), overCap), limit: MaxSecretSize, wantErr: ErrTooLarge, wantText: []string{"larger than 1 MiB"}},
		{name: "over the known_hosts cap", path: writeFile(t, filepath.Join(dir, "kh"), content), limit: 16, wantErr: ErrTooLarge, wantText: []string{"larger than 16 bytes"}},
		{name: "fifo without writer", path: fifo, limit: MaxSecretSize, wantErr: ErrNotRegular, wantText: []string{"named pipe (FIFO)"}},
		{name: "fifo held open by a writer", path: heldFIFO, limit: MaxSecretSize, wantErr: ErrNotRegular, wantText: []string{"named pipe (FIFO)"}},
		{name: "/dev/zero", path: "/dev/zero", limit: MaxSecretSize, wantErr: ErrNotRegular, wantText: []string{"character device"}},
		{name: "/dev/null", path: "/dev/null", limit: MaxSecretSize, wantErr: ErrNotRegular, wantText: []string{"character device"}},
		{name: "directory", path: dir, limit: MaxSecretSize, wantErr: ErrNotRegular, wantText: []string{"directory"}},
		{name: "socket", path: sock, limit: MaxSecretSize, wantErr: ErrNotRegular, wantText: []string{"socket"}},
		{name: "symlink to a regular file", path: symlink(t, regular, filepath.Join(dir, "link-regular")), limit: MaxSecretSize, want: content},
		{name: "symlink to a fifo", path: symlink(t, fifo, filepath.Join(dir, "link-fifo")), limit: MaxSecretSize, wantErr: ErrNotRegular, wantText: []string{"named pipe (FIFO)"}},
		{name: "symlink to /dev/zero", path: symlink(t, "/dev/zero", filepath.Join(dir, "link-zero")), limit: MaxSecretSize, wantErr: ErrNotRegular, wantText: []string{"character device"}},
		{name: "dangling symlink", path: symlink(t, filepath.Join(dir, "gone"), filepath.Join(dir, "link-gone")), limit: MaxSecretSize, wantErr: fs.ErrNotExist},
		{name: "missing file", path: filepath.Join(dir, "missing"), limit: MaxSecretSize, wantErr: fs.ErrNotExist},
		{name: "path through a file", path: filepath.Join(regular, "x"), limit: MaxSecretSize, wantErr: syscall.ENOTDIR},
	}
	for _, r := range readers {
		for _, tc := range tests {
			t.Run(r.name+"/"+tc.name, func(t *testing.T) {
				b, err := readQuickly(t, r.read, tc.path, tc.limit)
				if tc.wantErr == nil {
					if err != nil {
						t.Fatalf("Read(%s) = %v, want its contents", tc.path, err)
					}
					if !bytes.Equal(b, tc.want) {
						t.Fatalf("Read(%s) returned %d bytes, want %d", tc.path, len(b), len(tc.want))
					}
					return
				}
				if b != nil {
					t.Errorf("Read(%s) returned %d bytes along with its error", tc.path, len(b))
				}
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Read(%s) = %v, want %v", tc.path, err, tc.wantErr)
				}
				var pe *fs.PathError
				if !errors.As(err, &pe) || pe.Path != tc.path {
					t.Errorf("error %v is not a *fs.PathError naming %s", err, tc.path)
				}
				for _, w := range append([]string{tc.path}, tc.wantText...) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
			})
		}
	}

	t.Run("unreadable file", func(t *testing.T) {
		p := unreadable(t, dir)
		_, err := readQuickly(t, Read, p, MaxSecretSize)
		if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), p) {
			t.Fatalf("Read(%s) = %v, want a permission error naming the file", p, err)
		}
	})
}

// TestReadBoundsWhatStatMisses reads a regular file whose size fstat does
// not know: procfs reports 0 bytes for /proc/self/status although reading
// it yields more than a kilobyte, as a file growing between fstat and read
// would. Only the bounded read can refuse it, and must.
func TestReadBoundsWhatStatMisses(t *testing.T) {
	const p = "/proc/self/status"
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Skipf("%s is not a zero-sized regular file here (%v)", p, err)
	}
	if _, err := readQuickly(t, Read, p, 16); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), p) {
		t.Fatalf("Read(%s, 16) = %v, want the too-large error naming the file", p, err)
	}
	b, err := readQuickly(t, Read, p, MaxSecretSize)
	if err != nil || !bytes.Contains(b, []byte("Name:")) {
		t.Fatalf("Read(%s) = %q, %v; want its contents", p, b, err)
	}
}
