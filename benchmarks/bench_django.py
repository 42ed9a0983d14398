"""Throughput of a Django hello-world view with and without ``s2sauth.django.IDTokenMiddleware``.

``python benchmarks/bench_django.py [--quick]``

Serves the same Django project twice in subprocesses, under waitress with one
worker thread (one sync worker), once bare and once with the middleware first in
``MIDDLEWARE``, and drives both in short interleaved bursts with the same token
(the verified-token cache is warm, as with real callers that reuse a token for
an hour), with fresh processes every round (see
:func:`benchmarks.bench_middleware.interleaved`). Load comes from ``wrk`` when
installed, else from :mod:`benchmarks.bench_middleware`'s built-in client. Target: with middleware
>= 0.90 of the bare project's requests per second.

Two more rows give the middleware's own cost per request, timed in-process
through Django's WSGI handler without the network.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from benchmarks._report import table  # noqa: E402
from benchmarks.bench_middleware import _builtin, _wrk, interleaved, ratio  # noqa: E402
from s2sauth.emulator import Emulator  # noqa: E402

AUDIENCE = "https://bench.example"
TARGET = 0.90
MIDDLEWARE = "s2sauth.django.IDTokenMiddleware"
APPS = ("bare", "protected")


def _configure(protected: bool) -> None:
    from django.conf import settings

    settings.configure(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["127.0.0.1", "bench"],
        MIDDLEWARE=[MIDDLEWARE] if protected else [],
        DATABASES={},
        LOGGING_CONFIG=None,
        S2SAUTH={
            "AUDIENCE": AUDIENCE,
            "ALLOWED_CALLERS": [os.environ["S2SAUTH_BENCH_ALLOWED"]],
            "CERTS_URL": os.environ["S2SAUTH_BENCH_CERTS_URL"],
        },
    )
    import django

    django.setup()


def hello(request: Any) -> Any:
    """The hello-world view."""
    from django.http import HttpResponse

    return HttpResponse(b"hello, world", content_type="text/plain")


def __getattr__(name: str) -> Any:
    # ROOT_URLCONF is this module: its urlpatterns are built once settings exist.
    if name == "urlpatterns":
        from django.urls import path

        return [path("", hello)]
    raise AttributeError(name)


def serve(app: str, port: int) -> None:
    """Serve the ``bare`` or ``protected`` project with waitress, one thread, on ``port``."""
    import logging

    import waitress
    from django.core.wsgi import get_wsgi_application

    _configure(app == "protected")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # deep queues by design
    waitress.serve(get_wsgi_application(), host="127.0.0.1", port=port, threads=1, _quiet=True)


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure the bare and the protected project, interleaved; one row per measurement.

    Args:
        quick: two rounds of 1 s bursts (a smoke run), instead of ten of 2 s.
    """
    load, tool = (_wrk, "wrk") if shutil.which("wrk") else (_builtin, "built-in client")
    seconds, rounds = (1.0, 2) if quick else (2.0, 10)
    rows: list[dict[str, Any]] = []
    with Emulator() as emulator:
        token = emulator.mint(AUDIENCE)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "S2SAUTH_BENCH_CERTS_URL": emulator.jwks_url,
            "S2SAUTH_BENCH_ALLOWED": emulator.default_account,
        }
        served = ["-m", "benchmarks.bench_django", "--serve"]
        commands = {app: [*served, app, "{port}"] for app in APPS}
        rates = interleaved(commands, env, token, load, rounds=rounds, seconds=seconds)
        met = ratio(rates, "protected", "bare")
        label = f"waitress, 1 thread, {tool}"
        rows.append(_row(f"django bare, {label}", statistics.median(rates["bare"])))
        rows.append(
            _row(f"django + IDTokenMiddleware, {label}", statistics.median(rates["protected"]))
            | {"ratio": met, "anchor": "of bare", "target": f">= {TARGET:.2f}"}
            | {"met": met >= TARGET}
        )
        rows.extend(_in_process(emulator, token, quick))
    return rows


def _in_process(emulator: Emulator, token: str, quick: bool) -> list[dict[str, Any]]:
    """Microseconds a request takes through Django's WSGI handler, bare and protected."""
    from django.conf import settings

    if settings.configured:  # another benchmark in this process set Django up: skip
        return []
    os.environ["S2SAUTH_BENCH_CERTS_URL"] = emulator.jwks_url
    os.environ["S2SAUTH_BENCH_ALLOWED"] = emulator.default_account
    _configure(protected=False)
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    handlers = []
    for middleware in ([], [MIDDLEWARE]):
        with override_settings(MIDDLEWARE=middleware):
            handlers.append(WSGIHandler())
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "HTTP_HOST": "bench",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "HTTP_AUTHORIZATION": f"Bearer {token}",
    }

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        assert status.startswith("200"), status

    def calls(handler: Any, n: int) -> None:
        for _ in range(n):
            handler(dict(environ), start_response).close()

    calls(handlers[1], 1)  # the key fetch
    loops = 2000 if quick else 20000
    best = [math.inf, math.inf]
    for _ in range(5 if quick else 7):
        for index, handler in enumerate(handlers):
            started = time.perf_counter()
            calls(handler, loops)
            best[index] = min(best[index], time.perf_counter() - started)
    bare, protected = (b / loops * 1e6 for b in best)
    return [
        _row("django request, in-process (bare)", bare, "us"),
        _row("IDTokenMiddleware cost per request, in-process (django)", protected - bare, "us")
        | {"ratio": bare / protected, "anchor": "of bare throughput"},
    ]


def _row(case: str, value: float, unit: str = "req/s") -> dict[str, Any]:
    return {"benchmark": "django", "case": case, "value": value, "unit": unit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--serve", nargs=2, metavar=("APP", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    print(table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
