# syntax=docker/dockerfile:1
# keymount's image: one static binary (musl, the release profile of Cargo.toml: the build the
# benchmark measures) with a CA bundle and nothing else. scripts/image builds the same image
# without a daemon (an OCI archive; `scripts/image --help`).
#
#   docker build -t ghcr.io/keymount/keymount:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/keymount/keymount:0.1.0 .

ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not download them again.
COPY Cargo.toml Cargo.lock rust-toolchain.toml build.rs ./
COPY proto proto
COPY src src
COPY benches benches
COPY tests tests
RUN case "$TARGETARCH" in \
        amd64) target=x86_64-unknown-linux-musl ;; \
        arm64) target=aarch64-unknown-linux-musl ;; \
        *) echo "unsupported architecture $TARGETARCH" >&2; exit 1 ;; \
    esac \
    && rustup target add "$target" \
    && if [ "$TARGETARCH" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then \
        apt-get update && apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
        && export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
                  CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc; \
    fi \
    && cargo build --release --locked --bin keymount --target "$target" \
    && cp "target/$target/release/keymount" /keymount
# The image's file tree, the same one scripts/image assembles without a daemon: the binary,
# Debian's CA bundle, passwd/group (root, nonroot 65532), /tmp.
COPY scripts/image scripts/image
RUN scripts/image rootfs /rootfs /keymount

# No shell, no package manager, no libc: the binary is static. It runs as root because
# mount(2) needs it (the DaemonSet is privileged for the same reason). scripts/image reads
# this stage's ENV, ENTRYPOINT and CMD for its own archive: keep them on one line each.
FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/usr/local/bin/keymount"]
CMD ["node"]
