# k8s-ws-proxy — every entry point a developer or CI needs.
#
#   make demo   run the proxy against a local exec backend (no cluster needed)
#   make test   everything CI checks: vet, unit, chart, end-to-end tests (race)
#   make bench  side-by-side benchmark ratios
#   make fuzz   run every fuzz target for FUZZTIME each
#   make size   fail if the stripped serve binary passes 45 MB

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME  ?= 60s
# go test's own timeout; CI kills the whole run at 90 minutes.
TEST_TIMEOUT ?= 40m

export CGO_ENABLED ?= 0

.PHONY: all build test vet bench fuzz demo load image clean size

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# -race needs cgo.
test: vet
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

# The limit lives in cmd/k8s-ws-proxy/size_test.go (also run by make test).
size:
	$(GO) test -count=1 -v -run '^(TestServeBinarySize|TestDependencies)$$' ./cmd/k8s-ws-proxy/

# The no-cluster demo: local exec backend + the real proxy binary.
demo: build
	bin/k8s-ws-proxy-demo

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 60m ./hmac/ ./tests/bench/

load:
	$(GO) test -tags load -run TestLoad -count=1 -timeout 30m -v ./tests/bench/

IMAGE ?= ghcr.io/k8s-ws-proxy/k8s-ws-proxy:$(VERSION)
image:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf bin/
