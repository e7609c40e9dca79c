package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleet-exporter/fleet_exporter/config"
	"github.com/fleet-exporter/fleet_exporter/probe"
)

// errPrompt marks a shell whose prompt did not come.
var errPrompt = errors.New("prompt did not appear")

// errOutputLimit marks shell output beyond max_output_bytes.
var errOutputLimit = errors.New("output exceeded max_output_bytes")

// screen turns the byte stream of a PTY into lines the way a terminal
// shows them: CR returns to the start of the line, backspace moves left,
// printable bytes overwrite, escape sequences (colours, bracketed paste,
// cursor moves) are dropped. Devices erase their pager marker with
// backspaces and spaces, so emulating the cursor leaves the page text as
// the user saw it.
type screen struct {
	lines [][]byte
	cur   []byte
	col   int
	// esc is the escape sequence state: 0 none, 1 after ESC, 2 in a CSI
	// sequence, 3 in an OSC string, 4 after ESC inside an OSC string.
	esc int
}

// write feeds b to the screen.
func (s *screen) write(b []byte) {
	for _, c := range b {
		switch s.esc {
		case 1:
			switch c {
			case '[':
				s.esc = 2
			case ']':
				s.esc = 3
			default:
				s.esc = 0
			}
			continue
		case 2:
			if c >= 0x40 && c <= 0x7e {
				s.esc = 0
			}
			continue
		case 3:
			switch c {
			case 0x07:
				s.esc = 0
			case 0x1b:
				s.esc = 4
			}
			continue
		case 4:
			s.esc = 0
			continue
		}
		switch {
		case c == 0x1b:
			s.esc = 1
		case c == '\n':
			s.lines = append(s.lines, bytes.TrimRight(s.cur, " "))
			s.cur, s.col = nil, 0
		case c == '\r':
			s.col = 0
		case c == '\b':
			if s.col > 0 {
				s.col--
			}
		case c == '\t' || c >= 0x20 && c != 0x7f:
			if s.col < len(s.cur) {
				s.cur[s.col] = c
			} else {
				s.cur = append(s.cur, c)
			}
			s.col++
		}
	}
}

// current returns the incomplete last line, trailing spaces trimmed.
func (s *screen) current() []byte { return bytes.TrimRight(s.cur, " ") }

// reset forgets everything seen.
func (s *screen) reset() { s.lines, s.cur, s.col = nil, nil, 0 }

// shell is one interactive PTY session.
type shell struct {
	sess   *ssh.Session
	stdin  io.Writer
	stdout io.Reader
	prompt *regexp.Regexp
	pager  *regexp.Regexp
	scr    screen
	buf    []byte
	// learned is the first prompt seen without its final prompt
	// characters: later prompts must have the same stem, so that an output
	// line such as "Device#   PID   SN" that happens to end a read is not
	// taken for the prompt.
	learned []byte
}

// promptStem is a prompt without its trailing prompt characters and
// spaces: "R1" for "R1#", "R1>" and "R1# ".
func promptStem(p []byte) []byte { return bytes.TrimRight(p, "#>$% ") }

// isPrompt reports whether the current line is the prompt.
func (sh *shell) isPrompt(cur []byte) bool {
	if !sh.prompt.Match(cur) {
		return false
	}
	if sh.learned == nil {
		sh.learned = bytes.Clone(promptStem(cur))
		return true
	}
	return bytes.Equal(promptStem(cur), sh.learned)
}

// expect reads until the current line matches the prompt, answering pager
// markers with a space, and returns the complete lines before the prompt
// line. It reads at most limit bytes; ctx ending closes the session, which
// ends the read.
func (sh *shell) expect(ctx context.Context, limit int64) ([][]byte, error) {
	stop := context.AfterFunc(ctx, func() { _ = sh.sess.Close() })
	defer stop()
	var read int64
	for {
		n, err := sh.stdout.Read(sh.buf)
		read += int64(n)
		if read > limit {
			return nil, errOutputLimit
		}
		sh.scr.write(sh.buf[:n])
		cur := sh.scr.current()
		if sh.isPrompt(cur) {
			lines := sh.scr.lines
			sh.scr.reset()
			return lines, nil
		}
		if sh.pager != nil {
			if loc := sh.pager.FindIndex(cur); loc != nil {
				// Cut the marker, so that a device which does not erase it
				// does not get another space for the same one.
				sh.scr.cur = sh.scr.cur[:loc[0]]
				sh.scr.col = loc[0]
				if _, werr := io.WriteString(sh.stdin, " "); werr != nil {
					return nil, fmt.Errorf("answer pager: %w", werr)
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil || expired(ctx) {
				return nil, withContext(ctx, err)
			}
			return nil, fmt.Errorf("shell ended: %w", err)
		}
	}
}

// send types line and Enter.
func (sh *shell) send(line string) error {
	_, err := io.WriteString(sh.stdin, line+"\n")
	return err
}

// runShell runs every command of cfg in one PTY shell session and fills
// sr.Commands: it waits for the prompt, sends the setup lines (waiting
// for the prompt after each), then each command, taking as its output the
// lines between the echo of the command line and the next prompt.
func (p *Prober) runShell(ctx context.Context, conn *clientConn, cfg *config.SSHProbe, ignore [][]*regexp.Regexp, limit int64, sr *probe.SSHResult, retry bool) (probe.Reason, error) {
	prompt, err := p.files.patterns.get(cfg.Shell.Prompt)
	if err != nil {
		skipCommands(sr, cfg.Commands, 0)
		return probe.ReasonConfig, err
	}
	var pager *regexp.Regexp
	if cfg.Shell.Pager != "" {
		if pager, err = p.files.patterns.get(cfg.Shell.Pager); err != nil {
			skipCommands(sr, cfg.Commands, 0)
			return probe.ReasonConfig, err
		}
	}
	skipCommands(sr, cfg.Commands, 0)
	failAll := func(r probe.Reason, err error) (probe.Reason, error) {
		if expired(ctx) && r != probe.ReasonPrompt {
			r, err = probe.ReasonTimeout, withContext(ctx, err)
		}
		return r, err
	}

	sess, err := conn.client.NewSession()
	if err != nil {
		if retry && !expired(ctx) {
			sr.Commands = nil
			return probe.ReasonSession, errRetry
		}
		return failAll(probe.ReasonSession, fmt.Errorf("open session: %w", err))
	}
	defer sess.Close()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return failAll(probe.ReasonSession, err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return failAll(probe.ReasonSession, err)
	}
	sh := &shell{sess: sess, stdin: stdin, stdout: stdout, prompt: prompt, pager: pager, buf: make([]byte, 4096)}
	if err := sess.RequestPty(cfg.Shell.Term, cfg.Shell.Height, cfg.Shell.Width, ssh.TerminalModes{}); err != nil {
		return failAll(probe.ReasonSession, fmt.Errorf("pty-req: %w", err))
	}
	if err := sess.Shell(); err != nil {
		return failAll(probe.ReasonSession, fmt.Errorf("shell: %w", err))
	}
	// Banners and the setup lines' output may be long; they get the same
	// bound as a command's output.
	if _, err := sh.expect(ctx, limit); err != nil {
		return shellFailure(ctx, "first prompt", err)
	}
	for _, line := range cfg.Shell.Setup {
		if err := sh.send(line); err != nil {
			return failAll(probe.ReasonSession, fmt.Errorf("send setup line: %w", err))
		}
		if _, err := sh.expect(ctx, limit); err != nil {
			return shellFailure(ctx, fmt.Sprintf("prompt after setup line %q", line), err)
		}
	}

	var (
		reason probe.Reason
		ferr   error
	)
	for i, c := range cfg.Commands {
		cr := &sr.Commands[i]
		r, err := shellCommand(ctx, sh, c, ignore[i], limit, cfg.KeepOutputBytes, cr)
		if r == probe.ReasonNone {
			continue
		}
		cr.Reason, cr.Err = r, err
		reason, ferr = r, fmt.Errorf("command %q: %w", cr.Name, err)
		// The shell's state is unknown after a failure: the command may
		// still run, or the prompt changed. The rest are not run.
		skipCommands(sr, cfg.Commands, i+1)
		return reason, ferr
	}
	if cfg.Shell.Exit != "" {
		_ = sh.send(cfg.Shell.Exit)
	}
	_ = stdin.Close()
	return probe.ReasonNone, nil
}

// shellCommand types one command and reads its output up to the next
// prompt, within the command's timeout. The first keep bytes of the hashed
// output are kept in cr.Output.
func shellCommand(ctx context.Context, sh *shell, c config.Command, ignore []*regexp.Regexp, limit, keep int64, cr *probe.CommandResult) (probe.Reason, error) {
	*cr = probe.CommandResult{Name: commandName(c), ExitStatus: -1}
	cctx := ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, c.Timeout.D())
		defer cancel()
	}
	start := time.Now()
	defer func() { cr.Duration = time.Since(start) }()
	if err := sh.send(c.Run); err != nil {
		return probe.ReasonSession, fmt.Errorf("send command: %w", err)
	}
	cr.Ran = true
	lines, err := sh.expect(cctx, limit)
	if err != nil {
		switch {
		case errors.Is(err, errOutputLimit):
			return probe.ReasonOutputLimit, fmt.Errorf("%w (%d)", err, limit)
		case expired(cctx):
			// A command that does not come back to the prompt in time:
			// closing the session hangs up its PTY, which stops it.
			return probe.ReasonTimeout, fmt.Errorf("no prompt after the command within its timeout: %w", err)
		default:
			return probe.ReasonSession, err
		}
	}
	// The first line is the echo of the command line.
	if len(lines) > 0 && strings.HasSuffix(strings.TrimSpace(string(lines[0])), strings.TrimSpace(c.Run)) {
		lines = lines[1:]
	}
	h := newOutputHasher(true, ignore, c.OutputLabel)
	h.keep = keep
	for _, l := range lines {
		h.writeLine(l)
	}
	cr.Hash, cr.SHA256, cr.Bytes, cr.Value = h.sum()
	cr.Output = h.kept
	return probe.ReasonNone, nil
}

// shellFailure classifies a failed wait for the prompt outside a command.
func shellFailure(ctx context.Context, what string, err error) (probe.Reason, error) {
	switch {
	case errors.Is(err, errOutputLimit):
		return probe.ReasonOutputLimit, fmt.Errorf("waiting for the %s: %w", what, err)
	case expired(ctx):
		return probe.ReasonPrompt, fmt.Errorf("%w: waiting for the %s: %w", errPrompt, what, err)
	default:
		return probe.ReasonSession, fmt.Errorf("waiting for the %s: %w", what, err)
	}
}
