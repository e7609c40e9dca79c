package fileload

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

const (
	// MaxSecretSize caps private key, certificate, password and passphrase
	// files (1 MiB). The largest of them, an RSA-16384 key in PEM, is
	// about 12 KiB, so the cap only ever stops a file that is not what its
	// setting says.
	MaxSecretSize = 1 << 20
	// MaxKnownHostsSize caps known_hosts files (64 MiB), room for several
	// hundred thousand hosts with a few keys each.
	MaxKnownHostsSize = 64 << 20
)

// ErrNotRegular is the cause of the error Read returns for a path that
// resolves to anything but a regular file.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is the cause of the error Read returns for a file larger
// than the cap it was read with.
var ErrTooLarge = errors.New("file too large")

// Read returns the contents of the regular file at path, refusing one
// larger than limit bytes. Symbolic links are followed; what they lead to
// must be a regular file. Errors are *fs.PathError values naming path,
// whose cause wraps ErrNotRegular or ErrTooLarge or is the operating
// system's error, so a caller can name the setting and show the cause. The
// contents never appear in an error.
func Read(path string, limit int64) ([]byte, error) {
	// Refusing by stat first means a device is never opened at all:
	// opening some (terminals, tape drives) has effects of its own.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := check(path, fi, limit); err != nil {
		return nil, err
	}
	return readOpened(path, limit)
}

// readOpened is Read without the stat before opening: the checks that
// hold whatever path names by the time it is opened.
func readOpened(path string, limit int64) ([]byte, error) {
	// The path may be swapped for something else between that stat and
	// the open, so the open itself must not block either: O_NONBLOCK makes
	// opening a FIFO without writer return at once, and O_NOCTTY keeps a
	// terminal from becoming the process's controlling terminal. The fstat
	// of the opened descriptor below is what decides.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		// Opening a socket fails (ENXIO on Linux) with a message that
		// does not say why; its type does.
		if fi, serr := os.Stat(path); serr == nil && !fi.Mode().IsRegular() {
			return nil, check(path, fi, limit)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := check(path, fi, limit); err != nil {
		return nil, err
	}
	// The size fstat saw can be stale by the time the file is read: a file
	// that grows meanwhile is cut off one byte past the cap and refused,
	// so no more than limit+1 bytes are ever held.
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: pathCause(err)}
	}
	if int64(len(b)) > limit {
		clear(b)
		return nil, tooLarge(path, limit)
	}
	return b, nil
}

// Regular returns the error Read returns for the file at path, whose
// FileInfo is fi, when it is not a regular file, and nil when it is. It is
// for code that opens a config-named file for writing.
func Regular(path string, fi fs.FileInfo) error {
	if fi.Mode().IsRegular() {
		return nil
	}
	return check(path, fi, 0)
}

// check refuses fi unless it describes a regular file of at most limit
// bytes.
func check(path string, fi fs.FileInfo, limit int64) error {
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: it is %s", ErrNotRegular, kind(fi.Mode()))}
	}
	if fi.Size() > limit {
		return tooLarge(path, limit)
	}
	return nil
}

// tooLarge is the error for a file over limit bytes.
func tooLarge(path string, limit int64) error {
	return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: larger than %s", ErrTooLarge, size(limit))}
}

// kind names the file type of a mode that is not a regular file.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	default:
		return "a file of mode " + m.String()
	}
}

// size renders a byte count as the caps are documented: in MiB when it is
// a whole number of them.
func size(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// pathCause strips the *fs.PathError a read error may already carry, so
// the path is not named twice.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
