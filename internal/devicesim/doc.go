// Package devicesim simulates an IOS-class network device over SSH, for
// tests and benchmarks of the SSH prober's device mode: exec channels that
// close without an exit status, a shell only after pty-req, echo and CRLF
// line ends, a "name#" prompt, a "--More--" pager until "terminal length
// 0", keyboard-interactive "Password:" as the only authentication, an
// optional legacy mode offering only diffie-hellman-group14-sha1,
// aes128-cbc, hmac-sha1 and ssh-rsa, and a "show version" whose uptime
// line changes on every call. It is served by internal/sshserver, so the
// same device runs in unit tests and in cmd/fleetsim.
package devicesim
