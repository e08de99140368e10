# prefix-gateway container image: `prefix-gateway serve` (the default) or `prefix-gateway sim`.
# Config: /etc/prefix-gateway/gateway.yaml (GATEWAY_CONFIG); mount your own over it.
# Workers: append `--workers N` to the command (N > 1 needs index.kind: redis).
# Signals go straight to the gateway (exec form, no shell): SIGTERM drains, SIGHUP reloads.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/prefix-gateway
COPY pyproject.toml README.md constraints.txt ./
COPY gateway ./gateway
# Extras: otel (the OTLP exporter, for `tracing.enabled`), tokenizers (`tokenizers.<model>`).
RUN /opt/prefix-gateway/bin/pip install --no-cache-dir -c constraints.txt '.[otel,tokenizers]'

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/prefix-gateway /opt/prefix-gateway
COPY config/gateway.yaml /etc/prefix-gateway/gateway.yaml
ENV PATH=/opt/prefix-gateway/bin:$PATH \
    GATEWAY_CONFIG=/etc/prefix-gateway/gateway.yaml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["prefix-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
