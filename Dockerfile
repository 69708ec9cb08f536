# syntax=docker/dockerfile:1
# The Image Factory operator image. At the repository root because the build needs the
# whole workspace (Cargo.toml, Cargo.lock, operator/, and the test and bench folders the
# manifest names), which is the build context anyway.
#
# Online (the default target, `runtime`): compile in rust:1.95-bookworm, run on
# distroless cc (glibc, libgcc, OpenSSL, zlib, CA certificates; user 65532):
#
#   buildah bud -t image-factory:dev \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#
# Offline (no registry to pull rust or distroless from): build the binary on the host
# and copy it onto a runtime base you provide, which must hold the binary's shared
# libraries (`ldd target/release/image-factory`), CA certificates and a passwd entry for
# 65532 (tests/deploy.rs makes one from the host with umoci):
#
#   cargo build --release --locked
#   buildah bud --target runtime-prebuilt -t image-factory:dev \
#     --build-arg RUNTIME_BASE=registry.internal/base/cc:bookworm .
#
# The stages are ordered so that `--target runtime-prebuilt` never reaches the `build`
# stage: nothing pulls rust:1.95-bookworm on that path.

ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

# What every runtime image is: labels, user, entrypoint.
FROM ${RUNTIME_BASE} AS runtime-base
ARG SOURCE=https://github.com/image-factory/image-factory
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="image-factory" \
      org.opencontainers.image.description="Rebuilds internal container images when their base images change (Kargo, Argo CD)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Git checkouts and caches go to mounted volumes (the Deployment's emptyDirs); the
# root filesystem can stay read-only.
ENV IMAGE_FACTORY_CACHE=/var/cache/image-factory \
    HOME=/tmp
WORKDIR /var/cache/image-factory
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/image-factory"]
CMD ["controller"]

# Offline: a binary built outside (`BINARY`, relative to the build context).
FROM runtime-base AS runtime-prebuilt
ARG BINARY=target/release/image-factory
COPY --chmod=0755 ${BINARY} /usr/local/bin/image-factory

# Online: the release build.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY operator operator
COPY tests tests
COPY benches benches
RUN cargo build --release --locked --bin image-factory \
 && install -m 0755 target/release/image-factory /image-factory

FROM runtime-base AS runtime
COPY --from=build /image-factory /usr/local/bin/image-factory
