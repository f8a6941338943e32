"""The shadow mirror's HTTP client: keep-alive HTTP/1.1 POSTs over asyncio streams.

The mirror sends a request every few milliseconds from the event loop that serves users, so
what a request costs in CPU is taken from them. httpx's AsyncClient spent about 3 ms of CPU a
request here (its models, its pool, anyio's streams), this a small fraction of that: a request
is one write and two or three reads on a connection kept open. It speaks only what the mirror
needs: POST, an answer with a Content-Length or chunked, http or https (Cloud Run's tag URLs).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

_Origin = tuple[str, str, int]
_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ShadowHttpError(RuntimeError):
    """The answer was not HTTP/1.1 as expected, or the connection closed mid-answer."""


class ShadowHttp:
    """POSTs with a deadline each, over at most ``connections`` kept-open connections per
    origin (the caller bounds its concurrency to the same number)."""

    def __init__(self, timeout_s: float, connections: int):
        self.timeout_s = timeout_s
        self.connections = connections
        self._idle: dict[_Origin, list[_Conn]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """The answer's status and body; raises TimeoutError past the deadline, OSError or
        ShadowHttpError when the exchange fails (the connection is then closed)."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host = parts.hostname or ""
        origin = (parts.scheme, host, parts.port or (443 if https else 80))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        idle = self._idle.setdefault(origin, [])
        async with asyncio.timeout(self.timeout_s):
            conn = self._reusable(idle)
            if conn is not None:
                try:
                    status, answer, keep = await self._exchange(conn, request)
                except (ShadowHttpError, ConnectionError):
                    # The server closed it while idle (uvicorn after 5 s): once more on a new
                    # connection. A prediction is safe to send twice.
                    conn[1].close()
                    conn = None
                except BaseException:
                    conn[1].close()
                    raise
            if conn is None:
                conn = await self._open(origin, https)
                try:
                    status, answer, keep = await self._exchange(conn, request)
                except BaseException:
                    conn[1].close()
                    raise
        if keep and len(idle) < self.connections:
            idle.append(conn)
        else:
            conn[1].close()
        return status, answer

    @staticmethod
    def _reusable(idle: list[_Conn]) -> _Conn | None:
        """An idle connection the server has not closed, or None."""
        while idle:
            reader, writer = conn = idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return conn
            writer.close()
        return None

    async def _open(self, origin: _Origin, https: bool) -> _Conn:
        if https and self._tls is None:
            self._tls = ssl.create_default_context()
        _, host, port = origin
        return await asyncio.open_connection(
            host, port, ssl=self._tls if https else None, server_hostname=host if https else None
        )

    async def _exchange(self, conn: _Conn, request: bytes) -> tuple[int, bytes, bool]:
        reader, writer = conn
        writer.write(request)
        await writer.drain()
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            raise ShadowHttpError("the connection closed before an answer") from None
        lines = raw.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise ShadowHttpError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}")
        status = int(status_line[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                fields[name.strip().lower()] = value.strip()
        keep = fields.get("connection", "").lower() != "close"
        if "content-length" in fields:
            body = await reader.readexactly(int(fields["content-length"]))
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            body = await _chunks(reader)
        else:  # the answer ends when the connection does
            body, keep = await reader.read(), False
        return status, body, keep

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()


async def _chunks(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the end
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
