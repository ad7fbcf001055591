# syntax=docker/dockerfile:1
# The sluice image for Docker with BuildKit: build with the Rust toolchain, then a `scratch`
# image holding only the binary, the shared libraries it loads, CA certificates and the
# users 0 and 65532. No shell, no package manager.
#
#   docker build -t sluice:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse --short=12 HEAD)" .
#   docker run --rm sluice:0.1.0                    # the shipped example, files source
#   docker run --rm sluice:0.1.0 check --config /etc/sluice/sluice.toml
#   docker build --target debug --output type=local,dest=out .    # out/sluice.debug
#
# .ci/image.sh builds the same image with podman and no registry (CI runs it): it runs the
# same image/rootfs.sh on a binary built on the machine, then builds the final stage of this
# file as it is, with its COPY --from=build taking that root filesystem. So the two differ
# only in where the Debian packages and the toolchain come from, not in files, user, paths,
# ports or labels. The version's one place is Cargo.toml ([workspace.package] version).
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts below.

# ---- build ---------------------------------------------------------------------------------
# The toolchain the project builds with (rustc 1.95), on the Debian release (bookworm) whose
# libraries image/rootfs.sh takes, so the binary links the OpenSSL 3 and glibc it runs with.
FROM rust:1.95-bookworm AS build

# libssl-dev + pkg-config: the proxy links the system OpenSSL (OPENSSL_NO_VENDOR=1) instead of
# compiling one. cmake: libz-ng-sys (flate2's zlib-ng backend, used by Pingora) builds with it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config cmake \
 && rm -rf /var/lib/apt/lists/*
# DL3008 (pin apt versions) is ignored on purpose: Debian replaces package versions with every
# security update, so a pin breaks the build within weeks; the base image tag is the pin.

ENV OPENSSL_NO_VENDOR=1 \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

WORKDIR /src
# Every workspace member must be present for Cargo to load the workspace, benches included
# (its manifest names bench and bin targets, which must exist), and vendor/ for the patched
# Pingora crates ([patch.crates-io] in Cargo.toml). Tests, k8s-manifests, CI and docs are left
# out by .dockerignore.
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
COPY config ./config
COPY proxy ./proxy
COPY benches ./benches
COPY image ./image

# The build context has no .git: the revision for `sluice --version` comes in as an argument.
ARG REVISION=unknown

# The cache mounts keep downloaded crates and compiled dependencies between builds, so a
# source change recompiles only sluice's own crates. The target folder is a cache mount and
# is not part of the image: the root filesystem is assembled in the same step.
# hadolint ignore=DL3008
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    SLUICE_REVISION="$REVISION" cargo build --release --locked -p sluice \
 && apt-get update \
 && image/rootfs.sh target/release/sluice /rootfs /out/sluice.debug \
 && rm -rf /var/lib/apt/lists/*

# ---- debug info ----------------------------------------------------------------------------
# The shipped binary's line tables, kept out of the image (docker build --target debug ...).
FROM scratch AS debug
COPY --from=build /out/sluice.debug /sluice.debug

# ---- runtime -------------------------------------------------------------------------------
# .ci/image.sh builds this stage as it is written: keep it self-contained (its only input is
# the build stage's /rootfs/).
FROM scratch

ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="A Kubernetes Ingress controller on Pingora" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

# Everything image/rootfs.sh assembled: /usr/local/bin/sluice, its libraries, CA certificates,
# /etc/passwd and /etc/group, and the shipped example settings under /etc/sluice (files
# source, listening on 127.0.0.1 only: enough for a smoke test; to publish ports, mount a
# settings file that listens on 0.0.0.0). In Kubernetes the Deployment mounts its ConfigMap
# over /etc/sluice: the mount hides these baked files entirely (no merge, no error).
COPY --from=build /rootfs/ /

# The same uid/gid as the Deployment's securityContext; numeric, so runAsNonRoot can verify it.
USER 65532:65532

# 8080 http (HTTP/1.1 and h2c), 8443 https, 10254 admin (/healthz, /readyz, /metrics).
EXPOSE 8080 8443 10254

ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["--config", "/etc/sluice/sluice.toml"]
