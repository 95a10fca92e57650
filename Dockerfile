# One image per operator: docker build --build-arg OPERATOR=nodepool-operator -t nodepool-operator .
#                         docker build --build-arg OPERATOR=autoscaler-operator -t autoscaler-operator .
FROM rust:1.95-bookworm AS build
ARG OPERATOR
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p "${OPERATOR}" --bin "${OPERATOR}" \
 && cp "target/release/${OPERATOR}" /operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /operator /operator
USER 65532:65532
ENTRYPOINT ["/operator"]
