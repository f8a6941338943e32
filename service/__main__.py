"""``python -m service``: the inference service under uvicorn, one worker, settings from env."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", help="overrides HOST")
    parser.add_argument("--port", type=int, help="overrides PORT")
    args = parser.parse_args(argv)
    # Pin BLAS/OpenMP to one thread before numpy loads: a request's model call is tiny, and
    # threads would only contend with the event loop. MLflow must fail fast, not retry for
    # minutes, so the loader can fall back to the exported model.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    import uvicorn

    from housing_platform.settings_reader import SettingsError
    from service.app import create_app
    from service.observability import configure_logging
    from service.settings import from_env

    try:
        settings = from_env(os.environ, host=args.host or None, port=args.port or None)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.drain_seconds,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
