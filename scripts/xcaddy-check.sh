#!/usr/bin/env bash
# Builds sdr-caddy the way a user does, with xcaddy and this checkout as a
# local module, and checks that the result carries our modules. Two builds:
# the repository's root package (the README's line) and package caddymodule
# (Caddy's usual --with .../caddymodule), each of which registers everything.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/tmp/xcaddy"
mkdir -p "$out"
export PATH="$root/.tools/bin:$PATH" CGO_ENABLED=1
# xcaddy asks `go get` for the module before it applies the replacement; an
# explicit version (@v0.0.0) keeps that from looking the module up on the
# proxy or in its (here unreachable) repository. On the public proxy the
# plain `--with github.com/sdr-os/sdr-caddy=.` works as well.
xcaddy build v2.11.9 --output "$out/caddy" --with "github.com/sdr-os/sdr-caddy@v0.0.0=$root"
# A package of the module: --replace points the module at this checkout
# without importing its root package. `go get` of the package tries the
# package path as a module of its own first; GOPROXY=off makes that a plain
# "not found" instead of a lookup (unreachable here), and the module's own
# path, replaced, provides the package. Everything else is in the module
# cache since the first build.
GOPROXY=off xcaddy build v2.11.9 --output "$out/caddy-caddymodule" \
	--with "github.com/sdr-os/sdr-caddy/caddymodule@v0.0.0" --replace "github.com/sdr-os/sdr-caddy@v0.0.0=$root"

check() {
	local bin=$1 what=$2 mods cmds adapted
	mods=$("$bin" list-modules)
	for m in http.handlers.sdr_stream http.handlers.sdr_nats http.handlers.sdr_ros http.handlers.sdr_player \
		http.handlers.sdr_whep sdr_nats sdr_encoder sdr_start admin.api.sdr_encoders caddy.listeners.sdr_limit; do
		grep -qx "$m" <<<"$mods" || { echo "xcaddy-check: module $m missing from the xcaddy build $what" >&2; exit 1; }
	done
	cmds=$("$bin" help)
	for c in sdr-ring sdr-nvenc-probe sdr-testsrc sdr-health; do
		grep -q "^  $c " <<<"$cmds" || { echo "xcaddy-check: subcommand $c missing from the xcaddy build $what" >&2; exit 1; }
	done
	# The environment is prepared in this build too: an old socket address in
	# SDR_LISTEN_ADDR becomes a bind, not a site host (docs/configuration.md).
	adapted=$(SDR_LISTEN_ADDR=0.0.0.0:8080 "$bin" adapt --config Caddyfile.example --adapter caddyfile 2>/dev/null)
	grep -q '"tcp4/0.0.0.0:8080"' <<<"$adapted" || { echo "xcaddy-check: SDR_LISTEN_ADDR=0.0.0.0:8080 is not read as a socket address in the xcaddy build $what" >&2; exit 1; }
	echo "xcaddy-check: $what ok ($(grep -c '^sdr\|\.sdr_' <<<"$mods") sdr modules)"
}
check "$out/caddy" "--with github.com/sdr-os/sdr-caddy"
check "$out/caddy-caddymodule" "--with github.com/sdr-os/sdr-caddy/caddymodule"
