"""Database URLs and readiness, for the Optuna study and the MLflow server on PostgreSQL."""

from __future__ import annotations

import logging
import time

import sqlalchemy
import sqlalchemy.engine

log = logging.getLogger(__name__)


def with_password(url: str, password: str) -> str:
    """The URL with the password added when it names a user but carries none.

    On GCP the password comes from Secret Manager as its own variable (DB_PASSWORD), so it is
    never part of a URL in config, a fingerprint or a log line.
    """
    if not password:
        return url
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.username is None or parsed.password is not None:
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


def redacted(url: str) -> str:
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


class DatabaseUnavailableError(RuntimeError):
    pass


def wait_for(url: str, timeout_s: float) -> int:
    """Block until the database accepts a connection (bounded, with backoff); returns the number
    of attempts. Cloud SQL and a cold container often race at start-up."""
    engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
    deadline = time.monotonic() + timeout_s
    attempt, delay = 0, 0.5
    try:
        while True:
            attempt += 1
            try:
                with engine.connect() as conn:
                    conn.execute(sqlalchemy.text("SELECT 1"))
                return attempt
            except sqlalchemy.exc.OperationalError as exc:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailableError(
                        f"database {redacted(url)} not reachable after {attempt} attempts "
                        f"in {timeout_s:.0f} s: {reason}"
                    ) from None
                log.warning("database not ready (attempt %d): %s", attempt, reason)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
    finally:
        engine.dispose()
