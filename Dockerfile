# syntax=docker/dockerfile:1
#
# k8s-ws-proxy image: a static binary on distroless, nothing else.
#   docker build --build-arg VERSION=v0.1.0 --build-arg COMMIT=$(git rev-parse --short HEAD) -t <registry>/k8s-ws-proxy:v0.1.0 .
# Every base image names its registry host: nothing resolves implicitly to
# docker.io, so a mirror rewrite (or an outage of one registry) is visible here.
# Every base image is pinned by the digest of its multi-arch index: the tag
# says what it is, the digest what is built. To move a pin, look the tag up
# (`crane digest IMAGE:TAG`) and change both in one commit; tests/release
# checks each FROM carries a digest (not that it is the tag's: neither
# registry was reachable where these were pinned; docs/release.md says where
# each digest comes from and how to check it). Without a Docker engine, `make image`
# builds the same final image with go-containerregistry (docs/release.md).

# golang:1.26-bookworm (Go 1.26.5), OCI index for amd64, arm64, arm/v7, 386, ppc64le.
FROM --platform=$BUILDPLATFORM docker.io/library/golang:1.26-bookworm@sha256:551752d3ad9de9923190bf5280500617ed8fee287ffb4b0220e770ef89346258 AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Static (no cgo, so no libc and no dynamic loader in the final image),
# reproducible paths (-trimpath), version stamped for `k8s-ws-proxy version`.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/k8s-ws-proxy ./cmd/k8s-ws-proxy

# distroless static, nonroot variant: uid/gid 65532, no shell, no package
# manager. The chart's securityContext runs as the same numeric user.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/k8s-ws-proxy /k8s-ws-proxy
USER 65532:65532
ENTRYPOINT ["/k8s-ws-proxy"]
CMD ["serve"]
