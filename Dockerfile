# One image for every process type; the command names a Procfile line (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app

# The dependencies in a layer of their own, rebuilt only when pyproject.toml changes, not on every
# edit of the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md LICENSE alembic.ini Procfile ./
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
