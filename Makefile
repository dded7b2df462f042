# sdr-caddy: the two commands are `make run` and `make test`; both install
# what is missing through scripts/deps.sh first.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/caddy
TMP   := $(CURDIR)/tmp

# caddytest and the caddy binary read these when their process starts.
export XDG_CONFIG_HOME := $(TMP)/xdg/config
export XDG_DATA_HOME   := $(TMP)/xdg/data
# The encoder (go-astiav) needs cgo; xcaddy also honours this.
export CGO_ENABLED     := 1
export PATH            := $(CURDIR)/.tools/bin:$(PATH)
export SDR_CADDY_BIN   := $(CURDIR)/$(BIN)

.PHONY: all deps build run test test-go test-main test-browser test-deploy test-nocgo test-xcaddy soak soak-race fuzz \
	bench bench-ring bench-stream bench-nats bench-encoder bench-ros bench-browser bench-scale bench-rtc bench-recorder bench-timeline bench-link

all: build

deps:
	@scripts/deps.sh

build: deps
	@mkdir -p bin $(XDG_CONFIG_HOME) $(XDG_DATA_HOME)
	@[ -x $(BIN) ] || echo "build: the first build of $(BIN) compiles Caddy, NATS, pion and the FFmpeg bindings (cgo):" \
		"2-3 minutes on 2 cores with an empty Go build cache, seconds afterwards"
	$(GO) build -o $(BIN) ./cmd/caddy

## run: build, then serve the demo at http://localhost:8080 (embedded NATS, test pattern).
run: build
	@scripts/demo.sh

## test: everything CI runs. After the builds, the suites run side by side (the
## main module's go tests in two parts, tests/deploy's, the xcaddy build), each
## one's output shown when it ends: they share no fixed port (caddytest's admin
## port is package caddymodule's alone), and most of their time is spent
## waiting on the peers they run.
test: build test-nocgo
	@echo "test: the go tests (tests/browser beside the rest), tests/deploy's and the xcaddy build run side by side; each one's output appears when it ends (a few minutes)"
	@$(MAKE) --no-print-directory -O -j4 test-go test-deploy test-xcaddy

# tests/deploy is a module of its own (tests/deploy/go.mod, with a replace to
# this one): the parsers it checks files with (compose-go, BuildKit,
# Prometheus) stay out of the module graph of every xcaddy build of
# sdr-caddy. `./...` from here does not reach it; test-deploy does.
DEPLOY := tests/deploy
# bench/link is one too, for Toxiproxy; test-nocgo vets it, test-go tests it.
LINKBENCH := bench/link

test-nocgo:
	CGO_ENABLED=0 $(GO) build ./...
	CGO_ENABLED=0 $(GO) vet ./...
	cd $(DEPLOY) && CGO_ENABLED=0 $(GO) vet ./...
	cd $(LINKBENCH) && CGO_ENABLED=0 $(GO) vet ./...

# GOTESTFLAGS adds flags to go test (scripts/soak.sh sets -json).
GOTESTFLAGS ?=
# test-go is every go test of the main module and bench/link, in two parts that
# run side by side under make -j: tests/browser (Chromium; about 2.5 minutes,
# mostly waiting on the browser) and the rest, so that the longest package
# starts first instead of last.
BROWSER := ./tests/browser
test-go: test-main test-browser

test-main:
	$(GO) vet ./...
	set -o pipefail; pkgs=$$($(GO) list ./... | grep -v '/tests/browser$$') && \
		$(GO) test -count=1 -timeout 30m $(GOTESTFLAGS) $$pkgs
	cd $(LINKBENCH) && $(GO) test -count=1 -timeout 5m $(GOTESTFLAGS) ./...

test-browser:
	$(GO) test -count=1 -timeout 30m $(GOTESTFLAGS) $(BROWSER)

test-deploy:
	cd $(DEPLOY) && $(GO) vet ./...
	cd $(DEPLOY) && $(GO) test -count=1 -timeout 30m $(GOTESTFLAGS) ./...

test-xcaddy:
	@scripts/xcaddy-check.sh

## soak: `make test` SOAK_N times (default 8) on a clean clone of HEAD with a busy
## loop on every core; prints how often each test failed (scripts/soak.sh).
## soak-race: `go test -race -count=20` of the packages with concurrency, under the same load.
SOAK_N ?= 8
soak:
	@scripts/soak.sh $(SOAK_N)

soak-race:
	@scripts/soak.sh --race

## fuzz: run every fuzz target for a bounded time each (FUZZTIME, default 60s).
## The seed corpora run in plain `go test`, so `make test` covers them.
FUZZTIME ?= 60s
FUZZ_TARGETS := shmring:FuzzParseRegion shmring:FuzzReaderPolls nvenc:FuzzParseSPS \
	internal/rosbridge:FuzzFragments internal/rosbridge:FuzzGlob \
	internal/rtc:FuzzParseGamepad internal/rtc:FuzzParseCommand internal/rtc:FuzzSignalHandle \
	internal/strictjson:FuzzCheck
fuzz: deps
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz ./$$pkg $$fn for $(FUZZTIME)"; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME); \
	done

## bench: every benchmark program; each ends with a BENCH line.
## bench-<name>: the one in bench/<name>.
BENCHES := ring stream nats encoder ros browser scale rtc recorder timeline
bench: $(addprefix bench-,$(BENCHES)) bench-link

$(addprefix bench-,$(BENCHES)): bench-%: build
	$(GO) run ./bench/$*

# bench/link is a module of its own: go run from its directory.
bench-link: build
	cd $(LINKBENCH) && $(GO) run .
