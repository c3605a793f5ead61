# trailwarden as a container: `serve` by default, config and data as volumes, secrets from the
# environment only (compose.yaml passes them from an env file). README: Deploying.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/trailwarden/src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY models ./models
COPY detectors ./detectors
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 trailwarden \
    && useradd --system --uid 10001 --gid 10001 --home-dir /srv/trailwarden --create-home trailwarden \
    && mkdir -p /srv/trailwarden/config /srv/trailwarden/data \
    && chown trailwarden:trailwarden /srv/trailwarden/data

# Relative paths in the config (database, inventory) are relative to this directory.
WORKDIR /srv/trailwarden
ENV TRAILWARDEN_CONFIG=/srv/trailwarden/config/trailwarden.yaml
VOLUME ["/srv/trailwarden/data"]
USER 10001:10001

# Healthy while the store (or the snapshot the service publishes after each cycle) can be read.
HEALTHCHECK --interval=5m --timeout=60s --start-period=10m --retries=3 \
    CMD ["trailwarden", "status", "--format", "json"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["trailwarden"]
CMD ["serve"]
