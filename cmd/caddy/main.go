// Command caddy is Caddy with its standard modules and the sdr-caddy modules.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/sdr-os/sdr-caddy"
)

func main() {
	caddycmd.Main()
}
