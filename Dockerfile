# keypool serve in a container, the way openai-api-route deploys:
#   docker build -t keypool .
#   docker run -d -p 8888:8888 -v ./config.yaml:/config.yaml:ro -v keypool-data:/data keypool
# A static, CGO-free binary (SQLite is pure Go) on a distroless base, run as
# a non-root user. The working directory /data is a volume, so the default
# records file (dbaddr ./db.sqlite) outlives the container.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/keypool ./cmd/keypool \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keypool /keypool
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
VOLUME /data
USER 65532:65532
EXPOSE 8888
# --listen wins over the config's listen/address; keypool refuses a
# non-loopback address unless the config sets client tokens (authorization)
# or a noauth upstream.
ENTRYPOINT ["/keypool"]
CMD ["serve", "--config", "/config.yaml", "--listen", ":8888"]
