# meshnode build and test entry points. `make test` is what CI runs (via .ci/run).
GO      ?= go
BIN     ?= bin
PKGS    := ./...
FUZZTIME ?= 10s

.PHONY: all build test unit e2e bench fuzz lint demo clean deps

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	bash scripts/install-deps.sh

# Unit tests (no root) plus the root-only suites (network namespaces, real TUN, real nebula).
# Under CI=true the root suites must run; elsewhere they skip with a message when not root.
test: lint build
	@# The race detector makes sync.Pool drop items, so the zero-allocation guards of the hot
	@# path run once without it, then everything runs with it.
	$(GO) test -count=1 -run 'Allocate' ./handshake/ ./firewall/ ./overlay/ ./overlay/header/ ./overlay/replay/ ./overlay/udp/
	$(GO) test -race -count=1 -timeout 40m $(PKGS)

unit:
	$(GO) test -race -count=1 -short $(PKGS)

e2e: build
	$(GO) test -count=1 -timeout 40m -v ./e2e/...

# Go micro-benchmarks, then (as root) the side-by-side daemon comparison with nebula and the
# bare veth, written to bench-results.md.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	MESHNODE=$(CURDIR)/$(BIN)/meshnode bash scripts/bench.sh -o bench-results.md

# Runs every Fuzz target for FUZZTIME each.
fuzz:
	bash scripts/fuzz.sh $(FUZZTIME)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

demo: build
	bash scripts/demo.sh

clean:
	rm -rf $(BIN)
