#!/usr/bin/env bash
# Runs the test suite again and again under CPU load and counts the flakes:
# a test that fails in one run of eight fails in CI too, where machines are
# shared and noisy.
#
#   scripts/soak.sh [N]               `make test` N times (default 8)
#   scripts/soak.sh --race [N] [PKG]  `go test -race -count=N` (default 20) of
#                                     the packages with concurrency, or of PKG...
#
# Each soak runs in a clean clone of HEAD in a temporary directory: what is not
# committed is not tested. It reuses this checkout's .tools (a link) and
# tests/node/node_modules (a copy), and the Go build and module caches; it
# runs scripts/deps.sh and builds once before the load starts. Then it starts
# one busy loop per core (stopped when it ends, also on Ctrl-C), runs the
# tests with `go test -json`, and prints how often each test failed. The JSON
# logs stay in tmp/soak/. Each run is `make -k test`: a failing go test does not
# keep the xcaddy build from running. Exit status 1 when anything failed.
#
# caddytest's admin listener is the fixed localhost:2999: run one soak at a
# time on a machine, and no other `make test` beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf 'soak: %s\n' "$*" >&2; }
die() { printf 'soak: ERROR: %s\n' "$*" >&2; exit 2; }

race_pkgs=(./internal/hub/ ./internal/source/ ./shmring/ ./internal/relay/ ./internal/gate/
	./internal/rosbridge/ ./internal/natsvideo/)
mode=suite
if [ "${1:-}" = "--race" ]; then
	mode=race
	shift
fi
default_n=8
[ "$mode" = race ] && default_n=20
n=${1:-$default_n}
[ $# -gt 0 ] && shift
[[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, not '$n'"
[ $# -gt 0 ] && race_pkgs=("$@")

command -v python3 >/dev/null || die "python3 is needed to read go test -json (scripts/deps.sh installs it)"
head=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
	say "uncommitted changes are not tested: the soak runs a clean clone of HEAD ${head:0:12}"
fi

stamp=$(date +%Y%m%d-%H%M%S)
logs="$root/tmp/soak/$stamp"
work=$(mktemp -d "${TMPDIR:-/tmp}/sdr-soak.XXXXXX")
src="$work/src"
mkdir -p "$logs"
hog=()
cleanup() {
	if [ ${#hog[@]} -gt 0 ]; then
		kill "${hog[@]}" 2>/dev/null || true
		wait "${hog[@]}" 2>/dev/null || true
		hog=()
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# --- the clean clone -------------------------------------------------------
say "cloning HEAD ${head:0:12} into $src"
git clone -q --no-checkout "$root" "$src"
git -C "$src" fetch -q "$root" "$head"
git -C "$src" checkout -q --detach "$head"
if [ -e .tools ]; then
	ln -s "$(readlink -f .tools)" "$src/.tools"
fi
if [ -d tests/node/node_modules ] && cmp -s tests/node/package-lock.json "$src/tests/node/package-lock.json"; then
	# A copy, not a link: npm ci through a link would empty what it points to.
	cp -a "$(readlink -f tests/node/node_modules)" "$src/tests/node/node_modules"
fi
say "scripts/deps.sh and the first build, before the load starts"
make -C "$src" --no-print-directory build >"$logs/prepare.log" 2>&1 \
	|| { tail -20 "$logs/prepare.log" >&2; die "preparing the clone failed: $logs/prepare.log"; }

# --- the load --------------------------------------------------------------
cores=$(nproc)
for _ in $(seq "$cores"); do
	(while :; do :; done) &
	hog+=($!)
done
say "a busy loop on each of $cores cores (pids ${hog[*]})"

# --- the runs --------------------------------------------------------------
# Each run's go test -json goes to run-I.json, everything else to run-I.log.
run_suite() { # i
	make -k -C "$src" --no-print-directory test GOTESTFLAGS=-json >"$logs/run-$1.out" 2>"$logs/run-$1.log"
}
run_race() { # (one go test, -count=N)
	(cd "$src" && go test -race -count="$n" -timeout 120m -json "${race_pkgs[@]}") >"$logs/run-1.out" 2>"$logs/run-1.log"
}

runs=$n
what="make test"
if [ "$mode" = race ]; then
	runs=1
	what="go test -race -count=$n ${race_pkgs[*]}"
fi
for i in $(seq "$runs"); do
	start=$SECONDS
	rc=0
	if [ "$mode" = race ]; then run_race || rc=$?; else run_suite "$i" || rc=$?; fi
	# make's own lines and go vet's go to .out too: the JSON is the lines that start with {.
	grep '^{' "$logs/run-$i.out" >"$logs/run-$i.json" || true
	grep -v '^{' "$logs/run-$i.out" >>"$logs/run-$i.log" || true
	rm -f "$logs/run-$i.out"
	echo "$rc" >"$logs/run-$i.rc"
	say "run $i/$runs: exit $rc after $((SECONDS - start))s"
done

kill "${hog[@]}" 2>/dev/null || true
wait "${hog[@]}" 2>/dev/null || true
hog=()

# --- the count -------------------------------------------------------------
python3 - "$logs" "$runs" "$n" "$mode" "$what" "${head:0:12}" "$cores" <<'EOF'
import collections, glob, json, os, sys

logs, runs, n, mode, what, head, cores = sys.argv[1:8]
runs, n = int(runs), int(n)
# fails[name] = how many runs (or, with -count, how many repetitions) failed it.
fails = collections.Counter()
tries = collections.Counter()
failed_runs = 0
for i in range(1, runs + 1):
    base = os.path.join(logs, f"run-{i}")
    rc = int(open(base + ".rc").read())
    failed, ran, pkg_failed, pkg_with_test_failures = [], collections.Counter(), set(), set()
    with open(base + ".json") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            act, pkg, test = ev.get("Action"), ev.get("Package", ""), ev.get("Test")
            short = pkg.removeprefix("github.com/sdr-os/sdr-caddy/") or "."
            if act in ("pass", "fail", "skip") and test:
                ran[(short, test)] += 1
            if act == "fail" and test:
                failed.append((short, test))
                pkg_with_test_failures.add(short)
            elif act == "fail":
                pkg_failed.add(short)
    # A parent test fails with its subtest: count the subtest only.
    names = set(failed)
    for short, test in failed:
        if any(p == short and t.startswith(test + "/") for p, t in names):
            continue
        fails[f"{short} {test}"] += 1
    for short in pkg_failed - pkg_with_test_failures:
        fails[f"{short} (the package: build, panic or timeout)"] += 1
    for key, c in ran.items():
        tries[f"{key[0]} {key[1]}"] += c
    if rc != 0 and not failed and not pkg_failed:
        fails[f"{what} outside go test (exit {rc}; see run-{i}.log)"] += 1
    if rc != 0 or failed or pkg_failed:
        failed_runs += 1

per = "runs" if mode == "suite" else "repetitions"
print(f"soak: {what} on {head} (clean clone), a busy loop on each of {cores} cores")
if fails:
    print(f"{'FAILED':>6}  {'OF':>4}  TEST")
    for name, c in sorted(fails.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{c:>6}  {tries.get(name, runs if mode == 'suite' else n):>4}  {name}")
tests = len([k for k in tries if "/" not in k.split(" ", 1)[1]])
total = runs if mode == "suite" else n
print(f"soak: {len(fails)} failing test(s), {failed_runs} of {runs} run(s) failed; "
      f"{tests} tests, {total} {per} each; logs in {logs}")
sys.exit(1 if fails or failed_runs else 0)
EOF
