# syntax=docker/dockerfile:1
# The Gregor broker image. Build it from the repository root:
#   docker build -t gregor:0.1.0 .
# Run one broker (its data in a named volume):
#   docker run -p 9092:9092 -p 9644:9644 -v gregor-data:/var/lib/gregor gregor:0.1.0
# Configuration: GREGOR_* environment variables (see `gregor serve --help`), or a TOML file
# mounted into the container and named by GREGOR_CONFIG (config/gregor.toml documents it).

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# "debuginfo" keeps symbol names (backtraces name functions) and drops the line tables that
# make the binary 80 MB; "none" keeps everything.
ARG STRIP=debuginfo
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP="${STRIP}" cargo build --release --locked \
 && install -D -m 0755 target/release/gregor /out/gregor

FROM debian:${DEBIAN_RELEASE}-slim
LABEL org.opencontainers.image.title="gregor" \
      org.opencontainers.image.description="A Kafka-protocol message broker in one binary" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, non-root uid and gid, so volumes and the Helm chart's securityContext agree.
RUN groupadd --system --gid 10001 gregor \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gregor --no-create-home \
      --shell /usr/sbin/nologin gregor \
 && mkdir -p /var/lib/gregor \
 && chown 10001:10001 /var/lib/gregor
COPY --from=build /out/gregor /usr/local/bin/gregor
# Listen on every interface of the container. What Metadata tells clients must be an address
# they can reach: localhost suits `docker run -p 9092:9092`; set GREGOR_ADVERTISE otherwise
# (the Helm chart sets each pod's DNS name).
ENV GREGOR_DATA_DIR=/var/lib/gregor \
    GREGOR_LISTEN=0.0.0.0:9092 \
    GREGOR_ADVERTISE=localhost:9092 \
    GREGOR_CONTROLLER_LISTEN=0.0.0.0:9093 \
    GREGOR_ADMIN_LISTEN=0.0.0.0:9644
USER 10001:10001
WORKDIR /var/lib/gregor
VOLUME ["/var/lib/gregor"]
# Kafka protocol, Raft RPC between brokers, admin HTTP (/health/live, /health/ready, /metrics).
EXPOSE 9092 9093 9644
# SIGTERM: controlled shutdown (leaderships move to other replicas, logs are flushed).
STOPSIGNAL SIGTERM
ENTRYPOINT ["gregor", "serve"]
