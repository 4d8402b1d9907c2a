//go:build race

package cluster

// raceEnabled builds the proxy under test with the race detector when the
// tests themselves run with it.
const raceEnabled = true
