package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"
)

// chromiumFlags keep headless Chromium on loopback: no background or
// component networking, and every name and address but 127.0.0.1 (where the
// exporter listens) resolves to nothing, so the browser cannot reach the
// internet.
func chromiumFlags(profile string) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-breakpad", "--disable-crash-reporter", "--disable-domain-reliability",
		"--no-pings", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
		"--force-color-profile=srgb", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--user-data-dir=" + profile,
	}
}

// browser runs headless Chromium, one process per call, with its own
// profile directory.
type browser struct {
	bin, profile string
}

// run starts Chromium with the extra args and returns its stdout. A page
// that fails to load fails the test (Chromium itself exits 0). Chromium
// is started in its own process group: when it exits or times out, helpers
// it spawned (zygote, GPU, crash handler) are killed with the group.
func (b *browser) run(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.bin, append(chromiumFlags(b.profile), args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		// Leftover helpers of this Chromium only: its own process group.
		if kerr := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			t.Logf("kill chromium process group %d: %v", cmd.Process.Pid, kerr)
		}
	}
	if err != nil || strings.Contains(stderr.String(), "Page load failed") {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// dumpDOM loads url and returns the DOM after rendering.
func (b *browser) dumpDOM(t *testing.T, url string) *html.Node {
	t.Helper()
	out := b.run(t, "--dump-dom", url)
	doc, err := html.Parse(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("parse DOM of %s: %v", url, err)
	}
	return doc
}

// screenshot saves a 1280x900 PNG of url to path and returns the image.
func (b *browser) screenshot(t *testing.T, url, path string) image.Image {
	t.Helper()
	b.run(t, "--screenshot="+path, "--window-size=1280,900", url)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot of %s: %v", url, err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if got := img.Bounds().Size(); got != image.Pt(1280, 900) {
		t.Errorf("screenshot %s is %v, want 1280x900", path, got)
	}
	return img
}

// attr returns the value of an attribute and whether it is present.
func attr(n *html.Node, name string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val, true
		}
	}
	return "", false
}

// findAll returns the element nodes below n for which match is true.
func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && match(c) {
			out = append(out, c)
		}
	}
	return out
}

func text(n *html.Node) string {
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return strings.TrimSpace(b.String())
}

// pageCounts is what a status page shows for one set.
type pageCounts struct {
	Hosts, Up, Down, Degraded, Pending int
}

// landingCounts reads the summary row of every set (and "" for the total row)
// from the landing page: td/th elements with data-field in a tr with
// data-set.
func landingCounts(doc *html.Node) (map[string]pageCounts, error) {
	out := map[string]pageCounts{}
	rows := findAll(doc, func(n *html.Node) bool {
		_, ok := attr(n, "data-set")
		return n.Data == "tr" && ok
	})
	for _, row := range rows {
		set, _ := attr(row, "data-set")
		var c pageCounts
		fields := map[string]*int{"hosts": &c.Hosts, "up": &c.Up, "down": &c.Down, "degraded": &c.Degraded, "pending": &c.Pending}
		seen := 0
		for _, cell := range findAll(row, func(n *html.Node) bool { _, ok := attr(n, "data-field"); return ok }) {
			f, _ := attr(cell, "data-field")
			p, ok := fields[f]
			if !ok {
				continue
			}
			v, err := strconv.Atoi(text(cell))
			if err != nil {
				return nil, fmt.Errorf("set %q field %s: %w", set, f, err)
			}
			*p = v
			seen++
		}
		if seen != len(fields) {
			return nil, fmt.Errorf("set %q: %d of %d count fields", set, seen, len(fields))
		}
		out[set] = c
	}
	return out, nil
}

// failureRows reads the failing-hosts table of a set on the landing page as
// "host state probe: reason[, probe: reason...]" lines, one per host.
func failureRows(doc *html.Node, set string) []string {
	var out []string
	for _, table := range findAll(doc, func(n *html.Node) bool {
		s, ok := attr(n, "data-set")
		cls, _ := attr(n, "class")
		return n.Data == "table" && ok && s == set && cls == "failures"
	}) {
		for _, tr := range findAll(table, func(n *html.Node) bool { return n.Data == "tr" }) {
			tds := findAll(tr, func(n *html.Node) bool { return n.Data == "td" })
			if len(tds) < 3 {
				continue // header row
			}
			out = append(out, text(tds[0])+" "+text(tds[1])+" "+text(tds[2]))
		}
	}
	return out
}

// gridCounts counts the grid cells of a set page per data-state, and returns
// the grid's data-count.
func gridCounts(doc *html.Node) (pageCounts, int, error) {
	grids := findAll(doc, func(n *html.Node) bool { id, _ := attr(n, "id"); return id == "grid" })
	if len(grids) != 1 {
		return pageCounts{}, 0, fmt.Errorf("%d elements with id grid, want 1", len(grids))
	}
	dc, _ := attr(grids[0], "data-count")
	declared, err := strconv.Atoi(dc)
	if err != nil {
		return pageCounts{}, 0, fmt.Errorf("grid data-count %q: %w", dc, err)
	}
	var c pageCounts
	for _, cell := range findAll(grids[0], func(n *html.Node) bool { _, ok := attr(n, "data-state"); return ok }) {
		st, _ := attr(cell, "data-state")
		c.Hosts++
		switch st {
		case "up":
			c.Up++
		case "degraded":
			c.Degraded++
		case "down":
			c.Down++
		case "pending":
			c.Pending++
		default:
			return c, declared, fmt.Errorf("grid cell with unknown state %q", st)
		}
	}
	return c, declared, nil
}

// fromMetrics is what the pages must show given fleet_host_up: every host
// has a result (no pending), and each test set has one probe type, so no
// host is degraded.
func fromMetrics(c hostCounts) pageCounts {
	return pageCounts{Hosts: c.Hosts, Up: c.Up, Down: c.Down()}
}

// consistent renders a page between two scrapes and compares it with the
// metrics. Probes run continuously: when the two scrapes differ, or the
// page disagrees, it tries again, up to 5 times.
func consistent(t *testing.T, e *env, what string, render func() (map[string]pageCounts, error)) {
	t.Helper()
	var last string
	for range 5 {
		before, err := e.scrape()
		if err != nil {
			t.Fatal(err)
		}
		page, err := render()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		after, err := e.scrape()
		if err != nil {
			t.Fatal(err)
		}
		m := countsBySet(before)
		if diff := cmp.Diff(m, countsBySet(after)); diff != "" {
			last = "metrics changed while the page was rendered:\n" + diff
			continue
		}
		want := map[string]pageCounts{}
		for set := range page {
			want[set] = fromMetrics(m[set])
		}
		if diff := cmp.Diff(want, page); diff != "" {
			last = "page vs /metrics (-metrics +page):\n" + diff
			continue
		}
		return
	}
	t.Fatalf("%s never matched /metrics: %s", what, last)
}

// hasColor reports whether some pixel of img is exactly c.
func hasColor(img image.Image, c color.RGBA) bool {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if uint8(r>>8) == c.R && uint8(g>>8) == c.G && uint8(bl>>8) == c.B {
				return true
			}
		}
	}
	return false
}

// TestStatusPagesInBrowser loads the landing page and the set pages in
// headless Chromium with one TCP host down and checks that the counts the
// browser shows match fleet_host_up on /metrics at the same moment. It saves
// screenshots of the landing page and a set page; with
// FLEET_UPDATE_SCREENSHOT=1 the landing page becomes docs/status.png.
func TestStatusPagesInBrowser(t *testing.T) {
	t.Parallel()
	b := &browser{bin: needTool(t, "/usr/bin/chromium", "chromium"), profile: t.TempDir()}
	e := startEnv(t, envOptions{})
	down := e.tcp[1]
	down.down()
	e.waitHostUp(setTCP, down.addr, 0)
	base := "http://" + e.exporter + "/"

	t.Run("landing page", func(t *testing.T) {
		var doc *html.Node
		consistent(t, e, "landing page", func() (map[string]pageCounts, error) {
			doc = b.dumpDOM(t, base)
			counts, err := landingCounts(doc)
			if err != nil {
				return nil, err
			}
			// The total row must be the sum of the set rows.
			total, ok := counts[""]
			if !ok {
				return nil, errors.New("no total row")
			}
			delete(counts, "")
			var sum pageCounts
			for _, c := range counts {
				sum.Hosts += c.Hosts
				sum.Up += c.Up
				sum.Down += c.Down
				sum.Degraded += c.Degraded
				sum.Pending += c.Pending
			}
			if sum != total {
				return nil, fmt.Errorf("total row %+v, sum of sets %+v", total, sum)
			}
			if len(counts) != 3 {
				return nil, fmt.Errorf("summary rows for %v, want the 3 test sets", sortedKeys(counts))
			}
			return counts, nil
		})
		// The row names the failing probe with its port (tcp:PORT), as
		// the pages do for hosts probed on several.
		_, port, _ := net.SplitHostPort(down.addr)
		if got, want := failureRows(doc, setTCP), []string{down.addr + " down tcp:" + port + ": refused"}; !cmp.Equal(got, want) {
			t.Errorf("failing table of %s = %q, want %q", setTCP, got, want)
		}
		for _, set := range []string{setICMP, setSSH} {
			if got := failureRows(doc, set); len(got) != 0 {
				t.Errorf("failing table of %s = %q, want none", set, got)
			}
		}
	})

	for _, set := range []string{setTCP, setICMP, setSSH} {
		t.Run("set page "+set, func(t *testing.T) {
			consistent(t, e, "set page "+set, func() (map[string]pageCounts, error) {
				c, declared, err := gridCounts(b.dumpDOM(t, base+"sets/"+set))
				if err != nil {
					return nil, err
				}
				if declared != c.Hosts {
					return nil, fmt.Errorf("grid data-count %d, %d cells", declared, c.Hosts)
				}
				return map[string]pageCounts{set: c}, nil
			})
		})
	}

	t.Run("host pages", func(t *testing.T) {
		// The grid cell of the down host links to its page.
		doc := b.dumpDOM(t, base+"sets/"+setTCP)
		cells := findAll(doc, func(n *html.Node) bool { st, _ := attr(n, "data-state"); return st == "down" })
		if len(cells) != 1 {
			t.Fatalf("%d down cells on the set page, want 1", len(cells))
		}
		href, _ := attr(cells[0], "href")
		if want := "../hosts/" + setTCP + "/" + down.addr; href != want {
			t.Fatalf("down cell links to %q, want %q", href, want)
		}
		doc = b.dumpDOM(t, base+"hosts/"+setTCP+"/"+down.addr)
		if got := text(byID(t, doc, "host-state")); got != "down" {
			t.Errorf("host page state %q, want down", got)
		}
		row := findAll(doc, func(n *html.Node) bool { p, _ := attr(n, "data-probe"); return p == "tcp" })
		if len(row) != 1 || !strings.Contains(text(row[0]), "failedrefusedfailing for") {
			t.Errorf("tcp row of the down host: %q", texts(row))
		}

		// An SSH host: phases, and each command with the hash and exit
		// status /metrics exports.
		host := e.ssh[0]
		fams, err := e.scrape()
		if err != nil {
			t.Fatal(err)
		}
		doc = b.dumpDOM(t, base+"hosts/"+setSSH+"/"+host)
		if len(findAll(doc, func(n *html.Node) bool { id, _ := attr(n, "id"); return id == "phases" })) != 1 {
			t.Error("SSH host page has no phase table")
		}
		for _, cmdName := range []string{cmdCheck, cmdHost} {
			var want float64
			for _, smp := range fams["fleet_ssh_command_output_hash"] {
				if smp.labels["host"] == host && smp.labels["command"] == cmdName {
					want = smp.value
				}
			}
			rows := findAll(doc, func(n *html.Node) bool { c, _ := attr(n, "data-command"); return n.Data == "tr" && c == cmdName })
			if len(rows) != 1 {
				t.Errorf("command %s: %d rows", cmdName, len(rows))
				continue
			}
			hash := findAll(rows[0], func(n *html.Node) bool { f, _ := attr(n, "data-field"); return f == "hash" })
			exit := findAll(rows[0], func(n *html.Node) bool { f, _ := attr(n, "data-field"); return f == "exit" })
			if len(hash) != 1 || text(hash[0]) != strconv.FormatFloat(want, 'f', -1, 64) || len(exit) != 1 || text(exit[0]) != "0" {
				t.Errorf("command %s: row %q, want hash %v and exit status 0", cmdName, text(rows[0]), want)
			}
		}
	})

	t.Run("filtered view names hosts", func(t *testing.T) {
		doc := b.dumpDOM(t, base+"sets/"+setTCP+"?state=down")
		grid := byID(t, doc, "grid")
		if got := text(grid); got != down.addr {
			t.Errorf("?state=down grid reads %q, want the down host's name %q", got, down.addr)
		}
	})

	t.Run("search", func(t *testing.T) {
		doc := b.dumpDOM(t, base+"search?q="+down.addr)
		rows := findAll(doc, func(n *html.Node) bool { h, _ := attr(n, "data-host"); return n.Data == "tr" && h == down.addr })
		if len(rows) != 1 || !strings.Contains(text(rows[0]), "down") {
			t.Errorf("search for %s: rows %q", down.addr, texts(rows))
		}
		// The search box is on every page.
		for _, page := range []string{base + "hosts/" + setSSH + "/" + e.ssh[1], base + "config"} {
			boxes := findAll(b.dumpDOM(t, page), func(n *html.Node) bool { nm, _ := attr(n, "name"); return n.Data == "input" && nm == "q" })
			if len(boxes) == 0 {
				t.Errorf("%s has no search box", page)
			}
		}
	})

	t.Run("drift view", func(t *testing.T) {
		fams, err := e.scrape()
		if err != nil {
			t.Fatal(err)
		}
		doc := b.dumpDOM(t, base+"sets/"+setSSH)
		// "check" prints the same on both hosts, "host" each host's
		// address: one output and two.
		for cmdName, known := range map[string]float64{cmdCheck: 1, cmdHost: 2} {
			var want float64
			for _, smp := range fams["fleet_ssh_command_output_distinct_hashes"] {
				if smp.labels["set"] == setSSH && smp.labels["command"] == cmdName {
					want = smp.value
				}
			}
			if want != known {
				t.Errorf("fleet_ssh_command_output_distinct_hashes{command=%q} = %v, want %v", cmdName, want, known)
			}
			tables := findAll(doc, func(n *html.Node) bool { c, _ := attr(n, "data-command"); return n.Data == "table" && c == cmdName })
			if len(tables) != 1 {
				t.Errorf("command %s: %d drift tables", cmdName, len(tables))
				continue
			}
			got, _ := attr(tables[0], "data-distinct")
			if got != strconv.FormatFloat(want, 'f', -1, 64) {
				t.Errorf("command %s: page shows %s distinct outputs, fleet_ssh_command_output_distinct_hashes %v", cmdName, got, want)
			}
		}
	})

	t.Run("config page", func(t *testing.T) {
		pre := text(byID(t, b.dumpDOM(t, base+"config"), "config"))
		for _, frag := range []string{"name: " + setSSH, "known_hosts_file:", "private_key_file:", "interval: 1s"} {
			if !strings.Contains(pre, frag) {
				t.Errorf("/config lacks %q:\n%s", frag, pre)
			}
		}
		if strings.Contains(pre, "PRIVATE KEY") {
			t.Error("/config shows key material")
		}
	})

	t.Run("screenshots", func(t *testing.T) {
		// Colours of status/templates/style.html.
		colorHeader := color.RGBA{0xe6, 0x52, 0x2c, 0xff}
		colorUp := color.RGBA{0x2e, 0x9e, 0x44, 0xff}
		colorDown := color.RGBA{0xc6, 0x28, 0x28, 0xff}
		dir := t.TempDir()
		landing := filepath.Join(dir, "status.png")
		img := b.screenshot(t, base, landing)
		if !hasColor(img, colorHeader) {
			t.Errorf("landing page screenshot has no pixel of the header colour %v: not the status page?", colorHeader)
		}
		setImg := b.screenshot(t, base+"sets/"+setTCP, filepath.Join(dir, "set.png"))
		for name, c := range map[string]color.RGBA{"up": colorUp, "down": colorDown} {
			if !hasColor(setImg, c) {
				t.Errorf("set page screenshot has no %s cell (colour %v)", name, c)
			}
		}
		if os.Getenv("FLEET_UPDATE_SCREENSHOT") != "1" {
			return
		}
		png, err := os.ReadFile(landing)
		if err != nil {
			t.Fatal(err)
		}
		docs := filepath.Join(repoRoot(t), "docs")
		if err := os.MkdirAll(docs, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(docs, "status.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", filepath.Join(docs, "status.png"))
	})

	// Last, since it leaves the exporter on its old config with a failed
	// reload: every page must say so.
	t.Run("failed reload on every page", func(t *testing.T) {
		cfgPath := filepath.Join(e.dir, "fleet.yml")
		good, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.WriteFile(cfgPath, good, 0o644) })
		if err := os.WriteFile(cfgPath, []byte("global: {interval: never}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		resp, err := e.client.Post(base+"-/reload", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 500 {
			t.Fatalf("reload of a bad config: status %d, want 500", resp.StatusCode)
		}
		// The pages share one header template; three of them show it.
		for _, page := range []string{base, base + "hosts/" + setTCP + "/" + down.addr, base + "config"} {
			banner := findAll(b.dumpDOM(t, page), func(n *html.Node) bool { id, _ := attr(n, "id"); return id == "reload-failed" })
			if len(banner) != 1 || !strings.Contains(text(banner[0]), "interval") {
				t.Errorf("%s: reload banner %q, want one naming the bad field", page, texts(banner))
			}
		}
	})
}

// byID returns the element with the id, failing the test unless there is
// exactly one.
func byID(t *testing.T, doc *html.Node, id string) *html.Node {
	t.Helper()
	got := findAll(doc, func(n *html.Node) bool { v, _ := attr(n, "id"); return v == id })
	if len(got) != 1 {
		t.Fatalf("%d elements with id %q, want 1", len(got), id)
	}
	return got[0]
}

// texts returns the text of each node.
func texts(ns []*html.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, text(n))
	}
	return out
}
