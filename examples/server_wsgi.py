"""A plain WSGI application behind the s2sauth WSGI middleware.

The same middleware protects any WSGI framework (Django, Falcon, Pyramid...).
Configuration, from the environment:

* ``AUDIENCE``: this service's URL as its callers address it (the tokens' ``aud``);
* ``ALLOWED_CALLERS``: comma-separated emails of the service accounts let in.

Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=http://127.0.0.1:8000 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        waitress-serve --listen=127.0.0.1:8000 server_wsgi:app   # shell 2, in examples/
    TARGET_URL=http://127.0.0.1:8000/ python examples/client_requests.py            # shell 3

On Cloud Run, serve it with a WSGI server (``waitress-serve --port=$PORT
server_wsgi:app``) and deploy it like examples/cloudrun/ deploys
server_starlette.py: its own service account, ``--no-allow-unauthenticated``,
``AUDIENCE`` set to the service's URL and ``ALLOWED_CALLERS`` to the caller's account.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from s2sauth import Caller, Verifier
from s2sauth.wsgi import IDTokenMiddleware

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

verifier = Verifier(
    os.environ["AUDIENCE"], allowed_callers=os.environ["ALLOWED_CALLERS"].split(",")
)


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Greet the verified caller, whom the middleware put in the environ."""
    caller: Caller = environ["s2sauth.caller"]
    body = json.dumps({"hello": caller.email}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


app = IDTokenMiddleware(hello, verifier=verifier)
