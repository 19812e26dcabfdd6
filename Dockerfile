# Build stage: install the service (package rlhf_update_server) and its runtime
# dependencies into a virtualenv. The client (client/) is a distribution of its own and
# is not part of the image.
FROM python:3.11-slim AS build
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check .

# Runtime stage: the virtualenv only, run as an unprivileged user.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WEB_CONCURRENCY=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rlhf
COPY --from=build /opt/venv /opt/venv
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "rlhf_update_server.ops.healthcheck"]
# WEB_CONCURRENCY worker processes, each built by the app factory. On SIGTERM: /readyz
# turns 503 at once, the service keeps serving for RLHF_SHUTDOWN_DRAIN_SECONDS (5), then
# stops taking connections and gives running updates up to 20 s to finish, then exits 0
# (25 s in all, inside Kubernetes' 30 s). The access log is off: the JSON line per update
# replaces it.
CMD ["python", "-m", "rlhf_update_server", "--timeout-graceful-shutdown", "20", "--timeout-keep-alive", "15", "--no-access-log"]
