# One image per operator, FROM scratch: a statically linked binary (the TLS stack is
# rustls), run as a numeric non-root user, nothing else (no shell, no libc, no CA bundle:
# the in-cluster CA comes with the ServiceAccount token).
#
#   docker build --build-arg OPERATOR=nodepool-operator -t nodepool-operator .
#   docker build --build-arg OPERATOR=autoscaler-operator -t autoscaler-operator .
#
# By default the binary is compiled in the `compile` stage (needs the rust image). Where no
# registry is reachable, `make images` compiles it on the host with the same flags
# (hack/images.sh) and passes `--build-arg BINARY=prebuilt`: the `prebuilt` stage copies
# target/image/<operator> instead, and no image is pulled. Either way the final stage is
# the same. Needs BuildKit, which skips the stage it does not use.
ARG BINARY=compile

FROM rust:1.95-bookworm AS compile
ARG OPERATOR
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    triple="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "${triple}" -p "${OPERATOR}" --bin "${OPERATOR}" \
 && mkdir -p /out && cp "target/${triple}/release/${OPERATOR}" /out/operator

FROM scratch AS prebuilt
ARG OPERATOR
COPY target/image/${OPERATOR} /out/operator

FROM ${BINARY} AS binary

FROM scratch
LABEL org.opencontainers.image.source="https://github.com/nodepool-dev/nodepool-operators" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary --chown=65532:65532 /out/operator /operator
USER 65532:65532
ENTRYPOINT ["/operator"]
