package rosbridge

import (
	"fmt"
	"strings"
)

// Allowlist is a list of glob patterns over ROS names (topics, services).
// In a pattern, `*` matches any run of characters, `/` included, and `?`
// matches one character; everything else matches itself. So `/rosapi/*`
// allows every rosapi service and `*` allows every name. An empty list
// allows nothing.
type Allowlist []string

// ParseAllowlist checks the patterns and returns them as an Allowlist.
func ParseAllowlist(patterns []string) (Allowlist, error) {
	for _, p := range patterns {
		if p == "" {
			return nil, fmt.Errorf("empty pattern in allowlist %q", patterns)
		}
		if p != "*" && !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "*") && !strings.HasPrefix(p, "?") {
			return nil, fmt.Errorf("allowlist pattern %q: ROS names start with '/'", p)
		}
	}
	return Allowlist(append([]string(nil), patterns...)), nil
}

// Allows reports whether name matches one of the patterns.
func (a Allowlist) Allows(name string) bool {
	for _, p := range a {
		if globMatch(p, name) {
			return true
		}
	}
	return false
}

// globMatch matches name against pattern with `*` (any run, `/` included)
// and `?` (one byte). It backtracks only to the last star, so it runs in
// O(len(pattern)*len(name)) at worst.
func globMatch(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
