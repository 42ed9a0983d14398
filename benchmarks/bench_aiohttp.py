"""Throughput of an aiohttp hello-world with and without ``id_token_middleware``.

``python benchmarks/bench_aiohttp.py [--quick]``

Serves four copies of the same app in subprocesses on free loopback ports (one
process each, ``web.run_app``): bare; behind a middleware that does nothing (what
any aiohttp middleware costs); behind the least any verifying middleware does (the
floor: read the ``Authorization`` header, one dict look-up of its token, store the
caller on the request); and behind :func:`s2sauth.aiohttp.id_token_middleware`.
Each is driven with the same token on every request, as real callers reuse a token
for an hour (so the verified-token cache is warm), in short alternating bursts with
fresh processes every round (see :func:`benchmarks.bench_middleware.interleaved`).
The load comes from wrk when installed, else from ``bench_middleware``'s built-in
client (which may itself be the bottleneck; the report says which ran). Target:
with the middleware >= 0.85 of the bare app's requests per second. A last row
gives what the middleware adds to one request, timed in-process without the network.
"""

from __future__ import annotations

import argparse
import asyncio
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
from benchmarks.bench_middleware import AUDIENCE, _builtin, _wrk, interleaved, ratio  # noqa: E402
from s2sauth.emulator import Emulator  # noqa: E402

TARGET = 0.85
APPS = ("bare", "noop", "floor", "protected")
BODY = b"hello, world"


def _app(kind: str) -> Any:
    from aiohttp import web
    from multidict import istr

    AUTHORIZATION = istr("Authorization")
    CALLER = web.RequestKey("caller", object)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="text/plain")

    @web.middleware
    async def noop(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        return response

    # token -> (caller's email, expiry): what a verified-token cache must hold at least.
    known: dict[str, tuple[str, float]] = {}
    allowed = frozenset([os.environ.get("S2SAUTH_BENCH_ALLOWED", "")])

    @web.middleware
    async def floor(request: web.Request, handler: Any) -> web.StreamResponse:
        # The least a verifying middleware does for a token it has verified before:
        # one header, one look-up, the expiry and the allow-list, the caller stored.
        token = request.headers.get(AUTHORIZATION, "")[7:]
        hit = known.get(token)
        if hit is None:
            hit = known[token] = (next(iter(allowed)), time.time() + 3600)
        if not (time.time() < hit[1] and hit[0] in allowed):
            return web.Response(status=403)
        request[CALLER] = hit
        response: web.StreamResponse = await handler(request)
        return response

    middlewares: list[Any] = []
    if kind == "noop":
        middlewares.append(noop)
    elif kind == "floor":
        middlewares.append(floor)
    elif kind == "protected":
        from benchmarks.apps import _verifier
        from s2sauth.aiohttp import id_token_middleware

        middlewares.append(id_token_middleware(verifier=_verifier()))
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", hello)
    return app


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure the four apps side by side; one row per measurement.

    The figures are medians over the rounds, and each ratio is the median of each
    round's ratio to the bare app.

    Args:
        quick: two rounds of 1 s bursts (a smoke run), instead of ten of 2 s.
    """
    load, tool = (_wrk, "wrk") if shutil.which("wrk") else (_builtin, "built-in client")
    seconds, rounds = (1.0, 2) if quick else (2.0, 10)
    with Emulator() as emulator:
        token = emulator.mint(AUDIENCE)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "S2SAUTH_BENCH_AUDIENCE": AUDIENCE,
            "S2SAUTH_BENCH_CERTS_URL": emulator.jwks_url,
            "S2SAUTH_BENCH_ALLOWED": emulator.default_account,
        }
        commands = {
            kind: ["-m", "benchmarks.bench_aiohttp", "--serve", kind, "{port}"] for kind in APPS
        }
        rates = interleaved(commands, env, token, load, rounds=rounds, seconds=seconds)
        rows = [_row(f"aiohttp bare, {tool}", statistics.median(rates["bare"]))]
        for kind, label in (("noop", "+ a no-op middleware"), ("floor", "+ the floor middleware")):
            rows.append(
                _row(f"aiohttp {label}, {tool}", statistics.median(rates[kind]))
                | {"ratio": ratio(rates, kind, "bare"), "anchor": "of bare"}
            )
        met = ratio(rates, "protected", "bare")
        rows.append(
            _row(f"aiohttp + id_token_middleware, {tool}", statistics.median(rates["protected"]))
            | {"ratio": met, "anchor": "of bare", "target": f">= {TARGET:.2f}"}
            | {"met": met >= TARGET}
        )
        of_floor = ratio(rates, "protected", "floor")
        rows.append(_row("id_token_middleware, of the floor's rate", of_floor, "x"))
        rows.append(_in_process_cost(emulator, token, quick))
    return rows


def _in_process_cost(emulator: Emulator, token: str, quick: bool) -> dict[str, Any]:
    """Microseconds the middleware adds to one request (warm caches), best of a few runs."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from s2sauth.aiohttp import id_token_middleware
    from s2sauth.verify.verifier import Verifier

    verifier = Verifier(
        AUDIENCE, allowed_callers=[emulator.default_account], certs_url=emulator.jwks_url
    )
    middleware = id_token_middleware(verifier=verifier)
    response = web.Response(body=BODY)
    loops = 2000 if quick else 20000

    async def handler(request: web.Request) -> web.StreamResponse:
        return response

    async def timed() -> float:
        request = make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {token}"})
        await middleware(request, handler)  # the key fetch
        best = [math.inf, math.inf]
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(loops):
                await handler(request)
            best[0] = min(best[0], time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(loops):
                await middleware(request, handler)
            best[1] = min(best[1], time.perf_counter() - started)
        return (best[1] - best[0]) / loops * 1e6

    try:
        cost = asyncio.run(timed())
    finally:
        verifier.close()
    return _row("id_token_middleware cost per request, in-process", cost, "us")


def _row(case: str, value: float, unit: str = "req/s") -> dict[str, Any]:
    return {"benchmark": "aiohttp", "case": case, "value": value, "unit": unit}


def _serve_forever(kind: str, port: int) -> None:
    from aiohttp import web

    web.run_app(_app(kind), host="127.0.0.1", port=port, access_log=None, print=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--serve", nargs=2, metavar=("APP", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        kind, port = args.serve
        _serve_forever(kind, int(port))
        return 0
    print(table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
