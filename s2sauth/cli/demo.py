"""``s2sauth demo``: two services and their callers, on this machine, in a few seconds.

It starts the emulator (a metadata server with two service accounts, an allowed
caller and a stranger, and Google-style signing keys), a Starlette app under
uvicorn behind :class:`s2sauth.asgi.IDTokenMiddleware` and a Flask app under
waitress behind :func:`s2sauth.flask.require_id_token` (and a gRPC service when
grpcio is installed, see :mod:`._demo_grpc`), then calls them every way that
should work and every way that should not, and prints what each call got.
Nothing leaves loopback; the user's environment (``GCE_METADATA_HOST``,
proxies, credentials) is not consulted.

The servers run on background threads through :mod:`._serve` (which the tests use
too); the verification cost it prints comes from :mod:`._cost`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from . import _demo_aiohttp, _demo_django
from ._cost import verification_cost
from ._serve import HOST as _HOST
from ._serve import bind, origin, serve_asgi, serve_wsgi

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import WSGIApplication

    from ..emulator import Emulator
    from ..tokens.provider import IDTokenProvider
    from ..verify.verifier import Verifier

__all__ = ["CALLER", "STRANGER", "register", "run"]

#: The service account the demo's receivers let in.
CALLER = "caller@demo-project.iam.gserviceaccount.com"
#: A service account with valid tokens that no receiver lets in.
STRANGER = "stranger@other-project.iam.gserviceaccount.com"

# Import names of what the ``demo`` extra installs.
_DEMO_MODULES = ("requests", "httpx", "starlette", "flask", "uvicorn", "waitress")
_TIMEOUT = 10.0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="run two services and their callers locally, and show who gets in",
        description="Start the emulator, a Starlette service (uvicorn) and a Flask service "
        "(waitress), call them as an allowed caller, a stranger, with no token, a token for "
        "another audience and an expired token, and print what each call got. Exits 0 only "
        "when every outcome is the expected one. Needs: pip install 's2sauth[demo]'.",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave everything up afterwards and print commands to try by hand",
    )
    parser.add_argument(
        "--port-asgi", type=int, default=0, metavar="P", help="port of the Starlette service"
    )
    parser.add_argument(
        "--port-wsgi", type=int, default=0, metavar="P", help="port of the Flask service"
    )
    parser.add_argument(
        "--port-grpc", type=int, default=0, metavar="P", help="port of the gRPC service"
    )
    parser.set_defaults(handler=run)


# -- the two receiving services ------------------------------------------------------------


def _starlette_app(verifier: Verifier) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from ..asgi import IDTokenMiddleware

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"hello": request.state.caller.email})

    return Starlette(
        routes=[Route("/", hello)],
        middleware=[Middleware(IDTokenMiddleware, verifier=verifier)],
    )


def _flask_app(verifier: Verifier) -> WSGIApplication:
    from flask import Flask, g

    from ..flask import require_id_token

    app = Flask("s2sauth-demo")

    @app.get("/")
    @require_id_token(verifier=verifier)
    def hello() -> dict[str, str | None]:
        return {"hello": g.caller.email}

    return app


# -- the calls ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One call of the demo: who calls what, how, and what it should get.

    ``expected`` is an HTTP status, or a gRPC status name (``"PERMISSION_DENIED"``).
    """

    client: str
    target: str
    caller: str
    expected: int | str
    send: Callable[[], int | str]


@dataclass(frozen=True)
class Outcome:
    """What one call got: an HTTP status, or the name of the exception it raised."""

    call: Call
    got: int | str
    millis: float

    @property
    def ok(self) -> bool:
        """Whether the call got what it should."""
        return self.got == self.call.expected


@dataclass
class _Services:
    emulator: Emulator
    asgi_url: str
    wsgi_url: str
    caller: IDTokenProvider
    stranger: IDTokenProvider


def _calls(services: _Services, stack: contextlib.ExitStack) -> list[Call]:
    import httpx
    import requests

    from ..httpx import IDTokenAuth as HttpxAuth
    from ..requests import IDTokenAuth as RequestsAuth

    em, asgi, wsgi = services.emulator, services.asgi_url + "/", services.wsgi_url + "/"
    # The user's proxies and netrc must not apply: everything here is on loopback.
    session = stack.enter_context(requests.Session())
    session.trust_env = False
    client = stack.enter_context(httpx.Client(trust_env=False, timeout=_TIMEOUT))
    as_caller = RequestsAuth(provider=services.caller)
    as_stranger = RequestsAuth(provider=services.stranger)
    serverless = RequestsAuth(provider=services.caller, header="x-serverless-authorization")

    def with_requests(url: str, auth: RequestsAuth) -> Callable[[], int]:
        return lambda: session.get(url, auth=auth, timeout=_TIMEOUT).status_code

    def with_httpx(url: str, token: str | None = None) -> Callable[[], int]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return lambda: client.get(url, headers=headers).status_code

    def with_httpx_auth() -> int:
        return client.get(asgi, auth=HttpxAuth(provider=services.caller)).status_code

    # Made here, outside the timed call (building a client loads the CA bundle); it binds
    # to the event loop of its first request.
    aclient = httpx.AsyncClient(
        auth=HttpxAuth(provider=services.caller), trust_env=False, timeout=_TIMEOUT
    )

    async def with_httpx_async() -> int:
        async with aclient:
            return (await aclient.get(asgi)).status_code

    now = int(time.time())
    other_audience = em.mint("https://another-service.example", account=CALLER)
    expired = em.mint(
        services.asgi_url, account=CALLER, claims={"iat": now - 7200, "exp": now - 3600}
    )
    return [
        Call("requests", "starlette", "caller", 200, with_requests(asgi, as_caller)),
        Call("httpx", "starlette", "caller", 200, with_httpx_auth),
        Call("httpx async", "starlette", "caller", 200, lambda: asyncio.run(with_httpx_async())),
        Call("requests", "flask", "caller", 200, with_requests(wsgi, as_caller)),
        Call(
            "requests",
            "starlette",
            "caller (X-Serverless-Authorization)",
            200,
            with_requests(asgi, serverless),
        ),
        Call("httpx", "starlette", "no token", 401, with_httpx(asgi)),
        Call("httpx", "flask", "no token", 401, with_httpx(wsgi)),
        Call(
            "httpx",
            "starlette",
            "caller, token for another audience",
            401,
            with_httpx(asgi, other_audience),
        ),
        Call("httpx", "starlette", "caller, expired token", 401, with_httpx(asgi, expired)),
        Call("requests", "starlette", "stranger", 403, with_requests(asgi, as_stranger)),
        Call("requests", "flask", "stranger", 403, with_requests(wsgi, as_stranger)),
    ]


def _perform(call: Call) -> Outcome:
    started = time.perf_counter()
    try:
        got: int | str = call.send()
    except Exception as exc:  # shown in the table as an unexpected outcome, not a crash
        got = type(exc).__name__
    return Outcome(call, got, (time.perf_counter() - started) * 1000)


# -- output -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Glyphs:
    ok: str
    bad: str
    micro: str

    @classmethod
    def for_stream(cls, stream: TextIO) -> _Glyphs:
        try:
            "\u2713\u2717\u00b5".encode(getattr(stream, "encoding", None) or "ascii")
        except (UnicodeEncodeError, LookupError):
            return cls("ok", "XX", "u")
        return cls("\u2713", "\u2717", "\u00b5")


def _table(outcomes: list[Outcome], glyphs: _Glyphs) -> list[str]:
    head = ("client", "target", "caller", "expected", "got", "time (ms)", "")
    rows = [head] + [
        (
            o.call.client,
            o.call.target,
            o.call.caller,
            str(o.call.expected),
            str(o.got),
            f"{o.millis:.1f}",
            glyphs.ok if o.ok else glyphs.bad,
        )
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        cells[5] = row[5].rjust(widths[5])  # times line up on the decimal point
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _print_counters(out: TextIO, services: _Services, verifiers: dict[str, Verifier]) -> None:
    print("\nCounters", file=out)
    for name, provider in (("caller", services.caller), ("stranger", services.stranger)):
        stats = provider.stats
        print(
            f"  token provider ({name}):  {stats.fetches} fetches from the metadata server, "
            f"{stats.cache_hits} cache hits",
            file=out,
        )
    for name, verifier in verifiers.items():
        vstats = verifier.stats
        rejected = sum(vstats.rejected_by_reason.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(vstats.rejected_by_reason.items()))
        print(
            f"  verifier ({name}):  {vstats.verified} accepted ({vstats.cache_hits} from the "
            f"verified-token cache), {rejected} rejected ({reasons or 'none'}), "
            f"{vstats.key_fetches} key fetch(es)",
            file=out,
        )
    counters = services.emulator.counters
    print(
        f"  emulator:  {counters['identity']} identity requests, "
        f"{counters['jwks']} key-set requests",
        file=out,
    )


def _keep_running(out: TextIO, services: _Services) -> None:
    em, asgi, wsgi = services.emulator, services.asgi_url, services.wsgi_url
    token = em.mint(asgi, account=CALLER)
    exports = " ".join(f"{name}={value}" for name, value in em.environ().items())
    identity = (
        f"http://{em.host}/computeMetadata/v1/instance/service-accounts/default/identity"
        f"?audience={wsgi}&format=full"
    )
    lines = [
        "",
        "Everything keeps running. Try it by hand; Ctrl-C stops it.",
        "",
        "  # The environment that points s2sauth (and google-auth) at the emulator:",
        f"  export {exports}",
        "",
        "  # A token for the starlette service, as the caller. It is signed with the",
        "  # emulator's throwaway key: worthless anywhere else, and gone at Ctrl-C.",
        f"  export S2SAUTH_DEMO_TOKEN={token}",
        f'  curl -H "Authorization: Bearer $S2SAUTH_DEMO_TOKEN" {asgi}/    # 200',
        f"  curl -i {asgi}/    # 401: no token",
        "",
        "  # Ask the metadata server for a token, as a service on Cloud Run does:",
        f'  export FLASK_TOKEN=$(curl -s -H "Metadata-Flavor: Google" "{identity}")',
        f'  curl -H "Authorization: Bearer $FLASK_TOKEN" {wsgi}/    # 200',
    ]
    try:  # from the print on: a Ctrl-C as soon as the commands show is a clean stop
        print("\n".join(lines), file=out, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopped.", file=out, flush=True)


@contextlib.contextmanager
def _refusal_lines() -> Iterator[list[str]]:
    # The in-process services' refusal lines, gathered for their own section of the
    # output instead of interleaved on stderr (the Django service logs in its process).
    lines: list[str] = []

    class Gather(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("rejected:"):
                lines.append(record.getMessage())

    logger = logging.getLogger("s2sauth")
    handler, level, propagate = Gather(logging.INFO), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _cannot_listen(option: str, port: int, exc: OSError) -> int:
    print(
        f"s2sauth demo: cannot listen on {_HOST}:{port} ({option}): {exc.strerror or exc}; "
        f"pick another {option}, or 0 for a free port",
        file=sys.stderr,
    )
    return 2


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from .._http import HTTPTransport
    from ..emulator import Emulator
    from ..tokens.provider import IDTokenProvider
    from ..tokens.sources import MetadataServerSource
    from ..verify.verifier import Verifier
    from . import _demo_grpc

    glyphs = _Glyphs.for_stream(out)
    socks: list[socket.socket] = []
    with contextlib.ExitStack() as stack:
        for option, port in (("--port-asgi", args.port_asgi), ("--port-wsgi", args.port_wsgi)):
            try:
                socks.append(stack.enter_context(bind(port)))
            except OSError as exc:
                return _cannot_listen(option, port, exc)
        asgi_sock, wsgi_sock = socks
        em = stack.enter_context(Emulator((CALLER, STRANGER)))
        # One connection pool to the emulator, for token and key fetches alike.
        transport = HTTPTransport()
        stack.callback(transport.close)
        try:
            grpc_service = _demo_grpc.serve(stack, em, transport, [CALLER], args.port_grpc)
        except OSError as exc:
            return _cannot_listen("--port-grpc", args.port_grpc, exc)
        asgi_url, wsgi_url = origin(asgi_sock), origin(wsgi_sock)

        # Each receiver's audience is its own URL, as on Cloud Run; keys from the emulator.
        def receiver(url: str) -> Verifier:
            return Verifier(
                url, allowed_callers=[CALLER], certs_url=em.jwks_url, transport=transport
            )

        verifiers = {"starlette": receiver(asgi_url), "flask": receiver(wsgi_url)}
        stack.enter_context(serve_asgi(_starlette_app(verifiers["starlette"]), asgi_sock))
        stack.enter_context(serve_wsgi(_flask_app(verifiers["flask"]), wsgi_sock))
        # Callers ask the emulator explicitly: never the real metadata server, whatever
        # GCE_METADATA_HOST says.
        services = _Services(
            em,
            asgi_url,
            wsgi_url,
            caller=IDTokenProvider(MetadataServerSource(host=em.host, transport=transport)),
            stranger=IDTokenProvider(
                MetadataServerSource(STRANGER, host=em.host, transport=transport)
            ),
        )
        django_url = None
        if _demo_django.available():  # a third service, when Django is installed
            with bind() as free:
                port = free.getsockname()[1]
            django_url = stack.enter_context(_demo_django.serve(port, em.jwks_url, CALLER))
        aiohttp_url = None
        if _demo_aiohttp.available():  # and an aiohttp one, when aiohttp is installed
            serving = _demo_aiohttp.serve(bind(), em.jwks_url, CALLER, transport)
            aiohttp_url = stack.enter_context(serving)
        print("s2sauth demo: services and their callers, all on this machine\n", file=out)
        print(f"  emulator   {em.url}  (metadata server and signing keys)", file=out)
        print(f"  starlette  {asgi_url}  (uvicorn, IDTokenMiddleware)", file=out)
        print(f"  flask      {wsgi_url}  (waitress, @require_id_token)", file=out)
        if django_url is not None:
            print(f"  django     {django_url}  (waitress, s2sauth.django)", file=out)
        if aiohttp_url is not None:
            print(f"  aiohttp    {aiohttp_url}  (aiohttp, s2sauth.aiohttp)", file=out)
        _demo_grpc.describe(out, grpc_service, verifiers)
        print(f"  caller     {CALLER}  (every service lets it in)", file=out)
        print(f"  stranger   {STRANGER}  (valid tokens, not let in)\n", file=out)
        calls = _calls(services, stack)
        if django_url is not None:
            calls += _demo_django.calls(django_url, services.caller, services.stranger, Call)
        if aiohttp_url is not None:
            calls += _demo_aiohttp.calls(aiohttp_url, services.caller, services.stranger, stack)
        calls += _demo_grpc.calls(grpc_service, em, services.caller, services.stranger, stack)
        with _refusal_lines() as logged:
            outcomes = [_perform(call) for call in calls]
        print("\n".join(_table(outcomes, glyphs)), file=out)
        print(
            "\nWhat the services logged (one line per refusal, as a server's log shows it)",
            file=out,
        )
        for line in logged:
            print(f"  {line}", file=out)
        _print_counters(out, services, verifiers)
        fresh, cached = verification_cost(em, asgi_url, CALLER, transport)
        print("\nVerification cost (in-process, RS256, keys cached)", file=out)
        print(f"  a token seen for the first time:  {fresh:8.1f} {glyphs.micro}s", file=out)
        print(f"  a token already verified:         {cached:8.1f} {glyphs.micro}s", file=out)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            print(f"\n{len(failed)} of {len(outcomes)} outcomes NOT as expected.", file=out)
        else:
            print(f"\nAll {len(outcomes)} outcomes as expected.", file=out, flush=True)
        if args.keep_running:
            _keep_running(out, services)
        return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every call got what it should, 1 otherwise, 2 when it cannot run."""
    missing = [name for name in _DEMO_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"s2sauth demo needs {', '.join(missing)}: pip install 's2sauth[demo]'",
            file=sys.stderr,
        )
        return 2
    try:
        return _demo(args, sys.stdout)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
