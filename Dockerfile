# syntax=docker/dockerfile:1

# The relay as a static binary on distroless: CA certificates, a non-root
# user (65532), no shell, no package manager.
#
#   docker build -t datagrid-relay:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg COMMIT="$(git rev-parse --short HEAD)" .
#
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the binary is cross-compiled on the build machine's platform).

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
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

FROM gcr.io/distroless/static-debian12:nonroot

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
