# syntax=docker/dockerfile:1
# The sluice image: build with the Rust toolchain, run on a slim Debian as a non-root user.
#
#   docker build -t sluice:latest .
#   docker run --rm sluice:latest                       # the shipped example, files source
#   docker run --rm sluice:latest check --config /etc/sluice/sluice.toml
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts below.

# ---- build ---------------------------------------------------------------------------------
# The toolchain the project builds with (rustc 1.95), on the same Debian release as the
# runtime stage, so the binary links the same OpenSSL 3 and glibc it runs against.
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
# (its manifest names bench and bin targets, which must exist). Tests, k8s-manifests, CI and
# docs are left out by .dockerignore.
COPY Cargo.toml Cargo.lock ./
COPY config ./config
COPY proxy ./proxy
COPY benches ./benches

# The cache mounts keep downloaded crates and compiled dependencies between builds, so a
# source change recompiles only sluice's own crates. The target folder is a cache mount and
# is not part of the image: copy the binary out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice \
 && install -D -m 0755 target/release/sluice /out/sluice

# ---- runtime -------------------------------------------------------------------------------
# debian:bookworm-slim rather than distroless: distroless/cc has glibc but no libssl, and the
# proxy links libssl3 dynamically; installing libssl3 here is simpler and easier to audit than
# copying .so files by hand. ca-certificates: for API servers or upstreams with public certs
# (in-cluster, sluice uses the service account's ca.crt).
FROM debian:bookworm-slim

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 sluice \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sluice
# DL3008 ignored for the reason given in the build stage.

COPY --from=build /out/sluice /usr/local/bin/sluice

# The shipped example settings (files source, reading /etc/sluice/examples), so the image runs
# standalone. It listens on 127.0.0.1 only: enough for a smoke test inside the container; to
# publish ports, mount a settings file that listens on 0.0.0.0.
# In Kubernetes the Deployment mounts its ConfigMap over /etc/sluice: the mount hides these
# baked files entirely (no merge, no error), and the ConfigMap's sluice.toml, which uses the
# kubernetes source, is what the pods read.
COPY config/sluice.toml /etc/sluice/sluice.toml
COPY config/examples /etc/sluice/examples

# The same uid/gid as the Deployment's securityContext; numeric, so runAsNonRoot can verify it.
USER 65532:65532

# 8080 http (HTTP/1.1 and h2c), 8443 https (reserved), 10254 admin (/healthz, /readyz, /metrics).
EXPOSE 8080 8443 10254

ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["--config", "/etc/sluice/sluice.toml"]
