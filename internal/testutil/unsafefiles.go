package testutil

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// UnsafeFile is a path a config may name that a plain read would block on
// or be exhausted by, and the words a loader's refusal must contain.
type UnsafeFile struct {
	Name, Path, Want string
}

// UnsafeFiles creates one of each kind in dir: a FIFO without writer, a
// symlink to /dev/zero, a sparse file of limit+1 bytes and a directory. A
// limit of 0 leaves out the oversized file.
func UnsafeFiles(t testing.TB, dir string, limit int64) []UnsafeFile {
	t.Helper()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "subdir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	files := []UnsafeFile{
		{"fifo", fifo, "named pipe (FIFO)"},
		{"dev zero", zero, "character device"},
		{"directory", sub, "directory"},
	}
	if limit > 0 {
		huge := filepath.Join(dir, "huge")
		if err := os.WriteFile(huge, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(huge, limit+1); err != nil {
			t.Fatal(err)
		}
		files = append(files, UnsafeFile{"over the cap", huge, "larger than"})
	}
	return files
}

// Quickly runs fn and fails the test when it takes longer than d. A call
// stuck opening one of fifos, for reading or for writing, is released by
// opening it the other way, so no goroutine outlives the test.
func Quickly[T any](t testing.TB, d time.Duration, fifos []string, fn func() T) T {
	t.Helper()
	done := make(chan T, 1)
	start := time.Now()
	go func() { done <- fn() }()
	select {
	case v := <-done:
		if took := time.Since(start); took > d {
			t.Errorf("took %v, want under %v", took, d)
		}
		return v
	case <-time.After(d):
		t.Errorf("still blocked after %v", d)
		for _, p := range fifos {
			if w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				_ = w.Close()
			}
			if r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
				_ = r.Close()
			}
		}
		return <-done
	}
}
