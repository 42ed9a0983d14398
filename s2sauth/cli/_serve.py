"""Servers on background threads, for the demo and the tests: a real uvicorn or waitress.

:func:`bind` a socket, then ``with serve_asgi(app, sock) as origin:`` (or
:func:`serve_wsgi`) runs ``app`` until the block ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import WSGIApplication

__all__ = ["HOST", "bind", "origin", "serve_asgi", "serve_wsgi"]

#: Where the servers listen unless told otherwise: loopback only.
HOST = "127.0.0.1"
_TIMEOUT = 10.0


def bind(port: int = 0, host: str = HOST) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), for :func:`serve_asgi`/``_wsgi``."""
    # An explicit IPPROTO_TCP, so that asyncio recognises the accepted sockets as TCP
    # and sets TCP_NODELAY on them (without it, keep-alive replies wait ~40 ms on Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def origin(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@contextlib.contextmanager
def serve_asgi(app: Any, sock: socket.socket) -> Iterator[str]:
    """Serve ASGI ``app`` with uvicorn on ``sock`` in a thread; yields the origin URL.

    Leaving the block shuts the server down and closes the socket.
    """
    import uvicorn

    config = uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="s2sauth-uvicorn", daemon=True
    )
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start; see the log above")
            time.sleep(0.005)
        yield origin(sock)
    finally:
        server.should_exit = True
        thread.join(_TIMEOUT)
        sock.close()


@contextlib.contextmanager
def serve_wsgi(app: WSGIApplication, sock: socket.socket) -> Iterator[str]:
    """Serve WSGI ``app`` with waitress on ``sock`` in a thread; yields the origin URL.

    Leaving the block closes every connection, stops the server and its workers.
    """
    import waitress
    from waitress import wasyncore

    server = waitress.create_server(app, sockets=[sock], threads=4)
    thread = threading.Thread(target=server.run, name="s2sauth-waitress", daemon=True)
    thread.start()
    try:
        yield origin(sock)
    finally:
        # Close everything from inside waitress's own loop (so it never polls a closed
        # socket); the loop ends once nothing is left open.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(_TIMEOUT)
        server.task_dispatcher.shutdown()
