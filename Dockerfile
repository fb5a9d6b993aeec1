# ippool as a container image: stage 1 compiles dist/ippool with the Bun pinned in package.json,
# stage 2 is a slim Debian with only that executable, run as the unprivileged user ippool (10001).
#
# BASE is a plain Debian bookworm root filesystem: by default Docker Hub's debian:bookworm-slim, so
# that the original README's `docker build -t ippool:latest .` works where that registry is
# reachable (it is not on this project's build machines: not tried). `make image-test`
# (hooks/image-test) makes one with `debootstrap --variant=minbase bookworm` + `podman import` as
# localhost/ippool-base:bookworm and builds with:
#   podman build --isolation chroot --format docker --build-arg BASE=localhost/ippool-base:bookworm .
# The run stage needs glibc, libstdc++6 and libgcc-s1 (lmdb's embedded addon links them), which
# every image with apt has. `--format docker` keeps the HEALTHCHECK (the OCI image format has no
# field for it).
ARG BASE=docker.io/library/debian:bookworm-slim

# --- stage 1: build ------------------------------------------------------------------------------
FROM ${BASE} AS build
# Marks this stage's images, so hooks/image-test can prune the builders that older builds left.
LABEL ippool.stage=build
# Debian's Node.js 18 + npm 9 only run `npm ci`; the compiler is the Bun from package-lock.json.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# Dependencies first, so source edits reuse the installed node_modules layer. Behind a
# TLS-intercepting proxy, hand the host's CA bundle in as a build secret (never stored in a layer):
#   --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt   (hooks/image-test does)
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca_bundle; fi \
 && npm ci --no-audit --no-fund --loglevel=error \
 && node_modules/.bin/bun --version
COPY build.ts bunfig.toml tsconfig.json ./
COPY src ./src
RUN node_modules/.bin/bun build.ts \
 && ./dist/ippool --version

# --- stage 2: run --------------------------------------------------------------------------------
FROM ${BASE}
LABEL org.opencontainers.image.title="ippool" \
      org.opencontainers.image.description="IP address pools and elastic IPs for KVM/libvirt hypervisor fleets" \
      org.opencontainers.image.licenses="MIT"
# /var/lib/ippool  the LMDB store (a volume)
# /run/ippool      the Unix socket (the client's and the health check's default path)
# /var/cache/ippool TMPDIR: the executable extracts lmdb's native addon there at start and loads
#                  it, so it must be writable by ippool and not mounted noexec. It is kept out of
#                  the volume: a volume or bind mount on /var/lib/ippool (owned by 10001) needs
#                  nothing in it.
RUN groupadd --gid 10001 ippool \
 && useradd --uid 10001 --gid ippool --home-dir /var/lib/ippool --no-create-home \
      --shell /usr/sbin/nologin ippool \
 && install -d -o ippool -g ippool -m 0750 /var/lib/ippool /run/ippool /var/cache/ippool
COPY --from=build /build/dist/ippool /usr/local/bin/ippool
# The listener (0.0.0.0:8080), socket, data directory, default pool and the open pool API (the
# original's, logged as a warning at start) come from this file, not from CMD: a `docker run` line
# with arguments after the image name replaces CMD, and the original's README has such lines.
COPY docs/ippool.container.toml /etc/ippool/ippool.toml
ENV TMPDIR=/var/cache/ippool IPPOOL_CONFIG=/etc/ippool/ippool.toml
USER 10001:10001
WORKDIR /var/lib/ippool
EXPOSE 8080
VOLUME /var/lib/ippool
# No curl in the image: the executable is its own client. `health` asks GET /api/v1/health over
# the Unix socket, so it holds whatever TCP address the daemon is given; exit 0 ok, 3 unreachable.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/ippool", "health", "--socket", "/run/ippool/ippool.sock"]
STOPSIGNAL SIGTERM
# As the original's image: arguments after the image name are the daemon's flags.
ENTRYPOINT ["/usr/local/bin/ippool"]
CMD []
