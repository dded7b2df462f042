package caddymodule

import (
	// Each family registers its modules, Caddyfile directives and
	// subcommands when it is imported.
	_ "github.com/sdr-os/sdr-caddy/caddymodule/encoder"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/natsapp"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/player"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/ros"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/stream"
)
