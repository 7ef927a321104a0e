# syntax=docker/dockerfile:1
#
# The bucket-broker controller image: `docker build -t bucket-broker .`, for CI services with a Docker engine.
# `scripts/image` builds the same image without one (buildah): both fill a `FROM scratch` image with
# scripts/image-rootfs (the binary, exactly the shared libraries it loads, CA certificates, the nonroot
# user) and give it the same configuration; tests/integration/image.rs checks that they agree.
#
# NOT BUILT HERE: the development machine has no Docker engine and its registries serve no base images, so
# this file has not been run. It needs BuildKit (the default builder since Docker 23) for the cache mount.
#
# A glibc build, not a static musl one: aws-lc-rs (the TLS crypto of kube and the AWS SDK) compiles C
# code, which is easy against glibc and a known source of trouble against musl. The image carries the
# build image's (Debian 12, bookworm) glibc and libgcc, as scripts/image carries this machine's.

FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first: this layer is reused until a manifest or Cargo.lock change. The manifests name a
# binary, libraries and an integration test, and the workspace's other member (the in-memory API server,
# which the image does not contain), so cargo needs placeholder files to read them.
COPY Cargo.toml Cargo.lock ./
COPY crates/kube-memory-apiserver/Cargo.toml crates/kube-memory-apiserver/
RUN mkdir -p src tests/integration crates/kube-memory-apiserver/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs tests/integration/main.rs crates/kube-memory-apiserver/src/lib.rs \
    && cargo fetch --locked

# The real sources (tests/ is not needed: the placeholder above stands in for it). `--no-default-features`
# leaves out the `local` feature: no quickstart, no in-memory API server, no moto helpers. The cache mount keeps
# compiled dependencies between builds; the binary is copied out of it because a mount is not part of the
# image. Touching the crate roots makes cargo rebuild this crate even if a cached build looks newer.
COPY src ./src
RUN --mount=type=cache,target=/src/target \
    touch src/main.rs src/lib.rs \
    && cargo build --release --locked --no-default-features --bin bucket-broker \
    && cp target/release/bucket-broker /bucket-broker

COPY scripts/image-rootfs /usr/local/bin/image-rootfs
RUN image-rootfs /bucket-broker /rootfs

# No shell and no package manager: the controller, the libraries it loads, CA certificates. Runs as nonroot
# (uid and gid 65532), as the Deployment requires.
FROM scratch
COPY --from=build /rootfs /
LABEL org.opencontainers.image.title=bucket-broker
USER 65532:65532
EXPOSE 8080/tcp
ENTRYPOINT ["/bucket-broker"]
CMD ["run"]
