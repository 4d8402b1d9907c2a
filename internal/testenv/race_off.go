//go:build !race

package testenv

// RaceEnabled reports whether this binary runs with the race detector, so
// that a proxy built for it can be given the detector too.
const RaceEnabled = false
