"""A tiny HTTP forward proxy on 127.0.0.1 for tests: absolute-form requests only.

It forwards ``GET http://host:port/path`` style requests (what a client sends a
proxy for a plain http upstream) to the upstream named in them, one request per
connection, and records every request it sees. ``CONNECT`` (what a client sends
for an https upstream) is recorded and refused with ``connect_status`` (no tunnel
is ever opened). With ``credentials`` set, a request without the matching
``Proxy-Authorization`` is answered 407. ``hosts`` maps host names in requests to
loopback addresses, so a test can name a non-loopback upstream (``api.test``).

    async with FakeProxy(credentials=("user", "pw")) as proxy:
        ... env={"HTTP_PROXY": proxy.url_with("user", "pw")} ...
        assert proxy.seen[0].target.startswith("http://")
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

_HOP = frozenset({"proxy-authorization", "proxy-connection", "connection", "keep-alive"})


@dataclass(slots=True)
class ProxiedRequest:
    """One request as the proxy saw it."""

    method: str
    target: str  # absolute URL, or host:port for CONNECT
    headers: dict[str, str]  # lower-case names


class FakeProxy:
    """The proxy. See the module docstring."""

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        hosts: Mapping[str, str] | None = None,
        connect_status: int = 403,
    ) -> None:
        self.credentials = credentials
        self.hosts = dict(hosts or {})
        self.connect_status = connect_status
        self.seen: list[ProxiedRequest] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        if self.credentials is None:
            return True
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return headers.get("proxy-authorization") == f"Basic {token}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line, *lines = head.split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {}
        for h in lines:
            if h:
                name, _, value = h.partition(":")
                headers[name.strip().lower()] = value.strip()
        self.seen.append(ProxiedRequest(method, target, headers))
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if not self._authorized(headers):
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\n'
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            return
        if method == "CONNECT":
            writer.write(
                f"HTTP/1.1 {self.connect_status} Refused\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            return
        url = urlsplit(target)
        assert url.scheme == "http" and url.hostname, f"not absolute form: {target!r}"
        address = self.hosts.get(url.hostname, url.hostname)
        up_reader, up_writer = await asyncio.open_connection(address, url.port or 80)
        path = url.path + (f"?{url.query}" if url.query else "")
        forwarded = [f"{method} {path} HTTP/1.1"]
        forwarded += [f"{k}: {v}" for k, v in headers.items() if k not in _HOP]
        forwarded.append("connection: close")
        up_writer.write(("\r\n".join(forwarded) + "\r\n\r\n").encode("latin-1") + body)
        await up_writer.drain()
        while chunk := await up_reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        up_writer.close()
