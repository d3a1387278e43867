# syntax=docker/dockerfile:1
# The vmcp images: one Dockerfile, one target per image (the contract: docs/images.md).
#
#   docker build --target gateway         -t ghcr.io/vmcp-dev/vmcp-gateway:0.1.0 .
#   docker build --target operator        -t ghcr.io/vmcp-dev/vmcp-operator:0.1.0 .
#   docker build --target example-backend -t ghcr.io/vmcp-dev/vmcp-example-backend:0.1.0 .
#
# Every binary is linked statically (musl), and every image is FROM scratch plus the files of
# scripts/image-rootfs.sh (passwd/group with UID 65532, /tmp, a CA bundle) plus one binary:
# no shell, no libc, no package manager. The gateway binary must stay static: the operator
# copies it into stdio MCP server images of any libc (`vmcp-gateway install-bridge`).
#
# `make images` builds the same targets with no registry at all (BINARIES=prebuilt): the
# binaries and the base files are built on the host by scripts/images-build.sh and copied from
# .cache/images/context instead of from the `build` stage, which is then skipped.

ARG RUST_VERSION=1.95
ARG BINARIES=build

# ---- build: static musl binaries (the rust:alpine toolchain targets musl and links statically)
FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vmcp-gateway -p vmcp-operator -p vmcp-example-backends \
 && mkdir -p /out/bin \
 && cp target/release/vmcp-gateway target/release/vmcp-operator \
       target/release/vmcp-example-backend /out/bin/ \
 && sh scripts/image-rootfs.sh /out/rootfs

# ---- prebuilt: the same /out layout, built on the host by `make images`
FROM scratch AS prebuilt
COPY .cache/images/context/ /out/

FROM ${BINARIES} AS binaries
# One instruction, so that buildah commits this stage (a FROM-only stage leaves a working
# container behind).
WORKDIR /out

# ---- base: what every image shares
FROM scratch AS base
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=binaries /out/rootfs/ /
USER 65532:65532
WORKDIR /tmp
LABEL org.opencontainers.image.source="https://github.com/vmcp-dev/vmcp" \
      org.opencontainers.image.url="https://github.com/vmcp-dev/vmcp" \
      org.opencontainers.image.documentation="https://github.com/vmcp-dev/vmcp/blob/main/docs/images.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="vmcp" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# ---- the example MCP servers (examples/backends): HTTP by default, `--stdio` for the bridge
FROM base AS example-backend
LABEL org.opencontainers.image.title="vmcp-example-backend" \
      org.opencontainers.image.description="Example MCP servers (weather, notes) for trying vmcp"
COPY --from=binaries /out/bin/vmcp-example-backend /usr/local/bin/vmcp-example-backend
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vmcp-example-backend"]
CMD ["--kind", "weather", "--host", "0.0.0.0", "--port", "8080", "--allowed-host", "*"]

# ---- the operator: `run` (default) or `crds`
FROM base AS operator
LABEL org.opencontainers.image.title="vmcp-operator" \
      org.opencontainers.image.description="Kubernetes operator for vmcp Virtual MCP Servers"
COPY --from=binaries /out/bin/vmcp-operator /usr/local/bin/vmcp-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/vmcp-operator"]

# ---- the gateway (also the stdio bridge): last, so a plain `docker build .` builds it
FROM base AS gateway
LABEL org.opencontainers.image.title="vmcp-gateway" \
      org.opencontainers.image.description="Virtual MCP Server gateway and stdio bridge"
COPY --from=binaries /out/bin/vmcp-gateway /usr/local/bin/vmcp-gateway
EXPOSE 4483
ENTRYPOINT ["/usr/local/bin/vmcp-gateway"]
