"""Call a service with aiohttp, sending a Google ID token for it.

The middleware fetches the token without blocking the event loop, concurrent
requests share one fetch, and no token follows a redirect to another origin.
Run it locally against the emulator (no cloud, no credentials)::

    s2sauth emulator                  # shell 1: export what it prints in the other shells
    AUDIENCE=http://127.0.0.1:8000 ALLOWED_CALLERS=caller@demo-project.iam.gserviceaccount.com \\
        PORT=8000 python examples/aiohttp_server.py                     # shell 2
    TARGET_URL=http://127.0.0.1:8000/ python examples/aiohttp_client.py  # shell 3

On Cloud Run, the caller runs as its own service account (``gcloud run deploy
--service-account``) with ``TARGET_URL`` set to the receiver's URL, and the
receiver grants that account ``roles/run.invoker``; the metadata server mints
the token. See examples/cloudrun/.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp

from s2sauth.aiohttp import IDTokenMiddleware

TARGET_URL = os.environ.get("TARGET_URL", "http://127.0.0.1:8000/")


async def fetch(session: aiohttp.ClientSession) -> tuple[int, str]:
    """One call: the status and the body."""
    async with session.get(TARGET_URL) as response:
        return response.status, await response.text()


async def main() -> None:
    """Call TARGET_URL three times at once and print each status and body."""
    # "both": behind Cloud Run IAM, which checks X-Serverless-Authorization (and strips
    # its signature), Authorization still reaches the receiver intact for it to verify.
    middleware = IDTokenMiddleware(header="both")
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(middlewares=[middleware], timeout=timeout) as session:
        answers = await asyncio.gather(*(fetch(session) for _ in range(3)))
    for status, body in answers:
        print(status, body)


if __name__ == "__main__":
    asyncio.run(main())
