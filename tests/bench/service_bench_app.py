"""The service app plus a bare endpoint that returns constant JSON: the framework's ceiling.

Used only by the service benchmark: `python tests/bench/service_app.py` serves both on PORT.
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import uvicorn  # noqa: E402
from litestar import Request, post  # noqa: E402

from service.app import create_app  # noqa: E402
from service.observability import configure_logging  # noqa: E402
from service.settings import from_env  # noqa: E402

CONSTANT = {"predictions": [{"predicted_price": 1.0}], "model": {"name": "bare", "version": "0"}}


@post("/bench/constant", status_code=200, include_in_schema=False)
async def constant(request: Request) -> dict:  # type: ignore[type-arg]
    await request.body()
    return CONSTANT


def main() -> None:
    settings = from_env(os.environ)
    configure_logging(settings.log_level)
    app = create_app(settings)
    app.register(constant)
    uvicorn.run(
        app, host=settings.host, port=settings.port, workers=1, log_config=None, access_log=False
    )


if __name__ == "__main__":
    sys.exit(main())
