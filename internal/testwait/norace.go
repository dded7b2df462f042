//go:build !race

package testwait

// RaceEnabled reports whether the test binary was built with -race.
const RaceEnabled = false
