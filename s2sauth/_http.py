"""Tiny HTTP values and the one transport the cores use for their own calls.

The cores never import a client library. They describe a request as an
:class:`HTTPRequest`, and a *transport* (any ``Callable[[HTTPRequest],
HTTPResponse]``) performs it. The default, :class:`HTTPTransport`, is the
standard library's ``http.client`` over a small per-origin connection pool:

* it never consults ``HTTP_PROXY``/``HTTPS_PROXY`` (``http.client`` has no
  notion of proxies), which is what metadata-server calls require;
* it never follows redirects;
* it is never the user's client, so the user's hooks, base URL and proxies
  cannot apply to token or key fetches;
* a request's ``timeout`` is wall-clock time for the whole exchange, not per
  read: a server that trickles bytes, or never closes, is cut off when it is
  spent, and a reply body over :data:`MAX_BODY` bytes is refused.

Connection failures and timeouts become :class:`TransportError`; the cores turn
that into their own public errors.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

#: Seconds a single request may take, wall clock, before it counts as a timeout.
DEFAULT_TIMEOUT = 3.0
#: Most seconds spent opening a connection, inside a request's own timeout: whatever
#: answers at all (a metadata server, a keys endpoint) accepts a connection at once.
CONNECT_TIMEOUT = 3.0
#: Largest reply body read, in bytes (tokens and key sets are a few KiB).
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class HTTPRequest:
    """A request a core wants made: plain data, no I/O."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    #: Seconds the whole exchange may take, wall clock: connecting, sending, reading.
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class HTTPResponse:
    """What came back. ``headers`` keys are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        return self.headers.get(name.lower())

    @property
    def text(self) -> str:
        """The body decoded as UTF-8, undecodable bytes replaced."""
        return self.body.decode("utf-8", "replace")


class TransportError(Exception):
    """The request could not be completed: connection refused/reset, or a timeout."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


Transport: TypeAlias = Callable[[HTTPRequest], HTTPResponse]

_MAX_IDLE_PER_ORIGIN = 8
# Errors that mean a pooled keep-alive connection was closed by the peer while idle.
_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


class HTTPTransport:
    """A pooled, proxy-free, redirect-free ``http.client`` transport.

    Safe to share between threads. One instance keeps up to a few idle
    keep-alive connections per origin, so a warm cache refresh costs one round
    trip and no TCP handshake.

    Args:
        ssl_context: for ``https`` URLs; the system's default trust store if omitted.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        # Idle keep-alive sockets are closed when the transport is dropped, so a
        # forgotten transport never leaks file descriptors or ResourceWarnings.
        self._finalizer = weakref.finalize(self, _close_idle, self._idle, self._lock)

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        try:
            parts = urlsplit(request.url)
            port = parts.port
        except ValueError as exc:  # an unbalanced IPv6 bracket, a port out of range
            raise TransportError(f"bad URL {request.url!r}: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"unsupported URL {request.url!r}: need http:// or https://")
        port = port or (443 if scheme == "https" else 80)
        origin = (scheme, parts.hostname, port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        deadline = time.monotonic() + request.timeout
        conn, reused = self._checkout(origin, deadline)
        try:
            try:
                response = self._send(conn, request, target, deadline)
            except _STALE_CONNECTION_ERRORS:
                if not reused or time.monotonic() >= deadline:
                    raise
                # The pooled connection had been closed by the server while idle;
                # the request never reached it, so one fresh attempt is safe.
                conn.close()
                conn, reused = self._connect(origin, deadline), False
                response = self._send(conn, request, target, deadline)
        except _BodyTooLarge as exc:
            conn.close()
            raise TransportError(
                f"the reply from {parts.netloc} is larger than {MAX_BODY} bytes"
            ) from exc
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            conn.close()
            if time.monotonic() < deadline and not isinstance(exc, TimeoutError):
                raise TransportError(f"could not reach {parts.netloc}: {exc}") from exc
            raise TransportError(
                f"timed out after {request.timeout:g}s talking to {parts.netloc}", timeout=True
            ) from exc
        except UnicodeEncodeError as exc:
            # Not quoted back: the offending header value may well hold a credential.
            conn.close()
            raise TransportError(
                f"cannot send to {parts.netloc}: the request line and headers must be ASCII/latin-1"
            ) from exc
        except UnicodeError as exc:  # the IDNA codec refused a host name label
            conn.close()
            raise TransportError(f"bad URL {request.url!r}: {exc}") from exc
        # http.client drops the socket of a reply that ends the connection (HTTP/1.0).
        keep_alive = conn.sock is not None and response.header("connection") != "close"
        self._checkin(origin, conn, keep_alive)
        return response

    def close(self) -> None:
        """Close every idle connection (the transport stays usable)."""
        _close_idle(self._idle, self._lock)

    def _send(
        self, conn: http.client.HTTPConnection, request: HTTPRequest, target: str, deadline: float
    ) -> HTTPResponse:
        if conn.sock is None:
            conn.connect()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        assert conn.sock is not None
        conn.sock.settimeout(remaining)
        # The socket timeout bounds each read; the watchdog bounds them all together,
        # by shutting the socket when the deadline passes (a blocked read then returns).
        watchdog = threading.Timer(remaining, _shut, (conn.sock,))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request(request.method, target, body=request.body, headers=dict(request.headers))
            raw = conn.getresponse()
            body = raw.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise _BodyTooLarge
            headers = {name.lower(): value for name, value in raw.getheaders()}
        finally:
            watchdog.cancel()
        if time.monotonic() >= deadline:
            raise TimeoutError  # cut off by the watchdog: what was read may be partial
        return HTTPResponse(status=raw.status, headers=headers, body=body)

    def _checkout(
        self, origin: tuple[str, str, int], deadline: float
    ) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            pool = self._idle.get(origin)
            conn = pool.pop() if pool else None
        if conn is None:
            return self._connect(origin, deadline), False
        return conn, True

    def _connect(self, origin: tuple[str, str, int], deadline: float) -> http.client.HTTPConnection:
        scheme, host, port = origin
        timeout = max(0.001, min(CONNECT_TIMEOUT, deadline - time.monotonic()))
        if scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _checkin(
        self, origin: tuple[str, str, int], conn: http.client.HTTPConnection, keep_alive: bool
    ) -> None:
        if keep_alive:
            with self._lock:
                pool = self._idle.setdefault(origin, [])
                if len(pool) < _MAX_IDLE_PER_ORIGIN:
                    pool.append(conn)
                    return
        conn.close()


class _BodyTooLarge(Exception):
    pass


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def _close_idle(
    idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]], lock: threading.Lock
) -> None:
    with lock:
        connections = [conn for pool in idle.values() for conn in pool]
        idle.clear()
    for conn in connections:
        conn.close()


def _async_library() -> str:
    try:
        import sniffio
    except ImportError:  # pragma: no cover - sniffio comes with anyio/httpx
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:  # pragma: no cover
        return "asyncio"


async def wait_future(future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """Await a ``concurrent.futures.Future`` from asyncio or trio.

    Under asyncio no thread is used. The future must already be running (see
    :meth:`concurrent.futures.Future.set_running_or_notify_cancel`) so that a
    cancelled waiter cannot cancel it for everybody else.

    Raises:
        TimeoutError: ``timeout`` seconds passed first (the future runs on).
    """
    if future.done():
        return future.result()
    if _async_library() == "asyncio":
        import asyncio  # here, not at the top: a sync-only process never pays for it

        waiter = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
        finally:
            # A waiter given up on (timed out, or its task cancelled) is dropped, so the
            # loop never reports its outcome as "never retrieved".
            if not waiter.done():
                waiter.cancel()
        if not done:
            raise TimeoutError(f"no result within {timeout} s")
        return waiter.result()
    import anyio.to_thread

    # A cancelled trio task stops waiting at once; the worker thread waits on alone.
    return await anyio.to_thread.run_sync(_result, future, timeout, abandon_on_cancel=True)


def _result(future: concurrent.futures.Future[T], timeout: float | None) -> T:
    # Waiting first, so that a TimeoutError raised by the work itself is not taken for ours.
    if not concurrent.futures.wait([future], timeout).done:
        raise TimeoutError(f"no result within {timeout} s")
    return future.result()
