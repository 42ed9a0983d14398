"""Unit tests of s2sauth._http: the proxy-free transport and waiting on futures from async code."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import gc
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from support import (
    IAM_HOST,
    PROXY_VARS,
    Tls,
    throwaway_tls,
    wait_for,
)

from s2sauth._errors import TokenFetchError
from s2sauth._http import HTTPRequest, HTTPTransport, TransportError, wait_future

# -- helpers of the tests below ------------------------------------------------------------


AUDIENCE = "https://callee-xyz.a.run.app"


FLAVOR = {"Metadata-Flavor": "Google"}


@pytest.fixture
def _no_outer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run without proxies, CA bundles or gcloud settings from the outer environment."""
    for name in (
        *PROXY_VARS,
        "CLOUDSDK_CONFIG",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GOOGLE_API_USE_CLIENT_CERTIFICATE",
    ):
        monkeypatch.delenv(name, raising=False)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt(claims: Mapping[str, Any]) -> str:
    """A JWT-shaped string with `claims` (the signature is junk: nobody here verifies it)."""
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(dict(claims)).encode())}.{b64(b'signature')}"


Answer = tuple[int, Mapping[str, str], bytes]


def metadata_answer(path: str) -> Answer:
    """What a metadata server says to a ping or an identity call."""
    if path == "/":
        return 200, FLAVOR, b""
    return 200, FLAVOR, fake_jwt({"aud": AUDIENCE, "exp": int(time.time()) + 3600}).encode()


class CountingServer:
    """An HTTP server on 127.0.0.1 that counts connections opened and closed by clients.

    Args:
        answer: the status, headers and body for a GET of a path.
        protocol: ``HTTP/1.1`` keeps connections alive; ``HTTP/1.0`` closes after each
            reply without saying ``Connection: close``, as old servers do.
        tls: serve HTTPS with this context.
        barrier: every request waits here before its answer, to hold requests together.
    """

    def __init__(
        self,
        answer: Callable[[str], Answer] = metadata_answer,
        *,
        protocol: str = "HTTP/1.1",
        tls: ssl.SSLContext | None = None,
        barrier: threading.Barrier | None = None,
    ) -> None:
        self.opened = 0
        self.closed = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol
            timeout = 10  # a connection a test forgot cannot hold a thread for ever

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner.opened += 1

            def finish(self) -> None:
                super().finish()
                with owner._lock:
                    owner.closed += 1

            def do_GET(self) -> None:
                if barrier is not None:
                    barrier.wait(10)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting() -> Iterator[Callable[..., CountingServer]]:
    """Start CountingServers on demand; all are stopped after the test."""
    started: list[CountingServer] = []

    def start(*args: Any, **kwargs: Any) -> CountingServer:
        started.append(CountingServer(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """One throwaway certificate for every TLS server in this module."""
    return throwaway_tls(tmp_path_factory.mktemp("tls"), [IAM_HOST, "127.0.0.1"])


# -- HTTPTransport and wait_future ---------------------------------------------------------


@pytest.mark.usefixtures("_no_outer_settings")
@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "http:///no-host", "127.0.0.1:80/x"])
def test_transport_rejects_urls_it_cannot_send(url: str) -> None:
    """Anything but an http(s) URL with a host is a TransportError, not a connection attempt."""
    with pytest.raises(TransportError) as caught:
        HTTPTransport()(HTTPRequest("GET", url))
    assert str(caught.value) == f"unsupported URL {url!r}: need http:// or https://"
    assert caught.value.timeout is False


@pytest.mark.usefixtures("_no_outer_settings")
@pytest.mark.parametrize(
    ("protocol", "headers"), [("HTTP/1.0", {}), ("HTTP/1.1", {"Connection": "close"})]
)
def test_transport_reopens_connections_the_server_closes(
    counting: Callable[..., CountingServer], protocol: str, headers: dict[str, str]
) -> None:
    """A server that closes after each reply (HTTP/1.0, or Connection: close) gets every
    request, each on a new connection."""
    server = counting(lambda path: (200, headers, path.encode()), protocol=protocol)
    transport = HTTPTransport()
    for path in ("/one", "/two", "/three"):
        response = transport(HTTPRequest("GET", f"http://{server.host}{path}", timeout=5))
        assert (response.status, response.body) == (200, path.encode())
    assert server.opened == 3
    transport.close()


@pytest.mark.usefixtures("_no_outer_settings")
def test_transport_https_trusts_its_context_and_nothing_else(
    counting: Callable[..., CountingServer], tls: Tls
) -> None:
    """HTTPS works with an ssl_context that trusts the server; the system store refuses it."""
    server = counting(lambda path: (200, {}, b"secure"), tls=tls.server)
    url = f"https://{server.host}/"
    trusting = HTTPTransport(ssl_context=tls.client())
    assert trusting(HTTPRequest("GET", url, timeout=5)).body == b"secure"
    trusting.close()
    with pytest.raises(TransportError) as caught:
        HTTPTransport()(HTTPRequest("GET", url, timeout=5))
    assert str(caught.value).startswith(f"could not reach {server.host}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert caught.value.timeout is False


@pytest.mark.usefixtures("_no_outer_settings")
def test_transport_keeps_at_most_8_idle_connections_per_origin(
    counting: Callable[..., CountingServer],
) -> None:
    """After 9 requests at once, 8 connections stay pooled and the 9th is closed."""
    server = counting(lambda path: (200, {}, b"ok"), barrier=threading.Barrier(9))
    transport = HTTPTransport()
    url = f"http://{server.host}/"

    def nine_at_once() -> None:
        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            replies = list(pool.map(lambda _: transport(HTTPRequest("GET", url)), range(9)))
        assert [reply.status for reply in replies] == [200] * 9

    nine_at_once()
    assert server.opened == 9
    wait_for(lambda: server.closed == 1)
    nine_at_once()
    assert server.opened == 10  # 8 pooled connections reused, one new
    wait_for(lambda: server.closed == 2)
    transport.close()


@pytest.mark.usefixtures("_no_outer_settings")
@pytest.mark.anyio
async def test_wait_future_of_a_done_future(anyio_backend: str) -> None:
    """Awaiting a future that is already done gives its result, or raises its exception."""
    done: concurrent.futures.Future[str] = concurrent.futures.Future()
    done.set_result("value")
    assert await wait_future(done) == "value"
    failed: concurrent.futures.Future[str] = concurrent.futures.Future()
    failed.set_exception(TokenFetchError("down"))
    with pytest.raises(TokenFetchError, match="down"):
        await wait_future(failed)


@pytest.mark.usefixtures("_no_outer_settings")
@pytest.mark.anyio
async def test_a_cancelled_wait_returns_at_once_and_the_work_goes_on(anyio_backend: str) -> None:
    """A task cancelled while it waits on shared work stops waiting then (under trio too);
    the work is not cancelled and others still get its result."""
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    future.set_running_or_notify_cancel()
    finisher = threading.Timer(10, future.set_result, (7,))  # only if the wait hangs on
    finisher.start()
    try:
        with anyio.move_on_after(0.05) as scope:
            await wait_future(future)
        assert scope.cancelled_caught
        assert not future.done()
    finally:
        finisher.cancel()
    future.set_result(7)
    assert await wait_future(future) == 7


@pytest.mark.usefixtures("_no_outer_settings")
def test_a_cancelled_asyncio_wait_leaves_nothing_unretrieved() -> None:
    """When work fails after its only waiter was cancelled, asyncio reports nothing."""

    async def main() -> list[str]:
        reported: list[str] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: reported.append(context["message"])
        )
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        task = asyncio.create_task(wait_future(future))
        await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        future.set_exception(TokenFetchError("down"))
        for _ in range(5):
            await asyncio.sleep(0.01)
        gc.collect()
        await asyncio.sleep(0.01)
        return reported

    assert asyncio.run(main()) == []


@pytest.mark.usefixtures("_no_outer_settings")
def test_transport_does_not_pool_a_connection_the_server_closed() -> None:
    """After an HTTP/1.0 reply the next request opens one fresh connection, and a failure
    there is not retried as if a pooled socket had gone stale."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            with conn:
                if len(accepted) == 1:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:  # every later connection is reset at once
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    transport = HTTPTransport()
    try:
        assert transport(HTTPRequest("GET", url, timeout=5)).body == b"ok"
        with pytest.raises(TransportError):
            transport(HTTPRequest("GET", url, timeout=5))
    finally:
        transport.close()
        stop.set()
        thread.join(5)
        listener.close()
    assert len(accepted) == 2
