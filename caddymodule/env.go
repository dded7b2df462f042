package caddymodule

import (
	"os"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/internal/sdrenv"
)

// The SDR_* environment is read once, when the process starts: before Caddy
// adapts any Caddyfile, whose {$VAR} placeholders then see the old
// transport-server's values as it read them and the derived variables
// (SDR_HTTP_SITE, SDR_LISTEN_SITE, ...; see package sdrenv). Every build
// that registers these modules runs it, xcaddy builds included.
func init() {
	ApplyEnv(func(k, v string) { _ = os.Setenv(k, v) })
}

// ApplyEnv applies package sdrenv to the process environment through setenv
// and logs one warning for each variable not taken as given. A test that
// changes SDR_* variables with t.Setenv calls ApplyEnv(t.Setenv) before it
// adapts a Caddyfile.
func ApplyEnv(setenv func(key, value string)) {
	log := caddy.Log().Named("sdr_env")
	for _, w := range sdrenv.Apply(setenv) {
		log.Warn(w.Message, zap.String("variable", w.Var), zap.String("value", w.Value))
	}
}
