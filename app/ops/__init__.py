"""Telemetry and the process's life: request context, metrics, the update observer,
readiness and shutdown, log configuration, the container's health check."""
