#!/usr/bin/env bash
# The `make run` demo: Caddyfile.example, unchanged, with `caddy sdr-testsrc`
# standing in for the simulator (the moving test pattern, H.264, written into
# the encoded-frame ring; on NATS it answers commands as the simulator does).
# Prints the URL; Ctrl-C stops both processes.
#
# Environment (all optional):
#   SDR_DEMO_PORT        HTTP port of the edge (default 8080)
#   SDR_LISTEN_ADDR      the transport-compatible site (default :<port+1>)
#   SDR_BIND_HOST        interface to listen on (default 127.0.0.1; empty: all)
#   SDR_ADMIN_ADDR       admin API (default localhost:2019)
#   SDR_METRICS_ADDR     Prometheus /metrics (default localhost:9180)
#   SDR_SHM_PATH         encoded ring (default /dev/shm/sdr_os_ipc/frames)
#   SDR_NATS_URL         NATS (default: the server's embedded one, SDR_NATS_EMBEDDED_ADDR or 127.0.0.1:4222)
#   SDR_DEMO_CODEC       h264 (default) or jpeg
#   SDR_DEMO_RESOLUTION  picture size (default 1280x720)
#   SDR_DEMO_FPS         frame rate (default 60)
#   SDR_DEMO_GOP         frames per GOP (default 60)
#   SDR_CADDY_BIN        the binary (default bin/caddy)
#   SDR_RECORDER         the flight recorder: on (default with the embedded NATS
#                        server, which then runs JetStream) or off; it keeps the
#                        last SDR_RECORDER_MAX_AGE (2m), at most SDR_RECORDER_MAX_BYTES (256MiB)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${SDR_CADDY_BIN:-bin/caddy}
say() { printf 'demo: %s\n' "$*" >&2; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

[ -x "$bin" ] || die "$bin not found: run 'make build' (or 'make run', which builds first)"
[ -f Caddyfile.example ] || die "Caddyfile.example not found in $(pwd)"

port=${SDR_DEMO_PORT:-8080}
export SDR_HTTP_ADDR=":$port"
# Caddyfile.example's second site (the old transport-server's port, 8080 by
# default) must not take the edge's port.
export SDR_LISTEN_ADDR=${SDR_LISTEN_ADDR:-:$((port + 1))}
export SDR_BIND_HOST=${SDR_BIND_HOST-127.0.0.1}
export SDR_ADMIN_ADDR=${SDR_ADMIN_ADDR:-localhost:2019}
export SDR_METRICS_ADDR=${SDR_METRICS_ADDR:-localhost:9180}
export SDR_SHM_PATH=${SDR_SHM_PATH:-/dev/shm/sdr_os_ipc/frames}
export XDG_CONFIG_HOME=${XDG_CONFIG_HOME:-$(pwd)/tmp/xdg/config}
export XDG_DATA_HOME=${XDG_DATA_HOME:-$(pwd)/tmp/xdg/data}
mkdir -p "$XDG_CONFIG_HOME" "$XDG_DATA_HOME"

# The flight recorder, with small limits, so that a first run shows replay
# and `caddy sdr-export`. It needs JetStream: the embedded server gets it; an
# external SDR_NATS_URL is left as it is, and the recorder off unless asked.
if [ -z "${SDR_NATS_URL:-}" ]; then
	export SDR_RECORDER=${SDR_RECORDER:-on}
	export SDR_NATS_JETSTREAM=${SDR_NATS_JETSTREAM:-on}
fi
export SDR_RECORDER_MAX_AGE=${SDR_RECORDER_MAX_AGE:-2m}
export SDR_RECORDER_MAX_BYTES=${SDR_RECORDER_MAX_BYTES:-256MiB}

if command -v ss >/dev/null && ss -Hltn "sport = :$port" | grep -q .; then
	die "port $port is in use; set SDR_DEMO_PORT to another one"
fi

# healthy: GET /health answers 200 (bash's /dev/tcp: no curl needed).
healthy() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
		printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
		read -r -t 2 _ status _ <&3 && [ "$status" = 200 ]
	) 2>/dev/null
}

pids=()
# shellcheck disable=SC2317 # stop runs from the traps below
stop() {
	trap - INT TERM EXIT
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'say stopping; stop; exit 0' INT TERM
trap stop EXIT

"$bin" sdr-testsrc \
	--path "$SDR_SHM_PATH" \
	--codec "${SDR_DEMO_CODEC:-h264}" \
	--resolution "${SDR_DEMO_RESOLUTION:-1280x720}" \
	--fps "${SDR_DEMO_FPS:-60}" \
	--gop "${SDR_DEMO_GOP:-60}" \
	--nats "${SDR_NATS_URL:-nats://${SDR_NATS_EMBEDDED_ADDR:-127.0.0.1:4222}}" &
pids+=($!)

"$bin" run --config Caddyfile.example --adapter caddyfile &
pids+=($!)

url="http://localhost:$port/"
for _ in $(seq 100); do
	if healthy; then
		break
	fi
	for pid in "${pids[@]}"; do
		kill -0 "$pid" 2>/dev/null || die "a demo process exited during start-up (see above)"
	done
	sleep 0.1
done

cat >&2 <<EOF

  sdr-caddy demo
    player   $url
    health   http://localhost:$port/health
    metrics  http://$SDR_METRICS_ADDR/metrics
    ring     $SDR_SHM_PATH (written by 'caddy sdr-testsrc')
EOF
if [ "${SDR_RECORDER:-off}" = on ]; then
	cat >&2 <<EOF
    recorder the last $SDR_RECORDER_MAX_AGE on JetStream: replay it on the player's timeline,
             export it with '$bin sdr-export --from -1m --out demo.mp4'
EOF
fi
cat >&2 <<EOF

  Ctrl-C stops both processes.

EOF

# Whichever exits first ends the demo.
set +e
wait -n "${pids[@]}"
rc=$?
say "a demo process exited (status $rc); stopping the other"
exit "$rc"
