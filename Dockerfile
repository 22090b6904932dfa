# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
# The toolchain must be at least Cargo.toml's rust-version.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tally
WORKDIR /app
COPY --from=build /src/target/release/tally /usr/local/bin/tally
COPY config ./config
RUN mkdir -p /app/data && chown tally:tally /app/data
USER tally
# JSON logs (config/production.toml, when the mounted config/ has it: without it the image
# starts all the same, on config/default.toml and the environment). DATABASE_URL and the
# TALLY__... secrets come from the orchestrator. The daemon serves /healthz and /metrics on
# every interface of the container, port 9464.
ENV TALLY_ENV=production \
    TALLY__DAEMON__LISTEN=0.0.0.0:9464
EXPOSE 9464
VOLUME ["/app/data"]
# `tally healthcheck` asks the daemon's /healthz (the image has no curl): 0 on 200, else 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["tally", "healthcheck", "--timeout", "5"]
CMD ["tally", "daemon"]
