// Package caddymodule holds the Caddy glue of sdr-caddy: module registration,
// Caddyfile and JSON configuration, provisioning, metrics and subcommands.
// It holds no protocol or streaming logic; that lives in shmring, nvenc and
// the packages under internal/.
package caddymodule
