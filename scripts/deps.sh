#!/usr/bin/env bash
# Installs what sdr-caddy's build, demo and tests need, and only what is missing.
# Idempotent: a second run installs nothing and takes a second or two.
#
#   Debian packages : FFmpeg dev libraries (go-astiav, cgo), pkg-config, gcc,
#                     nats-server, chromium, ffmpeg (CLI, used by tests and benchmarks)
#   Go tools        : xcaddy v0.4.5 and nats-server v2.15.2, into .tools/bin
#   npm packages    : tests/node (roslib, playwright-core, ws)
#
# Usage: scripts/deps.sh [--no-browser]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

want_browser=1
[ "${1:-}" = "--no-browser" ] && want_browser=0

say() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "Go 1.26 is required (https://go.dev/dl/); 'go' is not on PATH"

# --- Debian packages -------------------------------------------------------
pkgs=(pkg-config gcc libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
      libavdevice-dev libavfilter-dev libswresample-dev ffmpeg nats-server python3 nodejs npm)
[ "$want_browser" = 1 ] && pkgs+=(chromium)
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		# node, npm and python3 may come from elsewhere than Debian: accept what is on PATH.
		case "$p" in
			nodejs) command -v node >/dev/null && continue ;;
			npm) command -v npm >/dev/null && continue ;;
			python3) command -v python3 >/dev/null && continue ;;
		esac
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	if ! command -v apt-get >/dev/null; then
		die "missing packages: ${missing[*]}; this script installs them with apt-get (Debian/Ubuntu). Install them by hand, then run it again."
	fi
	sudo=""
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null || die "missing packages: ${missing[*]}; run as root or install sudo, or install them by hand"
		sudo="sudo"
	fi
	say "installing Debian packages: ${missing[*]}"
	$sudo apt-get update -qq || die "apt-get update failed; install by hand: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
		|| die "apt-get install failed; install by hand: ${missing[*]}"
fi
pkg-config --exists libavcodec libavutil libswscale \
	|| die "pkg-config cannot find the FFmpeg libraries (libavcodec, libavutil, libswscale)"

# --- Go tools --------------------------------------------------------------
mkdir -p .tools/bin
export GOBIN="$root/.tools/bin"
go_tool() { # name module@version
	local name=$1 mod=$2 stamp=".tools/bin/.$1.version"
	if [ -x ".tools/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then return; fi
	say "go install $mod"
	go install "$mod" || die "go install $mod failed (needs the Go module proxy)"
	echo "$mod" >"$stamp"
}
go_tool xcaddy github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
go_tool nats-server github.com/nats-io/nats-server/v2@v2.15.2

# --- npm packages ----------------------------------------------------------
if [ -f tests/node/package.json ]; then
	if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules/.sdr-stamp ]; then
		say "npm ci in tests/node"
		(cd tests/node && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in tests/node failed (needs the npm registry)"
		touch tests/node/node_modules/.sdr-stamp
	fi
fi
say "ok"
