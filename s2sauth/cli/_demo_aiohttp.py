"""The aiohttp part of ``s2sauth demo``: an aiohttp service called by aiohttp clients.

Skipped, with a line saying so, when aiohttp is not installed.
:func:`serve_aiohttp` runs an aiohttp app on a background thread; the tests use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from .demo import CALLER, STRANGER, Call, Outcome, _Glyphs, _perform, _table, bind

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import ClientSession, web

    from .._http import HTTPTransport
    from ..emulator import Emulator

__all__ = ["section", "serve_aiohttp"]

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


def _app(verifier: Any) -> web.Application:
    from aiohttp import web

    from ..aiohttp import id_token_middleware

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": request["caller"].email})

    app = web.Application(middlewares=[id_token_middleware(verifier=verifier)])
    app.router.add_get("/", hello)
    return app


def section(emulator: Emulator, transport: HTTPTransport, out: TextIO, glyphs: _Glyphs) -> int:
    """Serve an aiohttp app, call it with aiohttp clients, print the table; the failures."""
    print("\naiohttp", file=out)
    if importlib.util.find_spec("aiohttp") is None:
        print("  skipped: aiohttp is not installed (pip install 's2sauth[aiohttp]')", file=out)
        return 0
    import aiohttp

    from ..aiohttp import IDTokenMiddleware
    from ..tokens.provider import IDTokenProvider
    from ..tokens.sources import MetadataServerSource
    from ..verify.verifier import Verifier

    def provider(account: str) -> IDTokenProvider:
        source = MetadataServerSource(account, host=emulator.host, transport=transport)
        return IDTokenProvider(source)

    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(bind())
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}"
        verifier = Verifier(
            url, allowed_callers=[CALLER], certs_url=emulator.jwks_url, transport=transport
        )
        stack.enter_context(serve_aiohttp(_app(verifier), sock))
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        sessions: list[ClientSession] = []

        def session(*middlewares: Any) -> ClientSession:
            async def make() -> ClientSession:
                timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
                return aiohttp.ClientSession(middlewares=middlewares, timeout=timeout)

            made = loop.run_until_complete(make())
            sessions.append(made)
            return made

        def call(made: ClientSession) -> int:
            async def get() -> int:
                async with made.get(url + "/") as response:
                    await response.read()
                    return response.status

            return loop.run_until_complete(get())

        caller, stranger = provider("default"), provider(STRANGER)
        plain = session()
        as_caller = session(IDTokenMiddleware(provider=caller))
        serverless = session(
            IDTokenMiddleware(provider=caller, header="x-serverless-authorization")
        )
        as_stranger = session(IDTokenMiddleware(provider=stranger))
        calls = [
            Call("aiohttp", "aiohttp", "caller", 200, lambda: call(as_caller)),
            Call(
                "aiohttp",
                "aiohttp",
                "caller (X-Serverless-Authorization)",
                200,
                lambda: call(serverless),
            ),
            Call("aiohttp", "aiohttp", "no token", 401, lambda: call(plain)),
            Call("aiohttp", "aiohttp", "stranger", 403, lambda: call(as_stranger)),
        ]
        try:
            outcomes: list[Outcome] = [_perform(c) for c in calls]
        finally:
            for made in sessions:
                loop.run_until_complete(made.close())
    print(f"  {url}  (aiohttp, id_token_middleware; IDTokenMiddleware on the clients)", file=out)
    print("\n".join(_table(outcomes, glyphs)), file=out)
    failed = sum(not o.ok for o in outcomes)
    if failed:
        print(f"  {failed} of {len(outcomes)} aiohttp outcomes NOT as expected.", file=out)
    else:
        print(f"  All {len(outcomes)} aiohttp outcomes as expected.", file=out)
    return failed
