"""Unit tests of s2sauth._http: the proxy-free transport and waiting on futures from async code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import socket
import struct
import threading
from collections.abc import Callable

import anyio
import pytest
from support import (
    CountingServer,
    Tls,
    wait_for,
)

from s2sauth._errors import TokenFetchError
from s2sauth._http import HTTPRequest, HTTPTransport, TransportError, wait_future

# -- helpers of the tests below ------------------------------------------------------------


AUDIENCE = "https://callee-xyz.a.run.app"


# -- HTTPTransport and wait_future ---------------------------------------------------------


@pytest.mark.usefixtures("no_outer_settings")
@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "http:///no-host", "127.0.0.1:80/x"])
def test_transport_rejects_urls_it_cannot_send(url: str) -> None:
    """Anything but an http(s) URL with a host is a TransportError, not a connection attempt."""
    with pytest.raises(TransportError) as caught:
        HTTPTransport()(HTTPRequest("GET", url))
    assert str(caught.value) == f"unsupported URL {url!r}: need http:// or https://"
    assert caught.value.timeout is False


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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
