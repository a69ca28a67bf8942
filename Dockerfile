# Callisto's container image: the `callisto` binary on Debian slim, as a
# non-root user, its state in the /data volume. See docs/deploy.md.
#
#   docker build -t callisto \
#     --build-arg CALLISTO_BUILD_COMMIT="$(git rev-parse --short HEAD)" \
#     --build-arg CALLISTO_BUILD_DATE="$(git log -1 --format=%cs)" .
#   docker run -d --name callisto -p 8080:8080 -v callisto-data:/data callisto
#   docker exec callisto callisto repo list      # the CLI, with the generated admin token
#
# Every setting is a CALLISTO_* variable (docs/configuration.md). A
# CALLISTO_* variable that names no setting stops the gateway.

# Build: the toolchain rust-toolchain.toml pins, with the wasm32-wasip2
# target the built-in plugins are compiled for.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY rust-toolchain.toml ./
RUN channel="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)" \
    && rustup toolchain install "$channel" --profile minimal --target wasm32-wasip2 \
    && rustup target list --installed --toolchain "$channel"
COPY . .
# .git is not sent (.dockerignore): the commit `callisto --version` names
# comes from these, or is `unknown`.
ARG CALLISTO_BUILD_COMMIT=""
ARG CALLISTO_BUILD_DATE=""
# The cache mounts keep downloaded crates and compiled dependencies (wasmtime
# takes minutes) between builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p callisto \
    && cp target/release/callisto /usr/local/bin/callisto

# Run: glibc and CA certificates (HTTPS receivers and registries), and curl
# for the health check only.
FROM debian:bookworm-slim
ARG CALLISTO_BUILD_COMMIT=""
LABEL org.opencontainers.image.title="callisto" \
      org.opencontainers.image.description="A webhook gateway for container registries" \
      org.opencontainers.image.source="https://github.com/callisto-webhooks/callisto" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${CALLISTO_BUILD_COMMIT}"
# Versions are Debian bookworm's, patched by its security updates: pinning
# them would make the image unbuildable after the next one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 callisto \
    && useradd --uid 10001 --gid callisto --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin callisto \
    && mkdir /data \
    && chown callisto:callisto /data \
    && chmod 0700 /data
COPY --from=build /usr/local/bin/callisto /usr/local/bin/callisto

# State: the redb file, secret.key, generated tokens, the compiled-plugin
# cache and installed plugins. Back it up (docs/deploy.md#backups).
VOLUME ["/data"]
ENV CALLISTO_DATA_DIR=/data \
    CALLISTO_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER 10001:10001
WORKDIR /data

# Ready once the store is open, the plugins loaded and the workers started.
# The port is CALLISTO_LISTEN's; with the HTTPS listener ([tls]) the second
# try answers (the certificate is not checked: this is the container itself).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/bin/sh", "-c", "port=${CALLISTO_LISTEN##*:}; curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:$port/readyz || curl -fsSk -o /dev/null --max-time 2 https://127.0.0.1:$port/readyz || exit 1"]

# SIGTERM (docker stop) finishes requests and attempts in flight, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["callisto"]
CMD ["serve"]
