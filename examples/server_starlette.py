"""A Starlette service that lets in only allowed callers with a Google ID token.

Configuration, from the environment:

* ``AUDIENCE``: this service's URL as its callers address it (the tokens' ``aud``);
* ``ALLOWED_CALLERS``: comma-separated emails of the service accounts let in.

Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=http://127.0.0.1:8000 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        uvicorn --app-dir examples server_starlette:app --port 8000      # shell 2
    TARGET_URL=http://127.0.0.1:8000/ python examples/client_httpx.py    # shell 3

On Cloud Run, deploy it as its own service account with ``--no-allow-unauthenticated``,
``AUDIENCE`` set to the service's URL and ``ALLOWED_CALLERS`` to the caller's
account: examples/cloudrun/ does exactly that with this file.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from s2sauth import Verifier
from s2sauth.asgi import IDTokenMiddleware

verifier = Verifier(
    os.environ["AUDIENCE"], allowed_callers=os.environ["ALLOWED_CALLERS"].split(",")
)


async def hello(request: Request) -> JSONResponse:
    """Greet the verified caller."""
    return JSONResponse({"hello": request.state.caller.email})


async def healthz(request: Request) -> PlainTextResponse:
    """Answer health checks, which come without a token."""
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/", hello), Route("/healthz", healthz)],
    middleware=[Middleware(IDTokenMiddleware, verifier=verifier, exempt=["/healthz"])],
)
