//go:build race

package config

// raceEnabled widens the time bounds of the load tests: the race detector
// makes every memory access several times more expensive.
const raceEnabled = true
