# syntax=docker/dockerfile:1.7
#
# One image, both binaries: /usr/local/bin/edge (the default entrypoint) and
# /usr/local/bin/router (set `command`/`entrypoint` to run it). They share
# every dependency, so a second image would only double the build and the
# pulls; one tag also guarantees edges and routers speak the same wire
# version. See docs/operations.md.
#
#   docker build -t switchboard .                     # gateway image (last stage)
#   docker build --target examples -t switchboard-examples .

ARG GO_VERSION=1.26

# --- build: static, reproducible binaries -----------------------------------
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/ \
        ./cmd/edge ./cmd/router ./deploy/healthcheck

# --- build-examples: only built for the examples target ---------------------
FROM build AS build-examples
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/ \
        ./examples/chat

# --- examples: the chat backend, for docker-compose -------------------------
FROM gcr.io/distroless/static-debian12:nonroot AS examples
COPY --from=build-examples /out/chat /out/healthcheck /usr/local/bin/
# 65532 is distroless's "nonroot"; numeric so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/chat"]

# --- runtime: the gateway image (default target: keep it last) --------------
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/edge /out/router /out/healthcheck /usr/local/bin/
USER 65532:65532
# 8080 WebSocket clients, 9090 @connections API, 9091 /healthz /readyz /metrics.
EXPOSE 8080 9090 9091
ENV SWITCHBOARD_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/edge"]
