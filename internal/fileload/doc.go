// Package fileload reads the files a configuration names (private keys,
// certificates, passwords, passphrases, known_hosts) so that no such file
// can stall or exhaust the process that loads it. A path pointing at a FIFO
// would block an ordinary open until a writer appears, and one pointing at
// /dev/zero or a huge file would be read until memory runs out; both happen
// on the goroutine that starts the exporter or reloads its configuration.
// Read opens without blocking, accepts regular files only, and reads no
// more than a per-kind size cap.
package fileload
