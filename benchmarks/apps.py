"""Hello-world apps that ``bench_middleware`` serves in a subprocess.

Factories, configured through the environment so the benchmark process (which
runs the emulator) can point the served app at its keys:

* ``S2SAUTH_BENCH_AUDIENCE``: the audience the protected apps accept.
* ``S2SAUTH_BENCH_CERTS_URL``: the keys endpoint (the emulator's JWKS URL).
* ``S2SAUTH_BENCH_ALLOWED``: the allowed caller.

``uvicorn --factory benchmarks.apps:asgi_protected`` serves an ASGI one;
``python -m benchmarks.apps wsgi_protected PORT`` serves a WSGI one with
waitress (its default four threads), without its queue-depth warnings.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
from s2sauth.verify.verifier import Verifier
from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from s2sauth.asgi import ASGIApp, Receive, Scope, Send

BODY = b"hello, world"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


def _verifier() -> Verifier:
    return Verifier(
        os.environ["S2SAUTH_BENCH_AUDIENCE"],
        allowed_callers=[os.environ["S2SAUTH_BENCH_ALLOWED"]],
        certs_url=os.environ["S2SAUTH_BENCH_CERTS_URL"],
    )


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def asgi_bare() -> ASGIApp:
    """The bare ASGI hello-world app (the anchor)."""
    return _hello


def asgi_protected() -> ASGIApp:
    """The same app behind :class:`s2sauth.asgi.IDTokenMiddleware`."""
    return ASGIMiddleware(_hello, verifier=_verifier())


def _wsgi_hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [(k.decode(), v.decode()) for k, v in HEADERS])
    return [BODY]


def wsgi_bare() -> WSGIApplication:
    """The bare WSGI hello-world app (the anchor)."""
    return _wsgi_hello


def wsgi_protected() -> WSGIApplication:
    """The same app behind :class:`s2sauth.wsgi.IDTokenMiddleware`."""
    return WSGIMiddleware(_wsgi_hello, verifier=_verifier())


def main(app: str, port: str) -> None:
    """Serve the WSGI app ``app`` with waitress on ``127.0.0.1:port``."""
    import waitress

    # Under a load generator the queue is deep by design; don't log every request.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    waitress.serve(globals()[app](), host="127.0.0.1", port=int(port))


if __name__ == "__main__":
    main(*sys.argv[1:])
