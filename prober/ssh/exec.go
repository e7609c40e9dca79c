package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// killGrace is how long a command that outlived its timeout gets between
// the TERM and the KILL signal request before its session is closed.
const killGrace = 50 * time.Millisecond

// runCommands runs cfg.Commands in order, each in a new session on conn
// (exec mode) or all in one shell session (shell mode), and returns the
// first failure. After a connection-level failure the rest are marked not
// run. With retry set, a failure to open the very first session returns
// errRetry instead.
func (p *Prober) runCommands(ctx context.Context, conn *clientConn, cfg *config.SSHProbe, sr *probe.SSHResult, retry bool) (probe.Reason, error) {
	// The deadline on a fresh connection covers reads and writes; closing on
	// ctx.Done also covers pooled connections, which have none.
	stop := context.AfterFunc(ctx, func() { _ = conn.client.Close() })
	defer stop()

	if len(cfg.Commands) == 0 {
		return probe.ReasonNone, nil
	}
	ignore := make([][]*regexp.Regexp, len(cfg.Commands))
	for i, c := range cfg.Commands {
		var err error
		if ignore[i], err = p.files.patterns.list(c.IgnoreLines); err != nil {
			skipCommands(sr, cfg.Commands, 0)
			return probe.ReasonConfig, err
		}
	}
	limit := cfg.MaxOutputBytes
	if limit <= 0 {
		limit = defaultMaxOutputBytes
	}
	sr.Commands = make([]probe.CommandResult, len(cfg.Commands))
	// healthy stays true while every command got an answer from the
	// server: an exit status, a clean end of its channel, or output beyond
	// the limit.
	healthy := true
	defer func() {
		// Remember when the connection last proved to work, so that the
		// next poll can skip the keepalive (see usable).
		if healthy {
			conn.usedAt.Store(int64(p.now().Sub(p.epoch)))
		} else {
			conn.usedAt.Store(neverUsed)
		}
	}()
	if cfg.Mode == config.SSHModeShell {
		reason, err := p.runShell(ctx, conn, cfg, ignore, limit, sr, retry)
		if reason != probe.ReasonNone {
			healthy = false
		}
		return reason, err
	}

	var (
		reason probe.Reason
		err    error
	)
	buf, _ := p.bufs.Get().(*[copyBufSize]byte)
	if buf == nil {
		buf = new([copyBufSize]byte)
	}
	defer p.bufs.Put(buf)
	for i, c := range cfg.Commands {
		cr := &sr.Commands[i]
		opened, noExit := runCommand(ctx, conn, c, ignore[i], limit, cfg.KeepOutputBytes, cr, buf[:])
		lost := false
		if retry && i == 0 && !opened && !expired(ctx) && cr.Reason == probe.ReasonSession {
			sr.Commands = nil
			healthy = false
			return cr.Reason, errRetry
		}
		if noExit {
			// The channel ended without an exit status. Network devices end
			// every exec that way; a connection that dropped does too, and
			// the watcher may not have noticed yet: a keepalive round trip
			// tells the two apart.
			switch {
			case conn.isDead() || !p.keepalive(ctx, conn):
				lost = true
				cr.Reason, cr.Err = probe.ReasonSession, errors.New("connection lost: the channel closed without exit status and the server no longer answers")
				if expired(ctx) {
					cr.Reason = probe.ReasonTimeout
				}
				dropOutput(cr)
			case cfg.RequireExitStatus:
				cr.Reason, cr.Err = probe.ReasonSession, errors.New("the channel closed without exit status or exit signal, and require_exit_status is set")
				dropOutput(cr)
			}
		}
		switch cr.Reason {
		case probe.ReasonNone, probe.ReasonCommand, probe.ReasonOutputLimit:
		default:
			healthy = false
		}
		if cr.Reason != probe.ReasonNone && err == nil {
			reason, err = cr.Reason, fmt.Errorf("command %q: %w", cr.Name, cr.Err)
		}
		if !opened || lost || expired(ctx) || conn.isDead() ||
			(cr.Reason == probe.ReasonSession && !noExit && !p.keepalive(ctx, conn)) {
			// A session that ended without exit status may mean the
			// connection dropped; the watcher may not have noticed yet, a
			// keepalive round trip tells for sure.
			skipCommands(sr, cfg.Commands, i+1)
			break
		}
	}
	return reason, err
}

// dropOutput forgets the output of a run that did not complete, so that no
// hash is published for it and the last good one stays.
func dropOutput(cr *probe.CommandResult) {
	cr.Hash, cr.SHA256, cr.Bytes, cr.Value = 0, "", 0, ""
}

// commandTimer stops a command that outlives its context: it asks the
// server to send TERM, then KILL, to the remote process, then closes the
// session. Closing alone does not stop a command without a PTY on OpenSSH:
// it keeps running, and its output keeps coming until it ends.
type commandTimer struct {
	conn     *clientConn
	fired    atomic.Bool
	finished chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

// startTimer watches ctx for sess.
func startTimer(ctx context.Context, conn *clientConn, sess *ssh.Session) *commandTimer {
	t := &commandTimer{conn: conn, finished: make(chan struct{})}
	t.wg.Go(func() {
		select {
		case <-t.finished:
			return
		case <-ctx.Done():
		}
		t.fired.Store(true)
		_ = sess.Signal(ssh.SIGTERM)
		grace := time.NewTimer(killGrace)
		defer grace.Stop()
		select {
		case <-t.finished:
			return
		case <-grace.C:
			_ = sess.Signal(ssh.SIGKILL)
		}
		_ = sess.Close()
		// A server that neither signals nor ends the channel on close
		// (OpenSSH keeps it open while the process lives) would hold the
		// probe until its own deadline: give the connection up instead.
		grace.Reset(killGrace)
		select {
		case <-t.finished:
		case <-grace.C:
			_ = t.conn.client.Close()
		}
	})
	return t
}

// done tells the watcher the command has ended.
func (t *commandTimer) done() { t.once.Do(func() { close(t.finished) }) }

// stop ends the watcher and waits for it; it reports whether the timeout
// struck.
func (t *commandTimer) stop() bool {
	t.done()
	t.wg.Wait()
	return t.fired.Load()
}

// runCommand runs c in a new session and fills cr. It reports whether the
// session could be opened, and whether the channel ended cleanly without an
// exit status (the caller decides whether that is a success). Duration spans
// session open, exec, reading all of stdout and the exit status. Stdout is
// hashed while streaming, never held; at most limit+1 bytes are read, and
// on overflow Bytes and Hash cover the first limit bytes. The first keep
// bytes of what was hashed are kept in cr.Output. buf is the copy buffer.
// A run that times out or ends early publishes no hash.
func runCommand(ctx context.Context, conn *clientConn, c config.Command, ignore []*regexp.Regexp, limit, keep int64, cr *probe.CommandResult, buf []byte) (opened, noExit bool) {
	*cr = probe.CommandResult{Name: commandName(c), ExitStatus: -1}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout.D())
		defer cancel()
	}
	start := time.Now()
	defer func() { cr.Duration = time.Since(start) }()

	fail := func(r probe.Reason, err error) {
		if expired(ctx) {
			r, err = probe.ReasonTimeout, withContext(ctx, err)
		}
		cr.Reason, cr.Err = r, err
	}

	// Opening a channel has no timeout of its own; a server that does not
	// answer within the command's time is treated as dead. Without a
	// command timeout ctx is the probe's, on which runCommands already
	// closes the connection.
	stopOpen := func() bool { return false }
	if c.Timeout > 0 {
		stopOpen = context.AfterFunc(ctx, func() { _ = conn.client.Close() })
	}
	sess, err := conn.client.NewSession()
	stopOpen()
	if err != nil {
		fail(probe.ReasonSession, fmt.Errorf("open session: %w", err))
		return false, false
	}
	defer sess.Close()

	stderr := &firstLine{limit: maxStderrLineBytes}
	sess.Stderr = stderr
	stdout, err := sess.StdoutPipe()
	if err != nil {
		fail(probe.ReasonSession, err)
		return true, false
	}
	// With Stdin unset the library starts a goroutine per command that
	// copies nothing and then sends EOF; closing the pipe sends the EOF
	// directly.
	stdin, err := sess.StdinPipe()
	if err != nil {
		fail(probe.ReasonSession, err)
		return true, false
	}
	if err := sess.Start(c.Run); err != nil {
		fail(probe.ReasonSession, fmt.Errorf("exec: %w", err))
		return true, false
	}
	_ = stdin.Close()
	cr.Ran = true
	timer := startTimer(ctx, conn, sess)
	defer timer.stop()

	h := newOutputHasher(false, ignore, c.OutputLabel)
	h.max, h.keep = limit, keep
	n, rerr := io.CopyBuffer(h, io.LimitReader(stdout, limit+1), buf)
	if n > limit {
		// Stop the command: its remaining output is not wanted.
		_ = sess.Close()
		timedOut := timer.stop()
		cr.StderrFirstLine = stderr.String()
		if timedOut || expired(ctx) {
			fail(probe.ReasonTimeout, errors.New("command did not finish within its timeout"))
			return true, false
		}
		// The hash covers the first limit bytes, as documented.
		cr.Hash, cr.SHA256, cr.Bytes, cr.Value = h.sum()
		cr.Output = h.kept
		cr.Reason, cr.Err = probe.ReasonOutputLimit, fmt.Errorf("stdout exceeded max_output_bytes (%d)", limit)
		return true, false
	}
	werr := sess.Wait()
	timedOut := timer.stop()
	cr.StderrFirstLine = stderr.String()
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case timedOut || expired(ctx):
		// Also a command that finished just after its deadline: its time
		// is over, and the output may be partial.
		err := werr
		if err == nil {
			err = errors.New("command finished after its timeout")
		}
		fail(probe.ReasonTimeout, err)
		return true, false
	case rerr != nil:
		fail(probe.ReasonSession, fmt.Errorf("read stdout: %w", rerr))
		return true, false
	case werr == nil:
		cr.ExitStatus = 0
	case errors.As(werr, &exitErr) && exitErr.Signal() != "":
		cr.Reason, cr.Err = probe.ReasonCommand, werr
	case errors.As(werr, &exitErr):
		cr.ExitStatus = exitErr.ExitStatus()
		cr.Reason, cr.Err = probe.ReasonCommand, werr
	case errors.As(werr, &missing):
		noExit = true
	default:
		fail(probe.ReasonSession, werr)
		return true, false
	}
	cr.Hash, cr.SHA256, cr.Bytes, cr.Value = h.sum()
	cr.Output = h.kept
	return true, noExit
}
