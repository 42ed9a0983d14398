"""Call a service with httpx (async), sending a Google ID token for it.

The token fetch never blocks the event loop, and concurrent requests share one
fetch. Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=http://127.0.0.1:8000 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        uvicorn --app-dir examples server_starlette:app --port 8000            # shell 2
    TARGET_URL=http://127.0.0.1:8000/ python examples/client_httpx_async.py    # shell 3

On Cloud Run, the caller runs as its own service account (``gcloud run deploy
--service-account``) with ``TARGET_URL`` set to the receiver's URL, and the
receiver grants that account ``roles/run.invoker``; the metadata server mints
the token. See examples/cloudrun/.
"""

from __future__ import annotations

import asyncio
import os

from s2sauth.httpx import AsyncClient, IDTokenAuth

TARGET_URL = os.environ.get("TARGET_URL", "http://127.0.0.1:8000/")


async def main() -> None:
    """Call TARGET_URL three times at once and print each status and body."""
    # "both": behind Cloud Run IAM, which checks X-Serverless-Authorization (and strips
    # its signature), Authorization still reaches the receiver intact for it to verify.
    # s2sauth's AsyncClient is an httpx.AsyncClient that judges every redirect hop.
    async with AsyncClient(auth=IDTokenAuth(header="both"), timeout=10) as client:
        responses = await asyncio.gather(*(client.get(TARGET_URL) for _ in range(3)))
    for response in responses:
        print(response.status_code, response.text)


if __name__ == "__main__":
    asyncio.run(main())
