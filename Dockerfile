# syntax=docker/dockerfile:1
#
# The bucket-broker controller image: `docker build -t bucket-broker .`
#
# NOT BUILT HERE: the development machine has no Docker engine, so this file has not been run. Build it in
# CI (it needs BuildKit, the default builder since Docker 23, for the cache mounts).
#
# A glibc build, not a static musl one: aws-lc-rs (the TLS crypto of kube and the AWS SDK) compiles C
# code, which is easy against glibc and a known source of trouble against musl. The build image
# (Debian 12, bookworm) and the runtime image (distroless cc-debian12) share the same glibc.

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

# glibc, libgcc and CA certificates, no shell; runs as nonroot (uid and gid 65532), as the Deployment
# requires.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /bucket-broker /bucket-broker
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/bucket-broker"]
CMD ["run"]
