# One image for every process type; the command names a Procfile line (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app

# The dependencies in a layer of their own, rebuilt only when the lock changes, not on every edit of
# the code: the runtime set and the [tracing] extra (imported only when OTEL_EXPORTER_OTLP_ENDPOINT is
# set) at the versions CI tested, each file checked against its hash (`make lock` writes the file).
COPY requirements-runtime.lock ./
RUN pip install --require-hashes -r requirements-runtime.lock

COPY pyproject.toml README.md LICENSE alembic.ini Procfile ./
COPY alembic alembic
COPY bin bin
COPY chat chat
COPY api api
COPY workers workers
COPY push push
COPY devserver devserver
# The project itself (for the `headless-chat` command); its dependencies are in the layer above.
RUN pip install --no-deps .

# Nothing here needs root: a process that is broken into gets no more than this user may do.
RUN useradd --system --no-create-home --shell /usr/sbin/nologin chat
# Attachments without S3: a volume mounted here takes this owner, so the app can write to it.
RUN mkdir -p /srv/uploads && chown chat /srv/uploads
USER chat

# web, push and the worker's metrics each serve $PORT in their own container.
EXPOSE 8000
CMD ["bin/procfile-run", "web"]
