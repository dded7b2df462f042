#!/usr/bin/env bash
# GPU check of the sdr_encoder app (issue 5), for a machine with an NVIDIA
# datacenter GPU (A100/H100/H200: no NVENC engine). Two halves:
#
#   tests/encoder/gpu_check.sh pack        # here: build the binary, bundle the shared
#                                          # libraries it needs into tmp/gpucheck/
#   tests/encoder/gpu_check.sh run [OUT]   # there: run the probe and a 6 s encoder,
#                                          # write the results under OUT ($OUT or ./out)
#
# Expected on an H100/H200: `sdr-nvenc-probe` exits 1 with a verdict that starts
# with "GPU without NVENC" and quotes FFmpeg's "OpenEncodeSessionEx failed:
# unsupported device (2)" line verbatim (or "library missing: container lacks the
# `video` driver capability" where libnvidia-encode.so.1 is not mounted), and the
# encoder falls back to libx264 (GET /sdr/encoders: backend libx264, the
# h264_nvenc attempt with its reason).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=tmp/gpucheck

case "${1:-}" in
pack)
	mkdir -p "$dir/lib"
	CGO_ENABLED=1 go build -o "$dir/caddy" ./cmd/caddy
	# Every shared library but the C library's own, so the binary runs on a bare
	# machine; the NVIDIA libraries come from the driver there (dlopen'ed).
	ldd "$dir/caddy" | awk '/=> \// {print $3}' | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
		while read -r lib; do cp -L "$lib" "$dir/lib/"; done
	du -sh "$dir"
	;;
run)
	out=${2:-${OUT:-out}}
	mkdir -p "$out"
	export LD_LIBRARY_PATH="$PWD/$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	bin="$PWD/$dir/caddy"
	{ nvidia-smi || true; } >"$out/nvidia-smi.txt" 2>&1
	set +e
	"$bin" sdr-nvenc-probe >"$out/probe.json" 2>"$out/probe.stderr"
	echo "$?" >"$out/probe.exit"
	set -e
	echo "probe exit $(cat "$out/probe.exit")"
	grep -E '"verdict"|"reason"' "$out/probe.json" || true

	admin=${SDR_GPU_CHECK_ADMIN:-127.0.0.1:29990}
	get() { # url
		if command -v curl >/dev/null; then curl -sf "$1"; else python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"; fi
	}
	work=$(mktemp -d)
	cat >"$work/Caddyfile" <<CF
{
	admin $admin
	sdr_encoder {
		encoder gpu {
			input pattern 1280x720
			fps 30
		}
	}
}
CF
	"$bin" run --config "$work/Caddyfile" --adapter caddyfile >"$out/caddy.log" 2>&1 &
	pid=$!
	sleep 6
	get "http://$admin/sdr/encoders" >"$out/encoders.json" || echo "GET /sdr/encoders failed" >>"$out/caddy.log"
	get "http://$admin/metrics" | grep -E '^caddy_sdr_encoder_' >"$out/metrics.txt" || true
	kill "$pid"
	wait "$pid" || true
	grep -E '"backend"|"error"|"frames"' "$out/encoders.json" | head -20 || true
	;;
*)
	echo "usage: $0 pack | run [OUT]" >&2
	exit 2
	;;
esac
