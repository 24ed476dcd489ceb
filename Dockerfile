# Multi-stage build: compile with the Rust toolchain, run on a slim image as a non-root user.
# No protoc is needed: the protos are compiled by protox during `cargo build`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# .git is not copied: pass the commit for spec_provider_build_info, e.g.
# docker build --build-arg SPEC_PROVIDER_GIT_COMMIT=$(git rev-parse HEAD) .
ARG SPEC_PROVIDER_GIT_COMMIT=unknown
RUN cargo build --release --locked && cp target/release/spec-provider /usr/local/bin/spec-provider

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/spec-provider --create-home spec-provider
COPY --from=build /usr/local/bin/spec-provider /usr/local/bin/spec-provider
USER 10001
WORKDIR /var/lib/spec-provider
EXPOSE 8080 9500
HEALTHCHECK --interval=10s --timeout=3s CMD ["spec-provider", "health"]
ENTRYPOINT ["spec-provider"]
CMD ["serve"]
