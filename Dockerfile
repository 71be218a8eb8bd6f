# syntax=docker/dockerfile:1
# msrpscope image: a static build of every binary under cmd/ (msrpscope, msrpload,
# and msrpctl once cmd/msrpctl exists: ./cmd/... builds whatever is there) on a
# pinned Debian slim base, run as a non-root user.
#
#   docker build -t msrpscope .
#   docker run --rm -p 2855:2855 -v "$PWD/msrpscope.yaml:/etc/msrpscope/msrpscope.yaml:ro" \
#       msrpscope -config /etc/msrpscope/msrpscope.yaml
#
# Without -config the binary runs on its embedded defaults (cmd/msrpscope/default.yaml),
# which listen on 127.0.0.1 only: give a file that listens on 0.0.0.0 (with a uri).
# internal/deploy/deploy_test.go checks this file; README.md "Deployment" says what was not run.

FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: static binaries, no libc needed at run time.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/... \
    && /out/msrpscope -check-config cmd/msrpscope/default.yaml

FROM debian:13.1-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/msrpscope --shell /usr/sbin/nologin msrpscope \
    && install -d -o msrpscope -g msrpscope -m 0750 /var/lib/msrpscope /etc/msrpscope
COPY --from=build /out/ /usr/local/bin/
USER msrpscope:msrpscope
# The default pcap sink writes to the working directory: the data volume.
WORKDIR /var/lib/msrpscope
VOLUME ["/var/lib/msrpscope"]
# 2855 msrp (TCP), 2856 msrps (TLS, with cert and key in the config), 8055 admin API and /metrics.
EXPOSE 2855 2856 8055
# The slim base has no curl or wget: bash's /dev/tcp asks the admin API's /healthz
# (no token needed) on 127.0.0.1:8055, the admin address of both the embedded
# defaults and the compose configuration. A config with admin.tls_cert or another
# admin.addr needs its own check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8055 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/msrpscope"]
