package relay

import (
	"fmt"
	"strings"
)

// ValidAction reports whether action is one NATS token of
// [A-Za-z0-9_-]{1,64}: it can never contain '.', '*', '>' or whitespace, so
// command.genesis.<action> always names exactly one subject.
func ValidAction(action string) bool {
	if len(action) == 0 || len(action) > MaxActionLen {
		return false
	}
	for i := 0; i < len(action); i++ {
		c := action[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// MaxActionLen is the longest action name accepted.
const MaxActionLen = 64

// ValidatePattern checks a subscription subject as NATS reads it: non-empty
// tokens separated by '.', no whitespace, '*' and '>' only as whole tokens,
// '>' only last.
func ValidatePattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty subject pattern")
	}
	if strings.ContainsAny(p, " \t\r\n\f\v") {
		return fmt.Errorf("subject pattern %q contains whitespace", p)
	}
	toks := strings.Split(p, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return fmt.Errorf("subject pattern %q has an empty token", p)
		case t == ">" && i != len(toks)-1:
			return fmt.Errorf("subject pattern %q has '>' before its last token", p)
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return fmt.Errorf("subject pattern %q has a wildcard inside token %q", p, t)
		}
	}
	return nil
}

// covers reports whether every subject matched by b is also matched by a.
func covers(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i, t := range at {
		if t == ">" {
			return len(bt) > i
		}
		if i >= len(bt) {
			return false
		}
		switch {
		case t == "*":
			if bt[i] == ">" {
				return false
			}
		case t != bt[i]:
			return false
		}
	}
	return len(at) == len(bt)
}

// minimalPatterns drops duplicates and patterns covered by another, so that
// no message is delivered twice.
func minimalPatterns(ps []string) []string {
	var out []string
	for i, p := range ps {
		redundant := false
		for j, q := range ps {
			if i == j {
				continue
			}
			if covers(q, p) && (!covers(p, q) || j < i) {
				redundant = true
				break
			}
		}
		if !redundant {
			out = append(out, p)
		}
	}
	return out
}
