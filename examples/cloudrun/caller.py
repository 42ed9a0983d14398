"""The calling service of the Cloud Run example: ``GET /`` calls ``TARGET_URL``.

It runs as its own service account; the metadata server mints an ID token
for the receiver's URL, and the answer it got is shown as JSON. See
README.md beside this file for the deployment; ``TARGET_URL`` is the
receiver's URL.

Run it locally against the emulator (no cloud, no credentials), with a
receiver on port 8000 (see examples/server_starlette.py)::

    TARGET_URL=http://127.0.0.1:8000/ uvicorn --app-dir examples/cloudrun caller:app --port 8001
    curl http://127.0.0.1:8001/
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from s2sauth.httpx import AsyncClient, IDTokenAuth

TARGET_URL = os.environ["TARGET_URL"]
# "both": Cloud Run IAM in front of the receiver checks X-Serverless-Authorization
# (and strips its signature); Authorization reaches the receiver intact, to verify.
auth = IDTokenAuth(header="both")


async def call_receiver(request: Request) -> JSONResponse:
    """Call the receiver and report what it answered."""
    async with AsyncClient(auth=auth, timeout=10) as client:
        response = await client.get(TARGET_URL)
    return JSONResponse(
        {"target": TARGET_URL, "status": response.status_code, "body": response.text}
    )


app = Starlette(routes=[Route("/", call_receiver)])
