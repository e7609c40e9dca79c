package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// serveArgs returns the serve command line for fo.
func serveArgs(fo fleetOptions, keyFile string) []string {
	return []string{
		"serve", "--log.level=debug", "--n=" + strconv.Itoa(fo.N), "--base=" + fo.Base.String(),
		"--port=" + strconv.Itoa(fo.Port), "--seed=" + fo.Seed, "--authorized-key=" + keyFile,
	}
}

func TestServeWorkers(t *testing.T) {
	// The workers are this test binary, turned into fleetsim by TestMain.
	t.Setenv(asMainEnv, "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fo := testFleet(7)
	dir := genDir(t, fo)
	signer, _, hostKeys := clientFiles(t, dir)
	keyFile := filepath.Join(dir, publicKeyName)
	fleet, err := buildFleet(&fo)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		args      []string
		workers   int
		wantReady bool
		wantErr   string
	}{
		{name: "three workers serve the whole fleet", args: serveArgs(fo, keyFile), workers: 3, wantReady: true},
		{
			name:    "a failing worker fails the parent",
			args:    serveArgs(fo, filepath.Join(dir, "missing.pub")),
			workers: 2,
			wantErr: "exit status 1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stdout := newLineWriter()
			var stderr testutil.Buffer
			errc := make(chan error, 1)
			go func() {
				errc <- serveWorkers(ctx, workerSpec{
					Exe: exe, Args: tc.args, Workers: tc.workers,
					Stdout: stdout, Stderr: &stderr, Logger: testLogger(t),
				})
			}()
			defer func() {
				if t.Failed() {
					t.Logf("workers' stderr:\n%s", stderr.String())
				}
			}()

			if !tc.wantReady {
				select {
				case err := <-errc:
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Errorf("err = %v, want containing %q", err, tc.wantErr)
					}
				case <-time.After(10 * time.Second):
					cancel()
					<-errc
					t.Error("serveWorkers did not fail")
				}
				return
			}

			select {
			case l := <-stdout.lines:
				if want := "ready " + strconv.Itoa(fo.N); l != want {
					t.Errorf("first line = %q, want %q", l, want)
				}
			case err := <-errc:
				t.Fatalf("serveWorkers returned before ready: %v", err)
			case <-time.After(10 * time.Second):
				cancel()
				<-errc
				t.Fatal("workers not ready within 10s")
			}
			// Every host, whichever worker serves it, answers with its address.
			cl := &client{port: fo.Port, signer: signer, hostKeys: hostKeys}
			for _, h := range fleet {
				got, err := cl.output(t, h.Addr, "hostname")
				if err != nil || got != h.Addr.String()+"\n" {
					t.Errorf("hostname on %s = %q, %v", h.Addr, got, err)
				}
			}
			if !strings.Contains(stderr.String(), "shard=2") {
				t.Errorf("no log line from shard 2")
			}

			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("serveWorkers after cancel: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("workers did not stop within 10s of SIGTERM")
			}
			if n := strings.Count(stderr.String(), "stopped serving simulated hosts"); n != tc.workers {
				t.Errorf("%d workers logged a clean stop, want %d", n, tc.workers)
			}
		})
	}
}

func TestParseReady(t *testing.T) {
	tests := []struct {
		line   string
		want   int
		wantOK bool
	}{
		{"ready 10", 10, true},
		{"ready x", 0, false},
		{"ready", 0, false},
		{"something else", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			got, ok := parseReady(tc.line)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("parseReady(%q) = %d, %v; want %d, %v", tc.line, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
