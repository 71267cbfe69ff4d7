# The twin-stream worker image (docker-compose.yml builds it as the `worker` service).
#   docker build -t twin-stream .
#   docker run --rm -e TWIN_KAFKA__BOOTSTRAP_SERVERS=host:9092 twin-stream
# Settings: /etc/twin/twin-settings.json (the documented defaults; mount your own over it)
# and TWIN_ environment variables. Table state (RocksDB) lives in /var/lib/twin and is
# rebuilt from the changelog topics when a container starts afresh.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project (not editable): only what the package needs; see .dockerignore.
COPY pyproject.toml README.md /src/
COPY twin_stream /src/twin_stream
COPY models /src/models
COPY agents /src/agents
COPY schemas /src/schemas
RUN pip install /src && rm -rf /src

# An unprivileged user owning only the state folder.
RUN groupadd --system --gid 10001 twin \
 && useradd --system --uid 10001 --gid twin --home-dir /var/lib/twin --no-create-home \
      --shell /usr/sbin/nologin twin \
 && mkdir -p /var/lib/twin /etc/twin \
 && chown twin:twin /var/lib/twin
COPY settings/twin-settings.json /etc/twin/twin-settings.json

USER twin
WORKDIR /var/lib/twin
# the worker's web server: /metrics (Prometheus), /twin/metrics/, /twin/health/live/ and
# /twin/health/ready/; bound to 127.0.0.1 unless TWIN_WORKER__WEB_BIND says otherwise
EXPOSE 6066

ENTRYPOINT ["twin-stream"]
CMD ["worker", "--settings", "/etc/twin/twin-settings.json"]
