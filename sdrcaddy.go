// Package sdrcaddy plugs the sdr-caddy modules into a Caddy build.
//
// It exists so that xcaddy can name this repository as one module:
//
//	xcaddy build v2.11.9 --with github.com/sdr-os/sdr-caddy
//
// Importing it registers every module: it imports package caddymodule,
// which imports each module family.
package sdrcaddy

import (
	_ "github.com/sdr-os/sdr-caddy/caddymodule"
)
