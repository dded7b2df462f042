#!/usr/bin/env bash
# Builds sdr-caddy the way a user does, with xcaddy and this checkout as a
# local module, and checks that the result carries our modules.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/tmp/xcaddy"
mkdir -p "$out"
export PATH="$root/.tools/bin:$PATH" CGO_ENABLED=1
# A local replacement must not be looked up on a module proxy that does not
# serve it: GONOPROXY names our module.
export GONOPROXY=github.com/sdr-os/sdr-caddy
xcaddy build v2.11.9 --output "$out/caddy" --with github.com/sdr-os/sdr-caddy="$root"
mods=$("$out/caddy" list-modules)
for m in http.handlers.sdr_stream; do
	grep -qx "$m" <<<"$mods" || { echo "xcaddy-check: module $m missing from the xcaddy build" >&2; exit 1; }
done
echo "xcaddy-check: ok ($(grep -c '^sdr\|\.sdr_' <<<"$mods") sdr modules)"
