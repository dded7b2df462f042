// Package web holds the browser player of sdr-caddy: ES modules with no build
// step, embedded into the binary and served by the sdr_player handler.
//
//	index.html   the demo page (player, commands, telemetry)
//	player.js    the Player class: /stream/ws, WebCodecs, overlay
//	controls.js  keyboard driving, telemetry panel, command ack log
//	timeline.js  the flight recorder's timeline (replay, scrub, markers)
//	app.js       the demo page's wiring
//	player.css   the player's styles (player.js links it itself)
package web

import "embed"

// FS holds the player's files at its root.
//
//go:embed index.html player.js controls.js timeline.js app.js player.css
var FS embed.FS
