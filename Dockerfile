FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY chat chat
COPY api api
COPY workers workers
COPY push push
COPY devserver devserver
COPY alembic alembic
COPY alembic.ini Procfile ./
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
CMD ["python", "-m", "devserver"]
