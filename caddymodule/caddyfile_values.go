package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

// Value parsers shared by the modules' Caddyfile parsers, so that the old
// SDR_* environment variables fit as {$VAR:default} placeholders.

// parseBool reads true/false, on/off, yes/no or 1/0.
func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "on", "yes", "1":
		return true, nil
	case "false", "off", "no", "0":
		return false, nil
	}
	return false, strconv.ErrSyntax
}

// parseMillis reads a Caddy duration; a bare number is milliseconds, the
// unit of the old environment variables.
func parseMillis(v string) (caddy.Duration, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, strconv.ErrRange
		}
		return caddy.Duration(n * 1e6), nil
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if dur < 0 {
		return 0, strconv.ErrRange
	}
	return caddy.Duration(dur), nil
}

// parseOff reads "off", or a duration through parse; "off" and a zero
// duration both mean none, -1 in JSON.
func parseOff(v string, parse func(string) (caddy.Duration, error)) (caddy.Duration, error) {
	if v == "off" {
		return -1, nil
	}
	d, err := parse(v)
	if err != nil {
		return 0, err
	}
	if d == 0 {
		return -1, nil
	}
	return d, nil
}
