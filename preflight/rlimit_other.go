//go:build !unix

package preflight

// softFDLimit is unknown here: no warning is given.
func softFDLimit() (uint64, error) { return 0, nil }
