package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleet-exporter/fleet_exporter/internal/testutil"
)

// guardConfig writes a config of one TCP set of n hosts on 127.0.0.1 ports
// that a listener owned by the test accepts, probed every interval, and
// returns its path and the port.
func guardConfig(t *testing.T, n int, interval string) (string, int) {
	t.Helper()
	port := testutil.TCPListener(t, "127.0.0.1")
	var hosts strings.Builder
	for i := range n {
		// Distinct loopback addresses, one listener port: 127.1.x.y:port
		// refuses, which is fine; the series exist all the same.
		if i > 0 {
			hosts.WriteString(", ")
		}
		if i == 0 {
			fmt.Fprintf(&hosts, `"127.0.0.1:%d"`, port)
			continue
		}
		fmt.Fprintf(&hosts, `"127.1.%d.%d:%d"`, i/250, i%250+1, port)
	}
	cfg := fmt.Sprintf(`
global:
  interval: %s
  timeout: 150ms
host_sets:
  - name: guard
    hosts: [%s]
    probes:
      tcp: {}
`, interval, hosts.String())
	return writeFile(t, t.TempDir(), "fleet.yml", cfg), port
}

// closedWithin reports whether the server closes c within d (a read returns
// EOF or a reset), draining anything it sends first.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

// TestHTTPTimeoutsCloseHeldConnections reproduces clients that sit on
// connections: an idle keep-alive connection and one that never finishes
// its headers are both closed by the server, and scrapes keep working.
func TestHTTPTimeoutsCloseHeldConnections(t *testing.T) {
	d := startDaemon(t, "--web.idle-timeout=500ms", "--web.read-header-timeout=500ms")

	idle, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := fmt.Fprintf(idle, "GET /-/healthy HTTP/1.1\r\nHost: %s\r\n\r\n", d.addr); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	slow, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := fmt.Fprintf(slow, "GET /metrics HTTP/1.1\r\nHost: %s\r\nX-Slow: ", d.addr); err != nil {
		t.Fatal(err)
	}

	if !closedWithin(idle, 5*time.Second) {
		t.Error("idle keep-alive connection still open 5s after a 500ms idle timeout")
	}
	if !closedWithin(slow, 5*time.Second) {
		t.Error("connection with unfinished headers still open 5s after a 500ms read-header timeout")
	}
	if code, _ := httpDo(t, "GET", "http://"+d.addr+"/metrics"); code != http.StatusOK {
		t.Errorf("scrape after the held connections: status %d", code)
	}
}

// TestSlowReaderKeepsItsResponse checks that the write timeout bounds a
// response's time without progress, not its whole length: a client that
// reads 3 MiB steadily over about three write timeouts gets all of it.
func TestSlowReaderKeepsItsResponse(t *testing.T) {
	const size = 3 << 20
	chunk := make([]byte, 64<<10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	const writeTimeout = time.Second
	srv := newHTTPServer(h, webLimits{readHeaderTimeout: time.Second, writeTimeout: writeTimeout, idleTimeout: time.Second},
		slog.New(slog.DiscardHandler), nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(smallSendBuffers{l}) }()
	defer func() {
		_ = srv.Close()
		<-served
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Small buffers on both ends, so that the server's writes wait on
	// this reader rather than fill kernel buffers at once, and a blocked
	// write resumes after a little was read (the kernel wakes a writer
	// when a third of its send buffer is free).
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(64 << 10)
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	buf := make([]byte, 256<<10)
	got := 0
	for {
		n, err := c.Read(buf)
		got += n
		if err != nil {
			break
		}
		// At most 64 KiB per read, ten reads a second: the whole response
		// takes about three write timeouts.
		time.Sleep(100 * time.Millisecond)
	}
	if took := time.Since(start); took < 3*writeTimeout/2 {
		t.Fatalf("read %d bytes in %v: the reader was not slow enough to test anything", got, took)
	}
	if got < size {
		t.Errorf("read %d bytes of a %d-byte body in %v: the response was cut off although the reader kept reading", got, size, time.Since(start))
	}
}

// smallSendBuffers gives every accepted TCP connection a 64 KiB send
// buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(64 << 10)
	}
	return c, err
}

// TestStuckReadersReleaseTheirSlots reproduces scrapers that request a
// large response and never read it: with every in-flight slot held, later
// requests got 503 until a restart. The server's write timeout must cut
// them off so that requests succeed again. The handler writes far more than
// socket buffers hold (64 MiB), so its writes surely block.
func TestStuckReadersReleaseTheirSlots(t *testing.T) {
	chunk := make([]byte, 1<<20)
	big := limitInFlight(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("small") != "" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		for range 64 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}), 2)
	const writeTimeout = time.Second
	srv := newHTTPServer(big, webLimits{readHeaderTimeout: time.Second, writeTimeout: writeTimeout, idleTimeout: time.Second},
		slog.New(slog.DiscardHandler), nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		_ = srv.Close()
		<-served
	}()
	addr := l.Addr().String()

	var stuck []net.Conn // held open, never read, until the test ends
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", addr); err != nil {
			t.Fatal(err)
		}
		stuck = append(stuck, c)
	}
	small := "http://" + addr + "/?small=1"
	start := time.Now()
	// While both are stuck, a third request is refused...
	waitFor(t, writeTimeout/2, func() bool {
		code, _, err := tryGet(small)
		return err == nil && code == http.StatusServiceUnavailable
	})
	// ...and once the write timeout has passed, requests work again though
	// the stuck clients still have not read their responses.
	waitFor(t, writeTimeout+3*time.Second, func() bool {
		code, _, err := tryGet(small)
		return err == nil && code == http.StatusOK
	})
	if took := time.Since(start); took < writeTimeout/2 {
		t.Errorf("slots freed after %v, before the write timeout could fire", took)
	}
	if len(stuck) != 2 {
		t.Fatalf("%d stuck readers", len(stuck))
	}
}

// TestConnectionLimit opens more connections than --web.max-connections:
// the extra ones are closed on accept, the process keeps its file
// descriptors for probing, and once the holders go, scrapes work.
func TestConnectionLimit(t *testing.T) {
	cfg, port := guardConfig(t, 1, "1s")
	d := startDaemon(t, "--config.file="+cfg, "--web.max-connections=4", "--web.read-header-timeout=30s")

	// The readiness check left a keep-alive connection open; drop it so
	// the test holds every slot itself.
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	var held []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(200 * time.Millisecond) // let the server see them
	extra, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closedWithin(extra, 3*time.Second) {
		t.Error("connection beyond --web.max-connections was not closed")
	}
	for _, c := range held {
		c.Close()
	}
	series := fmt.Sprintf(`fleet_probe_success{host="127.0.0.1:%d",port="%d",probe="tcp",set="guard"} 1`, port, port)
	waitFor(t, 5*time.Second, func() bool {
		// The server may not have seen the holders go yet, and then
		// closes this connection too.
		code, body, err := tryGet("http://" + d.addr + "/metrics")
		return err == nil && code == http.StatusOK && strings.Contains(body, series) &&
			!strings.Contains(body, "fleet_http_connections_rejected_total 0")
	})
}

// TestReloadRefusesCrossOrigin checks that a browser on another site cannot
// make a visitor's browser reload the config, while curl and same-origin
// requests can.
func TestReloadRefusesCrossOrigin(t *testing.T) {
	cfg, _ := guardConfig(t, 1, "1h")
	d := startDaemon(t, "--config.file="+cfg)
	base := "http://" + d.addr
	tests := []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"no browser headers", nil, http.StatusOK},
		{"same origin", map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"}, http.StatusOK},
		{"typed by the user", map[string]string{"Sec-Fetch-Site": "none"}, http.StatusOK},
		{"cross-site form", map[string]string{"Origin": "http://evil.invalid", "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"same-site other port", map[string]string{"Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
		{"foreign origin only", map[string]string{"Origin": "http://evil.invalid"}, http.StatusForbidden},
		{"null origin", map[string]string{"Origin": "null"}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", base+"/-/reload", strings.NewReader("x=1"))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

// TestSecurityHeaders checks the headers every response carries.
func TestSecurityHeaders(t *testing.T) {
	d := startDaemon(t)
	for _, path := range []string{"/", "/metrics", "/-/healthy", "/nope"} {
		resp, err := http.Get("http://" + d.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for h, want := range map[string]string{
			"X-Content-Type-Options":  "nosniff",
			"Content-Security-Policy": contentSecurityPolicy,
			"X-Frame-Options":         "DENY",
		} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("%s: %s = %q, want %q", path, h, got, want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q lacks frame-ancestors 'none'", path, csp)
		}
	}
}

// TestLimitInFlight checks the page bound: requests beyond n get 503 while
// n are being served, and are served again once they finish.
func TestLimitInFlight(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 3)
	h := limitInFlight(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "page")
	}), 2)
	srv := httptest.NewServer(h)
	defer srv.Close()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			resp, err := http.Get(srv.URL)
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	<-entered
	<-entered
	if code, _ := httpDo(t, "GET", srv.URL); code != http.StatusServiceUnavailable {
		t.Errorf("third request while two render: status %d, want 503", code)
	}
	close(release)
	wg.Wait()
	if code, body := httpDo(t, "GET", srv.URL); code != http.StatusOK || body != "page" {
		t.Errorf("after they finished: %d %q", code, body)
	}
}

// TestReloadLogsTargetChanges checks that a reload logs what it adds,
// removes and changes per set, and warns when a set loses every target (a
// config cut off by a partial write can still parse).
func TestReloadLogsTargetChanges(t *testing.T) {
	port := testutil.TCPListener(t, "127.0.0.1")
	cfgFor := func(hosts string, timeout string) string {
		return fmt.Sprintf(`
global:
  interval: 1h
host_sets:
  - name: keep
    hosts: [%s]
    timeout: %s
    probes:
      tcp: {port: %d}
  - name: gone
    hosts: [%s]
    probes:
      tcp: {port: %d}
`, hosts, timeout, port, hosts, port)
	}
	file := writeFile(t, t.TempDir(), "fleet.yml", cfgFor("127.0.0.1, 127.0.0.2, 127.0.0.3", "1s"))
	d := startDaemon(t, "--config.file="+file)

	// "keep": 127.0.0.2 and .3 removed, .4 added, .1 changed (timeout);
	// "gone": emptied by leaving only a host that is not there any more.
	cfg2 := fmt.Sprintf(`
global:
  interval: 1h
host_sets:
  - name: keep
    hosts: [127.0.0.1, 127.0.0.4]
    timeout: 2s
    probes:
      tcp: {port: %d}
`, port)
	if err := os.WriteFile(file, []byte(cfg2), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := httpDo(t, "POST", "http://"+d.addr+"/-/reload"); code != http.StatusOK {
		t.Fatalf("reload: %d %s", code, body)
	}
	logs := d.stderr.String()
	for _, want := range []string{
		`set=gone added=0 removed=3 changed=0 unchanged=0`,
		`removed_hosts="[127.0.0.1 127.0.0.2 127.0.0.3]"`,
		`set=keep added=1 removed=2 changed=1 unchanged=0`,
		`added_hosts=[127.0.0.4]`,
		`changed_hosts=[127.0.0.1]`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if !regexp.MustCompile(`level=WARN .*msg="Reload changes targets" .*set=gone `).MatchString(logs) {
		t.Errorf("a set that lost every target is not logged at warning level:\n%s", logs)
	}
}

// tryGet is httpDo for polling: an error is a result, not a failure.
func tryGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestPageFloodKeepsScrapesAndProbes reproduces a flood of status-page
// requests for a large set, each of which renders every host: with
// --web.max-page-requests at 1, pages beyond the one being rendered get
// 503 at once, while scrapes, which have their own bound, answer 200
// throughout and probing keeps its schedule.
func TestPageFloodKeepsScrapesAndProbes(t *testing.T) {
	if testing.Short() {
		t.Skip("load test; skipped with -short")
	}
	cfg, port := guardConfig(t, 3000, "2s")
	d := startDaemon(t, "--config.file="+cfg, "--web.max-page-requests=1")
	base := "http://" + d.addr
	lastRun := regexp.MustCompile(fmt.Sprintf(`fleet_probe_last_run_timestamp_seconds\{host="127\.0\.0\.1:%d",port="%d",probe="tcp",set="guard"\} ([0-9.e+]+)`, port, port))
	runAt := func() string {
		_, body, err := tryGet(base + "/metrics")
		if err != nil {
			return ""
		}
		if m := lastRun.FindStringSubmatch(body); m != nil {
			return m[1]
		}
		return ""
	}
	waitFor(t, 10*time.Second, func() bool { return runAt() != "" })
	before := runAt()

	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		codes          = map[int]int{}
		scrapeFailures []string
	)
	stop := make(chan struct{})
	scraped := make(chan int, 1)
	go func() {
		n := 0
		defer func() { scraped <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			code, _, err := tryGet(base + "/metrics")
			if err != nil || code != http.StatusOK {
				mu.Lock()
				scrapeFailures = append(scrapeFailures, fmt.Sprintf("%d %v", code, err))
				mu.Unlock()
			}
			n++
		}
	}()
	for range 40 {
		wg.Go(func() {
			for range 5 {
				code, _, err := tryGet(base + "/sets/guard")
				mu.Lock()
				if err != nil {
					code = -1
				}
				codes[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	if n := <-scraped; n == 0 {
		t.Error("no scrape ran during the page flood")
	}
	if len(scrapeFailures) > 0 {
		t.Errorf("scrapes failed during the page flood: %v", scrapeFailures)
	}
	if codes[http.StatusOK] == 0 || codes[http.StatusServiceUnavailable] == 0 || codes[http.StatusOK]+codes[http.StatusServiceUnavailable] != 200 {
		t.Errorf("page answers %v, want 200 pages each 200 or 503, both present", codes)
	}
	// The probe of the one listening host ran again after the flood began.
	waitFor(t, 10*time.Second, func() bool { r := runAt(); return r != "" && r != before })
}
