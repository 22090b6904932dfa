# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
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
# JSON logs; DATABASE_URL and the TALLY__... secrets come from the orchestrator.
ENV TALLY_ENV=production
# The daemon's /healthz and /metrics, reachable from outside the container (docs/CONFIG.md [daemon]).
ENV TALLY__DAEMON__LISTEN=0.0.0.0:9464
EXPOSE 9464
VOLUME ["/app/data"]
CMD ["tally", "daemon"]
