package caddymodule

import (
	// Each family registers its modules, Caddyfile directives and
	// subcommands when it is imported. Go initializes them in the order of
	// their import paths, which orders the directives that two families
	// place before the same one (sdr_nats before sdr_whep and sdr_stream,
	// sdr_player before sdr_ros): testdata/caddyfile_adapt pins it.
	_ "github.com/sdr-os/sdr-caddy/caddymodule/encoder"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/export"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/limit"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/natsapp"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/player"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/recorder"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/ros"
	_ "github.com/sdr-os/sdr-caddy/caddymodule/stream"
)
