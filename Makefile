# meshnode build and test entry points. `make test` is what CI runs (via .ci/run).
GO      ?= go
BIN     ?= bin
PKGS    := ./...
FUZZTIME ?= 10s
# Stamped into both binaries (internal/version); see scripts/version.sh for the scheme.
VERSION ?= $(shell bash scripts/version.sh)
COMMIT  ?= $(shell bash scripts/version.sh commit)
LDFLAGS := -X github.com/meshnode/meshnode/internal/version.version=$(VERSION) \
           -X github.com/meshnode/meshnode/internal/version.commit=$(COMMIT)
# Static binaries, the same as the release's, so they run on any Linux.
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
# make install: PREFIX/bin, PREFIX/lib/systemd/system, SYSCONFDIR/meshnode (examples).
PREFIX  ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR ?=
OUT     ?= dist

.PHONY: all build install release deb testdeps test unit e2e bench fuzz lint demo clean deps

all: build

build:
	@mkdir -p $(BIN)
	$(GOBUILD) -o $(BIN)/ ./cmd/...

# Binaries, systemd units, example configs, docs and completions; nothing is enabled.
install: build
	PREFIX=$(PREFIX) SYSCONFDIR=$(SYSCONFDIR) DESTDIR=$(DESTDIR) BIN=$(CURDIR)/$(BIN) bash scripts/install.sh

# Tarballs and Debian packages for linux amd64, arm64 and arm (v7, armhf) in $(OUT).
release:
	OUT=$(OUT) VERSION=$(VERSION) COMMIT=$(COMMIT) GO=$(GO) bash scripts/release.sh

# Only the Debian package for this machine's architecture (what the package test installs).
deb:
	OUT=$(OUT) VERSION=$(VERSION) COMMIT=$(COMMIT) GO=$(GO) bash scripts/release.sh --deb-only $$($(GO) env GOARCH)

deps:
	bash scripts/install-deps.sh

# Unit tests (no root) plus the root-only suites (network namespaces, real TUN, real nebula).
# Under CI=true the root suites must run; elsewhere they skip with a message when not root.
test: testdeps lint build
	@# The race detector makes sync.Pool drop items, so the zero-allocation guards of the hot
	@# path run once without it, and so does the timer loop's scheduling test (whose timing
	@# the detector distorts); then everything runs with it.
	$(GO) test -count=1 -run 'Allocate|NoGarbage|TimerLoopLeavesTheCore' ./handshake/ ./firewall/ ./overlay/ ./overlay/header/ ./overlay/replay/ ./overlay/udp/
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

unit:
	$(GO) test -race -count=1 -short $(PKGS)

e2e: build
	$(GO) test -count=1 -timeout 40m -v ./e2e/...

# Go micro-benchmarks, then (as root) the side-by-side daemon comparison with nebula and the
# bare veth, written to bench-results.md, then the fleet-scale lighthouse and host comparison
# (issue 18; ~15 minutes at the default 100k hosts), written to fleet-results.md.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	MESHNODE=$(CURDIR)/$(BIN)/meshnode bash scripts/bench.sh -o bench-results.md
	MESHNODE=$(CURDIR)/$(BIN)/meshnode bash scripts/fleet.sh -o fleet-results.md

# Runs every Fuzz target for FUZZTIME each.
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# The demo installs what it needs (iproute2, ping) and builds bin/ itself (make build).
demo:
	@bash scripts/install-deps.sh --demo
	bash scripts/demo.sh

# What make test needs, installed when root (else the suites that need it skip, outside CI).
testdeps:
	@bash scripts/install-deps.sh --if-root

clean:
	rm -rf $(BIN) $(OUT)
