package devicesim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/internal/sshserver"
)

// DefaultPageLines is the terminal length a session starts with: the
// pager stops after this many lines minus one, like IOS does.
const DefaultPageLines = 24

// maxLine bounds one input line; longer input is cut.
const maxLine = 1024

// Device is one simulated device. Its fields are read by every connection;
// set them before serving and leave them alone afterwards.
type Device struct {
	// Hostname is shown in the prompt ("Hostname#") and in show version.
	Hostname string
	// Version is the software version show version reports.
	Version string
	// User and Password are the only credentials accepted, through
	// keyboard-interactive with a single hidden "Password:" question.
	User, Password string
	// HostKey is the host key; Legacy needs an RSA key.
	HostKey ssh.Signer
	// Legacy restricts the handshake to diffie-hellman-group14-sha1,
	// aes128-cbc, hmac-sha1 and ssh-rsa host key signatures.
	Legacy bool
	// NoPrompt makes the shell print its banner and then nothing, ever: a
	// device whose prompt the client never sees.
	NoPrompt bool
	// PageLines is the terminal length a shell starts with; zero means
	// DefaultPageLines, a negative value no paging.
	PageLines int

	calls atomic.Int64
	execs atomic.Int64
	shell atomic.Int64
}

// Calls returns how many commands the device has run, in exec and shell
// sessions together.
func (d *Device) Calls() int64 { return d.calls.Load() }

// Execs returns how many exec requests the device has served.
func (d *Device) Execs() int64 { return d.execs.Load() }

// Shells returns how many shells the device has started.
func (d *Device) Shells() int64 { return d.shell.Load() }

// Host returns the sshserver.Host that serves d.
func (d *Device) Host() *sshserver.Host {
	return &sshserver.Host{
		Name:    d.Hostname,
		Config:  d.serverConfig,
		Channel: d.channel,
	}
}

// serverConfig builds the SSH server side of d.
func (d *Device) serverConfig() (*ssh.ServerConfig, error) {
	if d.HostKey == nil {
		return nil, errors.New("devicesim: no host key")
	}
	cfg := &ssh.ServerConfig{
		KeyboardInteractiveCallback: func(meta ssh.ConnMetadata, challenge ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
			answers, err := challenge("", "", []string{"Password: "}, []bool{false})
			if err != nil {
				return nil, err
			}
			if meta.User() != d.User || len(answers) != 1 || answers[0] != d.Password {
				return nil, errors.New("% Authentication failed")
			}
			return &ssh.Permissions{}, nil
		},
		ServerVersion: "SSH-2.0-Cisco-1.25",
	}
	key := d.HostKey
	if d.Legacy {
		as, ok := key.(ssh.AlgorithmSigner)
		if !ok || key.PublicKey().Type() != ssh.KeyAlgoRSA {
			return nil, errors.New("devicesim: legacy mode needs an RSA host key")
		}
		var err error
		if key, err = ssh.NewSignerWithAlgorithms(as, []string{ssh.KeyAlgoRSA}); err != nil {
			return nil, err
		}
		cfg.KeyExchanges = []string{ssh.InsecureKeyExchangeDH14SHA1}
		cfg.Ciphers = []string{ssh.InsecureCipherAES128CBC}
		cfg.MACs = []string{ssh.HMACSHA1}
	}
	cfg.AddHostKey(key)
	return cfg, nil
}

// channel serves one session channel: pty-req, shell and exec requests.
func (d *Device) channel(_ net.Conn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	var (
		wg      sync.WaitGroup
		pty     bool
		started bool
	)
	for req := range reqs {
		ok := false
		var run func()
		switch req.Type {
		case "pty-req":
			ok, pty = !started, !started || pty
		case "shell":
			if pty && !started {
				ok, started = true, true
				run = func() { d.runShell(ch) }
			}
		case "exec":
			var payload struct{ Command string }
			if !started && ssh.Unmarshal(req.Payload, &payload) == nil {
				ok, started = true, true
				run = func() { d.runExec(ch, payload.Command) }
			}
		case "window-change", "env":
			ok = true
		}
		// Reply before the command starts: one that ends at once would
		// otherwise close the channel before the client has its answer.
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
		if run != nil {
			wg.Go(run)
		}
	}
	wg.Wait()
}

// runExec answers one exec request and closes the channel without an exit
// status, as IOS does.
func (d *Device) runExec(ch ssh.Channel, command string) {
	d.execs.Add(1)
	t := &terminal{pageLines: -1}
	out, _ := d.run(t, command)
	_, _ = io.WriteString(ch, crlf(out))
	_ = ch.CloseWrite()
	_ = ch.Close()
}

// terminal is the state of one shell session.
type terminal struct {
	pageLines int
}

// runShell serves an interactive session until "exit" or the end of the
// channel.
func (d *Device) runShell(ch ssh.Channel) {
	d.shell.Add(1)
	defer func() {
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
		_ = ch.Close()
	}()
	t := &terminal{pageLines: d.PageLines}
	if t.pageLines == 0 {
		t.pageLines = DefaultPageLines
	}
	in := bufio.NewReader(ch)
	prompt := d.Hostname + "#"
	if _, err := io.WriteString(ch, "\r\n"+d.Hostname+" simulated device\r\n\r\n"); err != nil {
		return
	}
	if d.NoPrompt {
		// Swallow input until the client gives up.
		_, _ = io.Copy(io.Discard, in)
		return
	}
	afterCR := false
	for {
		if _, err := io.WriteString(ch, prompt); err != nil {
			return
		}
		line, err := readLine(in, ch, &afterCR)
		if err != nil {
			return
		}
		if _, err := io.WriteString(ch, "\r\n"); err != nil {
			return
		}
		out, exit := d.run(t, line)
		if exit {
			return
		}
		if !page(ch, in, out, t.pageLines) {
			return
		}
	}
}

// readLine reads one line with echo: printable bytes are echoed, DEL and
// backspace erase, CR or LF ends the line. afterCR carries over between
// calls whether the last line ended with CR, so that the LF of a CRLF is
// skipped without waiting for a byte that may never come.
func readLine(in *bufio.Reader, echo io.Writer, afterCR *bool) (string, error) {
	var line []byte
	for {
		c, err := in.ReadByte()
		if err != nil {
			return "", err
		}
		skip := *afterCR && c == '\n'
		*afterCR = false
		switch {
		case skip:
		case c == '\r' || c == '\n':
			*afterCR = c == '\r'
			return string(line), nil
		case c == 0x7f || c == '\b':
			if len(line) > 0 {
				line = line[:len(line)-1]
				_, _ = io.WriteString(echo, "\b \b")
			}
		case c >= 0x20 && len(line) < maxLine:
			line = append(line, c)
			_, _ = echo.Write([]byte{c})
		}
	}
}

// morePrompt and moreErase are what IOS prints for its pager and how it
// erases it again.
const (
	morePrompt = " --More-- "
	moreErase  = "\b\b\b\b\b\b\b\b\b\b          \b\b\b\b\b\b\b\b\b\b"
)

// page writes out with CRLF line ends, pausing at " --More-- " every
// pageLines-1 lines while paging is on: a space shows the next page, CR
// one more line, anything else ends the output. It reports whether the
// channel still works.
func page(w io.Writer, in *bufio.Reader, out string, pageLines int) bool {
	if out == "" {
		return true
	}
	lines := strings.SplitAfter(out, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	budget := pageLines - 1
	for i, l := range lines {
		if pageLines > 0 && budget == 0 && i < len(lines) {
			if _, err := io.WriteString(w, morePrompt); err != nil {
				return false
			}
			c, err := in.ReadByte()
			if err != nil {
				return false
			}
			if _, err := io.WriteString(w, moreErase); err != nil {
				return false
			}
			switch c {
			case ' ':
				budget = pageLines - 1
			case '\r', '\n':
				budget = 1
			default:
				return true
			}
		}
		if _, err := io.WriteString(w, crlf(l)); err != nil {
			return false
		}
		budget--
	}
	return true
}

// crlf turns LF line ends into CRLF.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// run executes one command line and returns its output with LF line ends,
// and whether the session ends.
func (d *Device) run(t *terminal, line string) (string, bool) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return "", false
	}
	d.calls.Add(1)
	switch {
	case match(f, "exit") || match(f, "logout") || match(f, "quit"):
		return "", true
	case match(f, "terminal", "length") && len(f) == 3:
		n, err := strconv.Atoi(f[2])
		if err != nil || n < 0 || n > 512 {
			return invalid(line), false
		}
		t.pageLines = n
		return "", false
	case match(f, "show", "version"):
		return d.showVersion(), false
	case match(f, "show", "clock"):
		return fmt.Sprintf("*%02d:%02d:%02d.000 UTC Tue Dec 1 2026\n", d.calls.Load()/3600%24, d.calls.Load()/60%60, d.calls.Load()%60), false
	case match(f, "show", "hostname"):
		return d.Hostname + "\n", false
	default:
		return invalid(line), false
	}
}

// match reports whether the words f start with the IOS-style
// abbreviations of words ("sh ver" matches "show version").
func match(f []string, words ...string) bool {
	if len(f) < len(words) {
		return false
	}
	for i, w := range words {
		if f[i] == "" || !strings.HasPrefix(w, strings.ToLower(f[i])) {
			return false
		}
	}
	return true
}

// invalid is IOS's answer to a line it cannot parse.
func invalid(line string) string {
	return fmt.Sprintf("%s\n^\n%% Invalid input detected at '^' marker.\n", line)
}

// showVersion is an IOS-like "show version", 30 lines long (more than one
// page), whose uptime line changes with every call.
func (d *Device) showVersion() string {
	n := d.calls.Load()
	var b strings.Builder
	fmt.Fprintf(&b, "Simulated IOS Software, C2900 Software (C2900-UNIVERSALK9-M), Version %s, RELEASE SOFTWARE (fc2)\n", d.Version)
	b.WriteString("Technical Support: https://example.invalid/techsupport\n")
	b.WriteString("Copyright (c) 1986-2026 by a simulated vendor.\n")
	b.WriteString("Compiled Tue 01-Dec-26 00:00 by prod_rel_team\n\n")
	b.WriteString("ROM: System Bootstrap, Version 15.0(1r)M16, RELEASE SOFTWARE (fc1)\n\n")
	fmt.Fprintf(&b, "%s uptime is %d weeks, %d days, %d hours, %d minutes\n", d.Hostname, n/10080, n/1440%7, n/60%24, n%60)
	b.WriteString("System returned to ROM by power-on\n")
	fmt.Fprintf(&b, "System image file is \"flash0:c2900-universalk9-mz.SPA.%s.bin\"\n", d.Version)
	b.WriteString("Last reload type: Normal Reload\n\n")
	b.WriteString("Cisco CISCO2911/K9 (revision 1.0) with 483328K/40960K bytes of memory.\n")
	b.WriteString("Processor board ID FTX0000A0AA\n")
	for i := range 3 {
		fmt.Fprintf(&b, "%d Gigabit Ethernet interface\n", 3-i)
	}
	b.WriteString("1 terminal line\n1 Virtual Private Network (VPN) Module\n")
	b.WriteString("DRAM configuration is 64 bits wide with parity enabled.\n")
	b.WriteString("255K bytes of non-volatile configuration memory.\n")
	b.WriteString("250880K bytes of ATA System CompactFlash 0 (Read/Write)\n\n")
	b.WriteString("License Info:\n\nLicense UDI:\n\n")
	b.WriteString("Device#   PID                   SN\n")
	b.WriteString("*0        CISCO2911/K9          FTX0000A0AA\n\n")
	b.WriteString("Configuration register is 0x2102\n")
	return b.String()
}

// Running is a device served on one listener.
type Running struct {
	// Addr and Port are where the device listens.
	Addr string
	Port int

	srv  *sshserver.Server
	done chan struct{}
}

// Start serves d on addr ("127.0.0.1:0" picks a free port) until Close.
func Start(d *Device, addr string) (*Running, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	tcp := ln.Addr().(*net.TCPAddr)
	r := &Running{Addr: tcp.IP.String(), Port: tcp.Port, srv: sshserver.New(nil), done: make(chan struct{})}
	h := d.Host()
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln, h)
	}()
	return r, nil
}

// HostPort returns "addr:port" for dialling the device.
func (r *Running) HostPort() string { return net.JoinHostPort(r.Addr, strconv.Itoa(r.Port)) }

// Close stops the device and waits for its connections to end.
func (r *Running) Close() error {
	err := r.srv.Close()
	<-r.done
	return err
}
