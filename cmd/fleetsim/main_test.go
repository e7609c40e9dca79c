package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// asMainEnv makes the test binary behave as fleetsim itself, so that
// serveWorkers can re-execute it as a worker.
const asMainEnv = "FLEETSIM_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	testutil.Main(m)
}

// testFleet returns fleet options on a random 127/8 block and port, so that
// concurrent test runs (or a fleetsim left running) do not collide.
func testFleet(n int) fleetOptions {
	return fleetOptions{
		N:    n,
		Base: netip.AddrFrom4([4]byte{127, byte(100 + rand.IntN(100)), byte(rand.IntN(256)), 1}),
		Port: 20000 + rand.IntN(20000),
		Seed: fmt.Sprintf("test-%d", rand.Uint64()),
	}
}

// lineWriter delivers every line written to it on a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func newLineWriter() *lineWriter { return &lineWriter{lines: make(chan string, 64)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			// Keep the partial line for the next write.
			w.buf.Reset()
			w.buf.WriteString(line)
			return len(p), nil
		}
		w.lines <- strings.TrimSuffix(line, "\n")
	}
}

// genDir runs gen for fo in a temporary directory and returns it.
func genDir(t *testing.T, fo fleetOptions) string {
	t.Helper()
	dir := t.TempDir()
	err := gen(&genOptions{
		Fleet: fo, Out: dir, SetName: "sim", User: "fleet",
		Interval: 30 * time.Second, Timeout: 10 * time.Second, Concurrency: 8,
		Commands: []genCommand{{Name: "check", Run: "check"}},
	})
	if err != nil {
		t.Fatalf("gen: %v", err)
	}
	return dir
}

// clientFiles reads what gen wrote for the client: its signer, the public
// key to authorize and a known_hosts callback.
func clientFiles(t *testing.T, dir string) (ssh.Signer, ssh.PublicKey, ssh.HostKeyCallback) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, privateKeyName))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatalf("parse %s: %v", privateKeyName, err)
	}
	b, err = os.ReadFile(filepath.Join(dir, publicKeyName))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatalf("parse %s: %v", publicKeyName, err)
	}
	cb, err := knownhosts.New(filepath.Join(dir, knownHostsName))
	if err != nil {
		t.Fatalf("parse %s: %v", knownHostsName, err)
	}
	return signer, pub, cb
}

// startServe runs serve in the background until the returned stop function
// (also registered as cleanup) is called; it waits for "ready".
func startServe(t *testing.T, opts *serveOptions) (stop func()) {
	t.Helper()
	ready := newLineWriter()
	opts.Ready = ready
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, opts) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("serve did not return within 5s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case l := <-ready.lines:
		if want := fmt.Sprintf("ready %d", opts.Fleet.N); l != want {
			t.Fatalf("ready line = %q, want %q", l, want)
		}
	case err := <-errc:
		cancel()
		t.Fatalf("serve returned before ready: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("serve not ready within 5s")
	}
	return stop
}

// testLogger logs to the test's output, shown only on failure or -v.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// readAllLines is a helper for files with one entry per line.
func readAllLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return lines
}
