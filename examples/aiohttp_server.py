"""An aiohttp service that lets in only allowed callers with a Google ID token.

Configuration, from the environment:

* ``AUDIENCE``: this service's URL as its callers address it (the tokens' ``aud``);
* ``ALLOWED_CALLERS``: comma-separated emails of the service accounts let in;
* ``PORT``: where to listen when run as a script (Cloud Run sets it), 8080 by default.

Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=http://127.0.0.1:8000 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        PORT=8000 python examples/aiohttp_server.py                     # shell 2
    TARGET_URL=http://127.0.0.1:8000/ python examples/aiohttp_client.py  # shell 3

On Cloud Run, deploy it as its own service account with ``--no-allow-unauthenticated``,
``AUDIENCE`` set to the service's URL and ``ALLOWED_CALLERS`` to the caller's account.
"""

from __future__ import annotations

import os

from aiohttp import web

from s2sauth import Verifier
from s2sauth.aiohttp import id_token_middleware

verifier = Verifier(
    os.environ["AUDIENCE"], allowed_callers=os.environ["ALLOWED_CALLERS"].split(",")
)


async def hello(request: web.Request) -> web.Response:
    """Greet the verified caller."""
    return web.json_response({"hello": request["caller"].email})


async def healthz(request: web.Request) -> web.Response:
    """Answer health checks, which come without a token."""
    return web.Response(text="ok")


app = web.Application(middlewares=[id_token_middleware(verifier=verifier, exempt=["/healthz"])])
app.router.add_get("/", hello)
app.router.add_get("/healthz", healthz)


if __name__ == "__main__":
    web.run_app(app, port=int(os.environ.get("PORT", "8080")))
