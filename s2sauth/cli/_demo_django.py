"""The Django part of ``s2sauth demo``, when Django is installed.

A Django service behind :class:`s2sauth.django.IDTokenMiddleware` runs under
waitress in a subprocess (Django's settings are process-wide, so it gets a process
of its own), and the demo calls it as the allowed caller, with no token and as
the stranger.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["available", "calls", "serve"]

_TIMEOUT = 10.0


def available() -> bool:
    """Whether Django (and waitress, which serves it) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("django", "waitress"))


@contextlib.contextmanager
def serve(port: int, certs_url: str, allowed: str) -> Iterator[str]:
    """Run the Django service on ``127.0.0.1:port`` until the block ends; yields its origin."""
    origin = f"http://127.0.0.1:{port}"
    env = {**os.environ, "S2SAUTH_DEMO_CERTS_URL": certs_url, "S2SAUTH_DEMO_ALLOWED": allowed}
    # The s2sauth this process runs, whatever the subprocess would find first.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "s2sauth.cli._demo_django", str(port)]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as process:
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    log = process.stderr.read() if process.stderr else ""
                    raise RuntimeError(f"the Django service did not start:\n{log}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the Django service did not start listening") from None
                    time.sleep(0.05)
            yield origin
        finally:
            process.terminate()
            process.communicate(timeout=_TIMEOUT)


def calls(url: str, caller: Any, stranger: Any, call: Callable[..., Any]) -> list[Any]:
    """The demo's calls to the Django service (``call`` builds one demo ``Call``)."""
    import requests

    from ..requests import IDTokenAuth

    session = requests.Session()
    session.trust_env = False

    def get(auth: IDTokenAuth | None) -> Callable[[], int]:
        return lambda: session.get(url + "/", auth=auth, timeout=_TIMEOUT).status_code

    return [
        call("requests", "django", "caller", 200, get(IDTokenAuth(provider=caller))),
        call("requests", "django", "no token", 401, get(None)),
        call("requests", "django", "stranger", 403, get(IDTokenAuth(provider=stranger))),
    ]


def _main(port: int) -> None:
    import logging

    import django
    import waitress
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import JsonResponse
    from django.urls import path

    origin = f"http://127.0.0.1:{port}"

    def hello(request: Any) -> Any:
        return JsonResponse({"hello": request.caller.email})

    settings.configure(
        ROOT_URLCONF=(path("", hello),),
        ALLOWED_HOSTS=["127.0.0.1"],
        MIDDLEWARE=["s2sauth.django.IDTokenMiddleware"],
        LOGGING_CONFIG=None,
        S2SAUTH={
            "AUDIENCE": origin,
            "ALLOWED_CALLERS": [os.environ["S2SAUTH_DEMO_ALLOWED"]],
            "CERTS_URL": os.environ["S2SAUTH_DEMO_CERTS_URL"],
        },
    )
    django.setup()
    logging.getLogger("s2sauth").setLevel(logging.WARNING)  # the demo prints its own table
    waitress.serve(get_wsgi_application(), host="127.0.0.1", port=port, threads=2, _quiet=True)


if __name__ == "__main__":
    _main(int(sys.argv[1]))
