"""A Flask service whose view runs only for allowed callers with a Google ID token.

Configuration, from the environment:

* ``AUDIENCE``: this service's URL as its callers address it (the tokens' ``aud``);
* ``ALLOWED_CALLERS``: comma-separated emails of the service accounts let in.

Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=http://127.0.0.1:8000 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        waitress-serve --listen=127.0.0.1:8000 server_flask:app   # shell 2, in examples/
    TARGET_URL=http://127.0.0.1:8000/ python examples/client_requests.py             # shell 3

On Cloud Run, serve it with a WSGI server (``waitress-serve --port=$PORT
server_flask:app``) and deploy it like examples/cloudrun/ deploys
server_starlette.py: its own service account, ``--no-allow-unauthenticated``,
``AUDIENCE`` set to the service's URL and ``ALLOWED_CALLERS`` to the caller's account.
"""

from __future__ import annotations

import os

from flask import Flask, g

from s2sauth import Verifier
from s2sauth.flask import require_id_token

verifier = Verifier(
    os.environ["AUDIENCE"], allowed_callers=os.environ["ALLOWED_CALLERS"].split(",")
)

app = Flask(__name__)


@app.get("/")
@require_id_token(verifier=verifier)
def hello() -> dict[str, str | None]:
    """Greet the verified caller."""
    return {"hello": g.caller.email}
