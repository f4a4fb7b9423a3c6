# syntax=docker/dockerfile:1
#
# Images for running real Kong with ghasi-plugin-server (README.md#running-with-real-kong-docker).
#
#   docker build -t ghasi-kong .                              Kong 3.9 + the plugin server (default)
#   docker build --target dev-auth-service -t ghasi-dev-auth .  the dev auth-service stand-in
#   docker build --target echo -t ghasi-echo .                  the echo upstream
#
# docker-compose.yml builds all three. Stages:
#   build             cargo build --release of the three binaries the stack runs (rust:bookworm)
#   runtime           debian:bookworm-slim base for the two dev binaries
#   dev-auth-service  dev-auth-service --listen 0.0.0.0:8081 --config dev/auth-service.yaml
#   echo              kong-emulator echo --listen 0.0.0.0:8080
#   kong              FROM kong:3.9, with /usr/local/bin/ghasi-plugin-server and the KONG_*
#                     pluginserver settings of kong/conf/kong-3.9.env (last stage = default)
#
# Kong 3.4-3.8: --build-arg KONG_BASE=kong:3.4 and run the image with
# --env-file kong/conf/kong-3.4-3.8.env (its KONG_PLUGINSERVER_NAMES=ghasi replaces the 3.9
# layout; the per-plugin 3.9 variables are then ignored) and kong/kong-3.4-3.7.yaml.
ARG KONG_BASE=kong:3.9

FROM rust:bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds (BuildKit); the binaries are
# copied out of target/ in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ghasi-plugin-server -p dev-auth-service -p kong-emulator --bins \
 && mkdir -p /out \
 && install -m 0755 target/release/ghasi-plugin-server target/release/dev-auth-service \
      target/release/kong-emulator /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app ghasi
WORKDIR /app

FROM runtime AS dev-auth-service
COPY --from=build /out/dev-auth-service /usr/local/bin/dev-auth-service
COPY dev/ /app/dev/
USER ghasi
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/dev-auth-service"]
CMD ["--listen", "0.0.0.0:8081", "--config", "dev/auth-service.yaml"]

FROM runtime AS echo
COPY --from=build /out/kong-emulator /usr/local/bin/kong-emulator
USER ghasi
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kong-emulator"]
CMD ["echo", "--listen", "0.0.0.0:8080"]

FROM ${KONG_BASE} AS kong
USER root
COPY --from=build /out/ghasi-plugin-server /usr/local/bin/ghasi-plugin-server
# Fails the build if the binary cannot run on Kong's base image (e.g. a glibc too old for the
# rust:bookworm build) or cannot describe its plugins, instead of failing at Kong's startup.
RUN /usr/local/bin/ghasi-plugin-server --dump --plugin ghasi-jwt >/dev/null \
 && /usr/local/bin/ghasi-plugin-server --dump --plugin ghasi-api-key-lookup >/dev/null \
 && /usr/local/bin/ghasi-plugin-server --dump >/dev/null
USER kong
# Exactly kong/conf/kong-3.9.env (Kong 3.9+: one pluginserver entry per plugin, one shared
# socket, start_cmd on the first only). `python3 kong/generate.py --check` fails on drift.
ENV KONG_PLUGINS="bundled,ghasi-jwt,ghasi-api-key-lookup" \
    KONG_PLUGINSERVER_NAMES="ghasi-jwt,ghasi-api-key-lookup" \
    KONG_PLUGINSERVER_GHASI_JWT_SOCKET="/usr/local/kong/ghasi.socket" \
    KONG_PLUGINSERVER_GHASI_JWT_START_CMD="/usr/local/bin/ghasi-plugin-server --socket /usr/local/kong/ghasi.socket" \
    KONG_PLUGINSERVER_GHASI_JWT_QUERY_CMD="/usr/local/bin/ghasi-plugin-server --dump --plugin ghasi-jwt" \
    KONG_PLUGINSERVER_GHASI_API_KEY_LOOKUP_SOCKET="/usr/local/kong/ghasi.socket" \
    KONG_PLUGINSERVER_GHASI_API_KEY_LOOKUP_QUERY_CMD="/usr/local/bin/ghasi-plugin-server --dump --plugin ghasi-api-key-lookup" \
    KONG_NGINX_HTTP_LUA_SOCKET_CONNECT_TIMEOUT="1s" \
    KONG_NGINX_HTTP_LUA_SOCKET_SEND_TIMEOUT="2s" \
    KONG_NGINX_HTTP_LUA_SOCKET_READ_TIMEOUT="2s" \
    KONG_REAL_IP_HEADER="X-Forwarded-For" \
    KONG_REAL_IP_RECURSIVE="on" \
    KONG_TRUSTED_IPS="10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
