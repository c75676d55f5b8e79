# The s3flow image: the operator and its chunk workers (`s3flow controller | worker ...`).
# A static musl binary on an empty base, run as a non-root user.
#   docker build -t ghcr.io/s3flow/s3flow:0.1.0 .
FROM rust:1.95-alpine AS build
# aws-lc-sys (TLS) builds C code; musl-dev and perl for it, cmake for its build script.
RUN apk add --no-cache build-base musl-dev cmake perl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY tests/node-agent/Cargo.toml tests/node-agent/Cargo.toml
COPY src src
COPY tests/node-agent/src tests/node-agent/src
RUN cargo build --release --locked --bin s3flow \
    && strip target/release/s3flow \
    && mkdir -p /out && cp target/release/s3flow /out/s3flow

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/s3flow /usr/local/bin/s3flow
# Chunk Jobs run `s3flow worker`: the binary is found on PATH.
ENV PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["s3flow"]
