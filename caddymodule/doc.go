// Package caddymodule is the one import that registers every sdr-caddy
// module, Caddyfile directive and subcommand with Caddy:
//
//	xcaddy build v2.11.9 --with github.com/sdr-os/sdr-caddy/caddymodule
//
// Each module family is a package of its own, with its Caddyfile parsing and
// the subcommands it serves beside it, like Caddy's modules/caddyhttp/*:
//
//   - stream: sdr_stream and sdr_whep (video fan-out, its NATS source and
//     publisher), sdr-ring and sdr-testsrc
//   - natsapp: the sdr_nats app and handler
//   - ros: sdr_ros
//   - encoder: the sdr_encoder app, its admin endpoint, sdr-nvenc-probe
//   - player: sdr_player
//   - limit: the listener wrapper sdr_limit (caddy.listeners.sdr_limit),
//     the process-wide connection cap
//
// The families find each other only through Caddy's apps and the small
// interfaces of internal/frame, never by importing one another. This package
// also prepares the SDR_* environment when the process starts (ApplyEnv),
// and its tests hold the Caddyfile adapt golden files and the tests that run
// Caddy through caddytest. No package here holds protocol or streaming
// logic; that lives in shmring, nvenc and the packages under internal/.
package caddymodule
