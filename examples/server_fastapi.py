"""A FastAPI service whose routes take the verified caller as a dependency.

Configuration, from the environment:

* ``AUDIENCE``: this service's URL as its callers address it (the tokens' ``aud``);
* ``ALLOWED_CALLERS``: comma-separated emails of the service accounts let in.

Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=http://127.0.0.1:8000 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        uvicorn --app-dir examples server_fastapi:app --port 8000        # shell 2
    TARGET_URL=http://127.0.0.1:8000/ python examples/client_httpx.py    # shell 3

On Cloud Run, deploy it like examples/cloudrun/ deploys server_starlette.py:
its own service account, ``--no-allow-unauthenticated``, ``AUDIENCE`` set to the
service's URL and ``ALLOWED_CALLERS`` to the caller's account.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import Depends, FastAPI

from s2sauth import Caller, Verifier
from s2sauth.fastapi import IDTokenBearer

verifier = Verifier(
    os.environ["AUDIENCE"], allowed_callers=os.environ["ALLOWED_CALLERS"].split(",")
)
VerifiedCaller = Annotated[Caller, Depends(IDTokenBearer(verifier))]

app = FastAPI()


@app.get("/")
async def hello(caller: VerifiedCaller) -> dict[str, str | None]:
    """Greet the verified caller."""
    return {"hello": caller.email}
