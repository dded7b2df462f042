#!/usr/bin/env bash
# Builds sdr-caddy the way a user does, with xcaddy and this checkout as a
# local module, and checks that the result carries our modules.
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
mods=$("$out/caddy" list-modules)
for m in http.handlers.sdr_stream http.handlers.sdr_nats http.handlers.sdr_ros http.handlers.sdr_player \
	http.handlers.sdr_whep sdr_nats sdr_encoder admin.api.sdr_encoders; do
	grep -qx "$m" <<<"$mods" || { echo "xcaddy-check: module $m missing from the xcaddy build" >&2; exit 1; }
done
cmds=$("$out/caddy" help)
for c in sdr-ring sdr-nvenc-probe sdr-testsrc; do
	grep -q "^  $c " <<<"$cmds" || { echo "xcaddy-check: subcommand $c missing from the xcaddy build" >&2; exit 1; }
done
# The environment is prepared in this build too: an old socket address in
# SDR_LISTEN_ADDR becomes a bind, not a site host (docs/configuration.md).
adapted=$(SDR_LISTEN_ADDR=0.0.0.0:8080 "$out/caddy" adapt --config Caddyfile.example --adapter caddyfile 2>/dev/null)
grep -q '"tcp4/0.0.0.0:8080"' <<<"$adapted" || { echo "xcaddy-check: SDR_LISTEN_ADDR=0.0.0.0:8080 is not read as a socket address in the xcaddy build" >&2; exit 1; }
echo "xcaddy-check: ok ($(grep -c '^sdr\|\.sdr_' <<<"$mods") sdr modules)"
