"""The aiohttp part of ``s2sauth demo``: an aiohttp service called by aiohttp clients.

Only when aiohttp is installed (:func:`available`). :func:`serve_aiohttp` runs an
aiohttp app on a background thread; the tests use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import ClientSession, web

    from .._http import HTTPTransport
    from ..tokens.provider import IDTokenProvider
    from .demo import Call

__all__ = ["available", "calls", "serve", "serve_aiohttp"]

_TIMEOUT = 10.0


@contextlib.contextmanager
def serve_aiohttp(app: web.Application, sock: Any) -> Iterator[str]:
    """Serve ``app`` on the bound socket ``sock`` in a thread of its own; yields the origin.

    Leaving the block stops the server, runs the app's cleanup and closes the socket.
    """
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as exc:  # reported by the starting thread
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=main, name="s2sauth-aiohttp", daemon=True)
    thread.start()
    try:
        if not ready.wait(_TIMEOUT) or failure:
            raise RuntimeError("the aiohttp server did not start") from next(iter(failure), None)
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        if thread.is_alive() and not failure:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_TIMEOUT)
        sock.close()


def available() -> bool:
    """Whether aiohttp is installed."""
    return importlib.util.find_spec("aiohttp") is not None


@contextlib.contextmanager
def serve(sock: Any, certs_url: str, allowed: str, transport: HTTPTransport) -> Iterator[str]:
    """Serve the demo's aiohttp service on ``sock``; yields its origin (also its audience)."""
    from aiohttp import web

    from ..aiohttp import id_token_middleware
    from ..verify.verifier import Verifier

    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    verifier = Verifier(url, allowed_callers=[allowed], certs_url=certs_url, transport=transport)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": request["caller"].email})

    app = web.Application(middlewares=[id_token_middleware(verifier=verifier)])
    app.router.add_get("/", hello)
    with serve_aiohttp(app, sock) as origin:
        yield origin


def calls(
    url: str, caller: IDTokenProvider, stranger: IDTokenProvider, stack: contextlib.ExitStack
) -> list[Call]:
    """The demo's calls to the aiohttp service, each with an aiohttp client.

    They run on an event loop of their own, closed (sessions first) with ``stack``.
    """
    import aiohttp

    from ..aiohttp import IDTokenMiddleware
    from .demo import Call  # here: demo imports this module

    loop = asyncio.new_event_loop()
    stack.callback(loop.close)

    def session(*middlewares: Any) -> ClientSession:
        async def make() -> ClientSession:
            timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
            return aiohttp.ClientSession(middlewares=middlewares, timeout=timeout)

        made = loop.run_until_complete(make())
        stack.callback(lambda: loop.run_until_complete(made.close()))
        return made

    def get(*middlewares: Any) -> Callable[[], int]:
        client = session(*middlewares)

        async def status() -> int:
            async with client.get(url + "/") as response:
                await response.read()
                return response.status

        return lambda: loop.run_until_complete(status())

    xsa = IDTokenMiddleware(provider=caller, header="x-serverless-authorization")
    return [
        Call("aiohttp", "aiohttp", "caller", 200, get(IDTokenMiddleware(provider=caller))),
        Call("aiohttp", "aiohttp", "caller (X-Serverless-Authorization)", 200, get(xsa)),
        Call("aiohttp", "aiohttp", "no token", 401, get()),
        Call("aiohttp", "aiohttp", "stranger", 403, get(IDTokenMiddleware(provider=stranger))),
    ]
