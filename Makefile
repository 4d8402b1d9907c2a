# k8s-ws-proxy — every entry point a developer or CI needs.
#
#   make demo   run the proxy against a local exec backend (no cluster needed)
#   make test   everything CI checks: vet, unit, chart, end-to-end tests (race)
#   make tools  build and cache the tools the tests run (make test does it first)
#   make bench  side-by-side benchmark ratios
#   make fuzz   run every fuzz target for FUZZTIME each
#   make size   fail if the stripped serve binary passes 45 MB
#   make image  the multi-arch image (Docker, or daemonless; see below)
#   make release-dry  what a tag would publish (docs/release.md)

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME  ?= 60s
# go test's own timeout; CI kills the whole run at 90 minutes.
TEST_TIMEOUT ?= 40m

export CGO_ENABLED ?= 0

.PHONY: all build tools test vet bench fuzz demo load image sbom release-dry clean size

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Every tool the suites run (kube-apiserver, etcd, helm, cosign, ...), built
# and cached in .cache/ before go test starts, so that no test package spends
# its timeout on a build (internal/tools/prebuild.go).
tools:
	$(GO) run ./internal/tools/prebuild

# -race needs cgo.
test: vet tools
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

# make image: the Dockerfile where a Docker engine answers (docker buildx,
# both platforms), else the daemonless build (internal/tools/releaser, with
# go-containerregistry): the same static nonroot image for linux/amd64 and
# linux/arm64 as one OCI index, written to $(OCI_LAYOUT), or pushed to $(IMAGE)
# with PUSH=1 (loopback registries over plain HTTP, others with the
# credentials in ~/.docker/config.json). DAEMONLESS=1 forces the second path.
IMAGE     ?= ghcr.io/k8s-ws-proxy/k8s-ws-proxy:$(VERSION)
PLATFORMS ?= linux/amd64,linux/arm64
OCI_LAYOUT ?= dist/oci
IMAGE_DIGEST_FILE ?= dist/image.digest
SBOM      ?= dist/sbom.cdx.json
# Pins of internal/tools/release.go (tests/release checks they agree).
CYCLONEDX_GOMOD_VERSION ?= v1.10.0
PUSH      ?=
DAEMONLESS ?= $(if $(shell docker info >/dev/null 2>&1 && echo yes),,1)
image:
	@mkdir -p dist
ifeq ($(DAEMONLESS),)
	docker buildx build --platform $(PLATFORMS) --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
	  -t $(IMAGE) $(if $(PUSH),--push --metadata-file dist/buildx.json,--output type=oci,dest=dist/image.oci.tar) .
else
	$(GO) run ./internal/tools/releaser image -version $(VERSION) -commit $(COMMIT) -platforms $(PLATFORMS) \
	  $(if $(PUSH),-push $(IMAGE),-layout $(OCI_LAYOUT)) -digest-file $(IMAGE_DIGEST_FILE)
endif

# CycloneDX SBOM of the binary the image ships (its embedded build info: the
# modules actually linked), built with the image's flags.
sbom:
	@mkdir -p $(dir $(SBOM)) dist/sbom-bin
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOFLAGS=-buildvcs=false $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
	  -o dist/sbom-bin/k8s-ws-proxy ./cmd/k8s-ws-proxy
	$(GO) run github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@$(CYCLONEDX_GOMOD_VERSION) \
	  bin -json -version $(VERSION) -output $(SBOM) dist/sbom-bin/k8s-ws-proxy

# What a tag would publish: image refs and (built here) digests and sizes,
# SBOM, signatures, the chart and its pinned image. Pushes nothing.
TAG ?= $(shell git describe --tags --exact-match 2>/dev/null || echo v0.0.0-dev)
RELEASE_DRY_BUILD ?= true
release-dry:
	$(GO) run ./internal/tools/releaser plan -tag $(TAG) -commit $(COMMIT) -platforms $(PLATFORMS) -build=$(RELEASE_DRY_BUILD)

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf bin/ dist/
