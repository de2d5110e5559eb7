# syntax=docker/dockerfile:1
# oci-cred-agent image: the agent, Node, tofu and nothing else; runs as uid 10001.
#
#   docker build -t oci-cred-agent:0.1.0 .
#   docker build --build-arg TOFU_VERSION=1.12.8 -t oci-cred-agent:0.1.0 .
#
# tofu comes from OpenTofu's official minimal image (only /usr/local/bin/tofu in it); pick the
# release with TOFU_VERSION, or point TOFU_IMAGE at your own mirror (pin it by digest:
# --build-arg TOFU_IMAGE=registry.example.com/opentofu/opentofu@sha256:...).
# Kubernetes: deploy/kubernetes and docs/kubernetes.md.

ARG NODE_VERSION=24
ARG TOFU_VERSION=1.12.8
ARG TOFU_IMAGE=ghcr.io/opentofu/opentofu:${TOFU_VERSION}-minimal

FROM ${TOFU_IMAGE} AS tofu

# Build: all dependencies, TypeScript to dist/. Install scripts stay off: the only ones in the
# tree fetch a Node binary (the `node` devDependency) and esbuild, neither needed here.
FROM node:${NODE_VERSION} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Production dependencies only.
FROM node:${NODE_VERSION} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:${NODE_VERSION}-slim AS runtime
# tini as PID 1 reaps the zombies tofu's plugins leave when a canceled tofu is killed, and
# passes SIGTERM to the agent only (the agent drains and stops tofu itself). In the runner's
# container (`runner`, uid 10002: a passwd entry, which ssh and git need) it reaps what the
# runner kills after each phase.
# ca-certificates: tofu (Go) trusts the system store for registries and provider downloads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 oci-cred-agent \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/oci-cred-agent --no-create-home \
      --shell /usr/sbin/nologin oci-cred-agent \
 && groupadd --system --gid 10002 oci-cred-runner \
 && useradd --system --uid 10002 --gid 10002 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin oci-cred-runner \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/oci-cred-agent /run/oci-cred-agent
COPY --from=tofu /usr/local/bin/tofu /usr/local/bin/tofu
WORKDIR /opt/oci-cred-agent
COPY package.json ./
COPY bin ./bin
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
ENV NODE_ENV=production \
    HOME=/var/lib/oci-cred-agent \
    OCI_CRED_AGENT_WORK_DIR=/var/lib/oci-cred-agent/work \
    OCI_CRED_AGENT_CREDENTIALS_DIR=/run/oci-cred-agent/credentials \
    OCI_CRED_AGENT_LISTEN=0.0.0.0:9480 \
    OCI_CRED_AGENT_TOFU_BIN=/usr/local/bin/tofu
USER 10001:10001
EXPOSE 9480
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD ["node", "-e", "fetch('http://127.0.0.1:9480/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/oci-cred-agent/bin/oci-cred-agent"]
CMD ["run"]
