// Package hostrange orders host names the way an operator reads them and
// folds lists of hosts into ranges, for terminal output and status pages.
//
// Natural order compares addresses numerically (127.0.2.2 before
// 127.0.2.10) and names by their digit runs as numbers (web2 before
// web10). Compress writes a list as pdsh/dshbak do: "127.0.1.[1-2,4]",
// "web[01-03],db1".
package hostrange
