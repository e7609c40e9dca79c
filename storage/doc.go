// Package storage keeps the results store of fleet_exporter across
// restarts. It owns the snapshot file format (Marshal, Unmarshal) and the
// Snapshotter, which writes the store to one file in a directory every
// interval and at clean shutdown, atomically (temporary file, fsync, rename,
// fsync of the directory), and puts the last snapshot back into the store at
// start, before the first scrape.
//
// A file that is truncated, corrupt or of a newer format version is logged,
// renamed aside and ignored: a start never fails because of the file.
//
// The package reads the store through collector.Store's Export and Import;
// it imports collector, probe and config only, and never a prober or the
// scheduler.
package storage
