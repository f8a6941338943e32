# The MLflow tracking server (Cloud Run service `housing-mlflow`). Build from the repository root:
#   docker build -f pipeline/mlflow.Dockerfile -t housing-mlflow .
# `nox -s images` builds all four images (buildah where no Docker daemon answers), starts each and
# checks what it holds. Only the `mlflow` dependency group (MLflow, the PostgreSQL driver, GCS for
# artifacts) and the server's own modules.
#
# The bases are pinned by tag, and a tag can move under a rebuild: the deploy workflow resolves
# both to digests and passes them as BASE_IMAGE / UV_IMAGE (`python@sha256:…`); the base an image
# was built on is recorded in its org.opencontainers.image.base.name label.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9.7

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS build
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
# Downloads verify with uv's own roots, or with the CA bundle given as the build secret ca_bundle
# (`--secret id=ca_bundle,src=…`, behind a TLS-inspecting proxy): mounted, never in a layer.
RUN --mount=type=cache,target=/root/.cache/uv --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle UV_NATIVE_TLS=1; fi; \
    uv sync --locked --no-default-groups --group mlflow --no-install-project
# README.md is the wheel's description only: copied here, editing it reinstalls nothing.
COPY README.md ./
# The server's package (pipeline.tracking_server; tests/test_images.py follows its imports), which
# also holds pipeline.id_token, the MLflow plugin the installed project registers.
COPY pipeline/ pipeline/
# The project's wheel is built afresh: uv's cache keys a local project by its pyproject.toml,
# so the cache mount would hand this image the wheel built for another image's sources.
RUN --mount=type=cache,target=/root/.cache/uv --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle UV_NATIVE_TLS=1; fi; \
    uv sync --locked --no-default-groups --group mlflow --no-editable \
        --reinstall-package housing-mlops

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
LABEL org.opencontainers.image.base.name="${BASE_IMAGE}"
RUN useradd --create-home --uid 10001 app
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8080 \
    MLFLOW_WORKERS=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    GIT_PYTHON_REFRESH=quiet \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    PYTHONUNBUFFERED=1
USER app
WORKDIR /home/app
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "pipeline.tracking_server"]
