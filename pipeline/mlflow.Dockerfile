# The MLflow tracking server (Cloud Run service `housing-mlflow`). Build from the repository root:
#   docker build -f pipeline/mlflow.Dockerfile -t housing-mlflow .
# Only the `mlflow` dependency group: MLflow, the PostgreSQL driver and GCS for artifacts.
FROM python:3.11.11-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.9.7 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-default-groups --group mlflow --no-install-project
COPY pipeline/ pipeline/
COPY service/ service/
COPY ui/ ui/
COPY infra/ infra/
RUN uv sync --locked --no-default-groups --group mlflow --no-editable

FROM python:3.11.11-slim-bookworm
RUN useradd --create-home --uid 10001 app
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8080 \
    MLFLOW_WORKERS=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    PYTHONUNBUFFERED=1
USER app
WORKDIR /home/app
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "pipeline.tracking_server"]
