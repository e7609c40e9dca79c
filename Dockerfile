# Multi-stage build of a static fleet_exporter binary on a non-root image.
# The build line below is also run verbatim (output path aside) by
# TestDockerfileBuild, since CI has no Docker engine.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION} -X github.com/prometheus/common/version.Revision=${REVISION}" -o /out/fleet_exporter .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fleet_exporter /bin/fleet_exporter
COPY config.example.yml /etc/fleet_exporter/fleet.yml
# nonroot: uid 65532. ICMP needs either CAP_NET_RAW (docker run --cap-add NET_RAW)
# or a ping_group_range that includes this gid (docker run
# --sysctl net.ipv4.ping_group_range="0 2147483647"); see README "Permissions".
USER 65532:65532
EXPOSE 9922
ENTRYPOINT ["/bin/fleet_exporter"]
CMD ["--config.file=/etc/fleet_exporter/fleet.yml"]
