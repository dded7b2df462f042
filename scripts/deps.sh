#!/usr/bin/env bash
# Installs what sdr-caddy's build, demo and tests need, and only what is missing.
# Idempotent: a second run installs nothing and takes a second or two.
#
#   Debian packages : FFmpeg dev libraries (go-astiav, cgo), pkg-config, gcc,
#                     chromium, ffmpeg (CLI, used by tests and benchmarks),
#                     ShellCheck 0.9.0 (run by the workflow and script tests),
#                     linked into .tools/bin once its version is checked
#   Go tools        : xcaddy v0.4.5, nats-server v2.15.2 (the only nats-server the
#                     tests run; Debian's older one is not installed) and
#                     actionlint v1.7.7 (the workflow test), into .tools/bin
#   npm packages    : tests/node (roslib, playwright-core, ws, @mcap/core)
#
# When another apt-get holds the package locks (unattended-upgrades often does
# on a fresh machine right after boot), it waits up to 5 minutes, saying so.
#
# Usage: scripts/deps.sh [--no-browser]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

want_browser=1
[ "${1:-}" = "--no-browser" ] && want_browser=0

say() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: ERROR: %s\n' "$*" >&2; exit 1; }

# apt-get's locks, which another apt-get (unattended-upgrades, apt-daily)
# may hold: the dpkg frontend lock for install, the lists lock for update.
apt_locks=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock)
lock_wait=300 # seconds
sudo="" # "sudo" when apt-get needs it

# lock_holder prints the process that holds one of apt_locks ("unattended-upgr
# (pid 812)"), or nothing when none does or lslocks cannot tell.
lock_holder() {
	command -v lslocks >/dev/null || return 0
	$sudo lslocks -n -o COMMAND,PID,PATH 2>/dev/null | awk -v locks="${apt_locks[*]}" '
		BEGIN { n = split(locks, l, " "); for (i = 1; i <= n; i++) want[l[i]] = 1 }
		($3 in want) { printf "%s (pid %s)", $1, $2; exit }'
}

# apt_get runs apt-get with its arguments (stdout discarded, errors shown). While
# another process holds apt's locks it waits, up to lock_wait seconds in all,
# and says once what it waits for: install waits inside apt-get
# (DPkg::Lock::Timeout), update (which has no such option) by being retried.
apt_get() {
	local start=$SECONDS said=0 holder err left
	while :; do
		left=$((lock_wait - (SECONDS - start)))
		holder=$(lock_holder)
		if [ -z "$holder" ] || [ "$left" -le 0 ]; then
			if err=$($sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$((left > 0 ? left : 0))" "$@" 2>&1 >/dev/null); then
				[ -n "$err" ] && printf '%s\n' "$err" >&2
				return 0
			fi
			if ! grep -q 'Could not get lock' <<<"$err" || [ "$left" -le 0 ]; then
				printf '%s\n' "$err" >&2
				return 1
			fi
			holder="another apt-get"
		fi
		if [ "$said" = 0 ]; then
			say "waiting for $holder to release apt's lock (up to $((lock_wait / 60)) minutes; on a fresh machine unattended-upgrades often holds it after boot)"
			said=1
		fi
		sleep 2
	done
}

command -v go >/dev/null || die "Go 1.26 is required (https://go.dev/dl/); 'go' is not on PATH"

# ShellCheck is pinned: the tests run .tools/bin/shellcheck, and a different
# version reports different things. 0.9.0 is Debian 12's (CI's golang:bookworm).
shellcheck_version=0.9.0

# --- Debian packages -------------------------------------------------------
pkgs=(pkg-config gcc libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
      libavdevice-dev libavfilter-dev libswresample-dev ffmpeg python3 nodejs npm shellcheck)
[ "$want_browser" = 1 ] && pkgs+=(chromium)
missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		# node, npm and python3 may come from elsewhere than Debian: accept what is on PATH.
		case "$p" in
			nodejs) command -v node >/dev/null && continue ;;
			npm) command -v npm >/dev/null && continue ;;
			python3) command -v python3 >/dev/null && continue ;;
			shellcheck) command -v shellcheck >/dev/null && continue ;; # its version is checked below
		esac
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	if ! command -v apt-get >/dev/null; then
		die "missing packages: ${missing[*]}; this script installs them with apt-get (Debian/Ubuntu). Install them by hand, then run it again."
	fi
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null || die "missing packages: ${missing[*]}; run as root or install sudo, or install them by hand"
		sudo="sudo"
	fi
	say "installing Debian packages: ${missing[*]} (a few minutes on a fresh machine; apt-get is quiet meanwhile)"
	apt_get update -qq || die "apt-get update failed; install by hand: ${missing[*]}"
	apt_get install -y -qq --no-install-recommends "${missing[@]}" \
		|| die "apt-get install failed; install by hand: ${missing[*]}"
fi
pkg-config --exists libavcodec libavutil libswscale \
	|| die "pkg-config cannot find the FFmpeg libraries (libavcodec, libavutil, libswscale)"

mkdir -p .tools/bin

# --- shellcheck, pinned ----------------------------------------------------
# The tests run .tools/bin/shellcheck and nothing else from PATH; it is linked
# only when its version is the pinned one.
if sc=$(command -v shellcheck); then
	sc=$(readlink -f "$sc") # not .tools/bin's own link
	v=$("$sc" --version | sed -n 's/^version: //p')
	if [ "$v" = "$shellcheck_version" ]; then
		ln -sfn "$sc" .tools/bin/shellcheck
	else
		rm -f .tools/bin/shellcheck
		say "WARNING: $sc is shellcheck $v; the tests want $shellcheck_version (Debian 12's) and fail until .tools/bin/shellcheck is that version"
	fi
fi

# --- Go tools --------------------------------------------------------------
export GOBIN="$root/.tools/bin"
go_tool() { # name module@version
	local name=$1 mod=$2 stamp=".tools/bin/.$1.version"
	if [ -x ".tools/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then return; fi
	say "go install $mod (downloads and compiles it: a minute or two the first time)"
	go install "$mod" || die "go install $mod failed (needs the Go module proxy)"
	echo "$mod" >"$stamp"
}
go_tool xcaddy github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
go_tool nats-server github.com/nats-io/nats-server/v2@v2.15.2
go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint@v1.7.7

# --- npm packages ----------------------------------------------------------
# The stamp holds the checksum of the package-lock.json that was installed: a
# fresh clone or worktree has newer files, not other packages. (An empty stamp
# is an older deps.sh's, valid while the lock file is not newer than it.)
if [ -f tests/node/package.json ]; then
	nm=tests/node/node_modules stamp=tests/node/node_modules/.sdr-stamp
	sum=$(sha256sum tests/node/package-lock.json | cut -d' ' -f1)
	if [ -f "$stamp" ] && [ ! -s "$stamp" ] && [ ! tests/node/package-lock.json -nt "$stamp" ]; then
		echo "$sum" >"$stamp"
	fi
	if [ ! -d "$nm" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
		if [ -L "$nm" ]; then
			# npm ci would empty the directory it points to, and replace the link.
			say "WARNING: $nm is a link to $(readlink "$nm") whose packages are not this package-lock.json's; run scripts/deps.sh there"
		else
			say "npm ci in tests/node (downloads roslib, playwright-core, ws and @mcap/core: about a minute)"
			(cd tests/node && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in tests/node failed (needs the npm registry)"
			echo "$sum" >"$stamp"
		fi
	fi
fi
say "ok"
