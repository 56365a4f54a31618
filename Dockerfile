# syntax=docker/dockerfile:1

# The relay as a static binary on distroless: CA certificates, a non-root
# user (65532), no shell, no package manager.
#
#   docker build -t datagrid-relay:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg COMMIT="$(git rev-parse --short HEAD)" .
#
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the binary is cross-compiled on the build machine's platform).

# Base images are pinned by digest (multi-platform index digests), so a
# rebuild of the same commit uses the same bytes; the tag says which release
# the digest is. To move to a newer patch or a rebuilt base, take the digest
# the registry serves now and check the image's signature, e.g.
#   crane digest golang:1.26.8
#   crane digest gcr.io/distroless/static-debian12:nonroot
#   cosign verify gcr.io/distroless/static-debian12:nonroot@sha256:... \
#     --certificate-oidc-issuer https://accounts.google.com \
#     --certificate-identity keyless@distroless.iam.gserviceaccount.com
FROM --platform=$BUILDPLATFORM golang:1.26.8@sha256:3c3e25a4da13fd0478eed2df1eb35a0e667094a7124d3993a6a1d30f71c17e79 AS build
WORKDIR /src

# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY cmd/ cmd/
COPY internal/ internal/

ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /relay ./cmd/relay

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab

ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="datagrid-relay" \
      org.opencontainers.image.description="Datagrid webhooks, verified and published to NATS JetStream" \
      org.opencontainers.image.source="https://github.com/datagrid-relay/relay" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"

COPY --from=build /relay /relay

# Numeric, so Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532

# 8080: deliveries (RELAY_LISTEN_ADDR); 9090: /metrics, /healthz, /readyz
# (RELAY_ADMIN_ADDR).
EXPOSE 8080 9090

ENTRYPOINT ["/relay"]
CMD ["serve"]
