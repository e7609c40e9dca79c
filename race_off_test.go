//go:build !race

package main

// raceEnabled scales load tests down under the race detector, which makes
// every memory access several times more expensive.
const raceEnabled = false
