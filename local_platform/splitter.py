"""The local traffic splitter: Cloud Run's release semantics in front of local revisions.

``python -m local_platform.splitter`` serves a plain ASGI reverse proxy (uvicorn, one pooled
``httpx.AsyncClient`` with keep-alive to every revision) that honours
``$HOUSING_MLOPS_HOME/release.yaml`` (``local_platform.release_state``):

- a request goes to the stable or the newest revision by ``release.canaryPercent``: request n
  (one counter) goes to the newest when ``floor((n+1)p/100) > floor(np/100)``, so every 100
  consecutive requests give the newest exactly p — deterministic, no sampling noise for a
  rollout's error test to mistake for a difference, and no lock (one event loop);
- ``/tags/<stable|canary|shadow>/<path>`` reaches that tag's revision directly (path-based: on
  loopback a ``Host``-based tag would need a resolver entry per tag; any client can use a path);
- every answer carries ``X-Served-Revision``; bodies stream both ways; status and headers
  (``X-Request-ID`` included) pass through; no revision, or none reachable, is a 503 in JSON.

A background task stats the file every ``SPLITTER_CHECK_MS`` (never per request) and re-reads it
when its mtime, size or inode changes. The routes are one immutable object swapped in a single
assignment: a request picks its revision when it arrives and finishes there, whatever changes
meanwhile. A bad file is one log line; the last good release keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import uvicorn

from housing_platform.settings_reader import SettingsError, read_settings
from infra.release.traffic import ReleaseError
from local_platform import release_state

log = logging.getLogger("local_platform.splitter")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVED_HEADER = "x-served-revision"
TAG_PREFIX = "/tags/"
#: Headers that describe one connection, not the message: never forwarded either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)


class SplitterSettings(msgspec.Struct, frozen=True, kw_only=True):
    home: str = ".housing-mlops"
    """HOUSING_MLOPS_HOME: the platform's home; the release file is ``<home>/release.yaml``."""
    host: str = "127.0.0.1"
    """HOST: the address the splitter listens on."""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8090
    """PORT: the port the splitter listens on."""
    release_file: str = ""
    """SPLITTER_RELEASE_FILE: the release file, default ``<home>/release.yaml``."""
    check_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 100
    """SPLITTER_CHECK_MS: how often the release file's stat is checked for a change."""
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """SPLITTER_TIMEOUT_S: how long a revision may take to connect, or between two reads."""
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 100
    """SPLITTER_MAX_CONNECTIONS: open connections to the revisions, all together."""

    @property
    def release_path(self) -> Path:
        if self.release_file:
            return Path(self.release_file).expanduser().resolve()
        return release_state.path_in(Path(self.home).expanduser().resolve())


VARIABLES = {
    "HOUSING_MLOPS_HOME": "home",
    "HOST": "host",
    "PORT": "port",
    "SPLITTER_RELEASE_FILE": "release_file",
    "SPLITTER_CHECK_MS": "check_ms",
    "SPLITTER_TIMEOUT_S": "timeout_s",
    "SPLITTER_MAX_CONNECTIONS": "max_connections",
}


def from_env(env: Mapping[str, str]) -> SplitterSettings:
    return read_settings(SplitterSettings, env, VARIABLES)


@dataclass(frozen=True)
class Upstream:
    revision: str
    url: str


@dataclass(frozen=True)
class Routes:
    """Where requests go under one release: ``percent`` of them to ``canary``, the rest to
    ``stable`` (when there is no split, ``stable`` is the only target)."""

    stable: Upstream
    canary: Upstream | None
    percent: int
    tags: dict[str, Upstream] = field(default_factory=dict)

    @classmethod
    def of(cls, state: release_state.ReleaseState) -> Routes:
        def upstream(revision: str) -> Upstream:
            return Upstream(revision, state.revisions[revision].url.rstrip("/"))

        targets = state.targets()
        tags = {tag: upstream(rev) for tag, rev in state.tagged().items()}
        if len(targets) == 1:
            return cls(upstream(targets[0].revision), None, 0, tags)
        stable, canary = targets
        return cls(upstream(stable.revision), upstream(canary.revision), canary.percent, tags)

    def describe(self) -> str:
        shares = f"{self.stable.revision} {100 - self.percent}%"
        if self.canary is not None:
            shares += f", {self.canary.revision} {self.percent}%"
        tags = ", ".join(f"{tag}={up.revision}" for tag, up in sorted(self.tags.items()))
        return f"{shares}; tags {tags or '(none)'}"


class Splitter:
    """The ASGI app. ``routes`` is None until a good release file has been read."""

    def __init__(self, settings: SplitterSettings) -> None:
        self.settings = settings
        self.path = settings.release_path
        self.routes: Routes | None = None
        self._count = 0
        self._seen: tuple[int, int, int] | bool | None = False  # False: never looked
        self._client: httpx.AsyncClient | None = None
        self._watcher: asyncio.Task[None] | None = None

    # -- the release file ---------------------------------------------------------------------

    def check(self) -> None:
        """Re-reads the release file when its stat changed; a bad one is logged and skipped."""
        try:
            st = self.path.stat()
            seen: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return
        self._seen = seen
        if seen is None:
            log.warning("no release file at %s; %s", self.path, self._keeping())
            return
        try:
            routes = Routes.of(release_state.read(self.path))
        except (ReleaseError, OSError) as exc:
            log.warning(
                "release file rejected: %s; %s", " ".join(str(exc).split()), self._keeping()
            )
            return
        self.routes = routes  # one assignment: a request sees the old routes or the new ones
        log.info("release applied: %s", routes.describe())

    def _keeping(self) -> str:
        if self.routes is None:
            return "answering 503 until a good one is written"
        return "keeping the last good release"

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_ms / 1000)
            self.check()

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        # websockets are not proxied: the service has none

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(
                    timeout=httpx.Timeout(self.settings.timeout_s),
                    limits=httpx.Limits(
                        max_connections=self.settings.max_connections,
                        max_keepalive_connections=self.settings.max_connections,
                    ),
                    follow_redirects=False,
                )
                self.check()
                self._watcher = asyncio.create_task(self._watch())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._watcher is not None:
                    self._watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._watcher
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def pick(self, routes: Routes) -> Upstream:
        """The revision for the next untagged request (see the module's docstring)."""
        n = self._count
        self._count += 1
        p = routes.percent
        if routes.canary is not None and (n + 1) * p // 100 > n * p // 100:
            return routes.canary
        return routes.stable

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        routes = self.routes
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        if routes is None:
            await _error(send, 503, f"no release: write {self.path} (see README: Releases)")
            return
        if path.startswith(TAG_PREFIX) or path == TAG_PREFIX.rstrip("/"):
            tag, _, rest = path[len(TAG_PREFIX) :].partition("/")
            if tag not in release_state.TAGS:
                known = ", ".join(release_state.TAGS)
                await _error(send, 404, f"no tag {tag!r}: tag URLs are /tags/<{known}>/...")
                return
            upstream = routes.tags.get(tag)
            if upstream is None:
                await _error(send, 503, f"no revision has the tag {tag!r} in this release")
                return
            path = "/" + rest
        else:
            upstream = self.pick(routes)
        await self._forward(upstream, path, scope, receive, send)

    async def _forward(
        self, upstream: Upstream, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        assert self._client is not None, "the lifespan starts the client"
        url = upstream.url + path
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in HOP_BY_HOP
        ]
        request = self._client.build_request(
            scope["method"], url, headers=headers, content=_body(receive)
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            await _error(send, 504, f"revision {upstream.revision} timed out: {exc!r}", upstream)
            return
        except httpx.TransportError as exc:
            await _error(
                send,
                503,
                f"revision {upstream.revision} at {upstream.url} is not reachable: {exc!r}",
                upstream,
            )
            return
        try:
            out = [
                (k, v)
                for k, v in response.headers.raw
                if k.decode("latin-1").lower() not in HOP_BY_HOP
            ]
            out.append((SERVED_HEADER.encode(), upstream.revision.encode()))
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": out}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client went away
            return
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body"):
            return


async def _error(send: Send, status: int, message: str, upstream: Upstream | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if upstream is not None:
        headers.append((SERVED_HEADER.encode(), upstream.revision.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(env: Mapping[str, str] = os.environ) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s splitter: %(message)s", force=True
    )
    try:
        settings = from_env(env)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    log.info(
        "release file %s, listening on http://%s:%d",
        settings.release_path,
        settings.host,
        settings.port,
    )
    uvicorn.run(
        Splitter(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
