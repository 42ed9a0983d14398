"""s2sauth.aiohttp, both directions, against real servers on loopback.

Client: the outbound contract suite (tests/test_outbound.py) through an
``aiohttp.ClientSession`` with :class:`IDTokenMiddleware`, then aiohttp's own
concerns: concurrency, headers already on the request, and a redirect matrix
(other port, other host, https to http, 307 POST, target prefixes and paths that
walk out of them, chains) in every header mode, served by aiohttp apps that record
what each hop received.

Server: the inbound contract suite (tests/test_inbound_adapters.py) against an
aiohttp app behind :func:`id_token_middleware`, then sub-applications, the event
loop staying free while keys are fetched, and aiohttp clients end to end.

aiohttp runs on asyncio only, so the async tests here do too.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import test_outbound
from aiohttp import web
from multidict import CIMultiDict
from support import throwaway_tls
from test_inbound_adapters import (
    AUDIENCE,
    CALLER,
    OPS,
    STRANGER,
    InboundContract,
    make_verifier,
)
from test_outbound import AUTHZ, XSA, Call, Fetches, OutboundContract, Result, claims

from s2sauth._errors import ConfigurationError, S2SAuthError
from s2sauth._http import HTTPTransport
from s2sauth.aiohttp import AccessTokenMiddleware, IDTokenMiddleware, id_token_middleware
from s2sauth.cli import _demo_aiohttp as demo_aiohttp
from s2sauth.cli._demo_aiohttp import serve_aiohttp
from s2sauth.cli._serve import bind
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import MetadataServerSource
from s2sauth.verify.policy import Rule
from s2sauth.verify.verifier import Verifier

MODES = [AUTHZ, XSA, "both"]

# The outbound suite's fixtures, over this module's emulator and transport.
provider = test_outbound.provider
receiver = test_outbound.receiver
other = test_outbound.other
dead_provider = test_outbound.dead_provider


@pytest.fixture(scope="module")
def emulator(emulator_key: Any) -> Iterator[Emulator]:
    """The emulator with a caller (the default account), a stranger and an operator."""
    with Emulator((CALLER, STRANGER, OPS), signing_key=emulator_key) as emu:
        yield emu


@pytest.fixture(scope="module")
def transport() -> Iterator[HTTPTransport]:
    """One connection pool to the emulator for the module."""
    pool = HTTPTransport()
    yield pool
    pool.close()


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"


# -- client: the contract ------------------------------------------------------------------


async def _send(session: aiohttp.ClientSession, call: Call) -> Result:
    async with session.request(call.method, call.url, data=call.data) as response:
        await response.read()
        return Result(response.status, len(response.history))


class TestClientContract(OutboundContract):
    """The outbound contract through ``ClientSession(middlewares=[IDTokenMiddleware(...)])``."""

    def run(self, calls: Sequence[Call], **auth: Any) -> list[Result]:
        async def main() -> list[Result]:
            middleware = IDTokenMiddleware(**auth)
            async with aiohttp.ClientSession(middlewares=[middleware]) as session:
                return [await _send(session, call) for call in calls]

        return asyncio.run(main())

    def run_access(
        self, calls: Sequence[Call], provider: AccessTokenProvider, targets: Sequence[str]
    ) -> list[Result]:
        async def main() -> list[Result]:
            middleware = AccessTokenMiddleware(provider=provider, targets=targets)
            async with aiohttp.ClientSession(middlewares=[middleware]) as session:
                return [await _send(session, call) for call in calls]

        return asyncio.run(main())


# -- client: aiohttp recorders -------------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    """One request a recorder received."""

    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes

    def tokens(self) -> list[str]:
        """Every token header value received, both names, every copy."""
        return self.headers.getall(AUTHZ, []) + self.headers.getall(XSA, [])


class Recorder:
    """An aiohttp app recording each request; any path with ``?u=URL&s=STATUS`` redirects."""

    def __init__(self) -> None:
        self.hops: list[Hop] = []
        self.origin = ""
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self._failed_once: set[str] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.hops.append(Hop(request.method, request.path, CIMultiDict(request.headers), body))
        if "u" in request.query:
            status = int(request.query.get("s", "302"))
            return web.Response(status=status, headers={"Location": request.query["u"]})
        status = int(request.path[1:4]) if request.path[:9] in ("/401-once", "/503-once") else 0
        if status and request.path not in self._failed_once:
            self._failed_once.add(request.path)
            return web.Response(status=status)
        return web.Response(text="ok")

    def url(self, path: str = "/ok") -> str:
        """An absolute URL on this recorder."""
        return self.origin + path

    def redirect(self, to: str, status: int = 302, path: str = "/to") -> str:
        """A URL on this recorder (at ``path``) that redirects to ``to``."""
        return self.url(f"{path}?s={status}&u={quote(to, safe='')}")


@asynccontextmanager
async def recording(
    host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> AsyncIterator[Recorder]:
    """Serve a :class:`Recorder` on ``host`` (a free port), over TLS when given a context."""
    recorder = Recorder()
    runner = web.AppRunner(recorder.app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, 0, ssl_context=tls).start()
    port = runner.addresses[0][1]
    recorder.origin = f"{'https' if tls else 'http'}://{host}:{port}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client(
    provider: IDTokenProvider, *, connector: aiohttp.BaseConnector | None = None, **options: Any
) -> AsyncIterator[aiohttp.ClientSession]:
    """A session with the middleware built from ``options``."""
    middleware = IDTokenMiddleware(provider=provider, **options)
    async with aiohttp.ClientSession(middlewares=[middleware], connector=connector) as session:
        yield session


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> aiohttp.ClientResponse:
    """``session.request`` with the body read and the connection released."""
    method = kwargs.pop("method", "GET")
    async with session.request(method, url, **kwargs) as response:
        await response.read()
        return response


def audience(hop: Hop) -> str:
    """The audience of the token a hop carried (the same in each header it came in)."""
    (value,) = set(hop.tokens())
    return str(claims(value)["aud"])


def names(mode: str) -> list[str]:
    """The token headers of a header mode."""
    return {AUTHZ: [AUTHZ], XSA: [XSA], "both": [AUTHZ, XSA]}[mode]


@pytest.mark.anyio
class TestClient:
    """aiohttp-specific client behaviour, with aiohttp recorders as the services called."""

    async def test_200_concurrent_requests_one_fetch_per_audience(
        self, emulator: Emulator, provider: IDTokenProvider
    ) -> None:
        """Concurrent requests to two audiences cause one metadata fetch per audience."""
        fetches = Fetches(emulator)
        async with recording() as one, recording("127.0.0.2") as two:
            limited = aiohttp.TCPConnector(limit=10)
            async with client(provider, connector=limited) as session:
                responses = await asyncio.gather(
                    *(get(session, (one if n % 2 else two).url()) for n in range(200))
                )
        assert [r.status for r in responses] == [200] * 200
        assert fetches["identity"] == 2
        assert {audience(hop) for hop in one.hops} == {one.origin}
        assert {audience(hop) for hop in two.hops} == {two.origin}

    @pytest.mark.parametrize("mode", MODES)
    async def test_forwarded_token_headers_are_replaced(
        self, mode: str, provider: IDTokenProvider
    ) -> None:
        """Token headers already on the request, even repeated, leave as the adapter's only.

        In the ``x-serverless-authorization`` mode ``Authorization`` is the callee's own.
        """
        stale = [(AUTHZ, "Bearer stale"), (AUTHZ, "Basic dXNlcjpwYXNz"), (XSA, "Bearer stale")]
        defaults = {XSA: "Bearer session-default"}
        async with recording() as service:
            middleware = IDTokenMiddleware(provider=provider, header=mode)  # type: ignore[arg-type]
            async with aiohttp.ClientSession(middlewares=[middleware], headers=defaults) as session:
                await get(session, service.url(), headers=CIMultiDict(stale))
        (hop,) = service.hops
        for name in names(mode):
            (value,) = hop.headers.getall(name)
            assert claims(value)["aud"] == service.origin
        if mode == XSA:
            assert hop.headers.getall(AUTHZ) == ["Bearer stale", "Basic dXNlcjpwYXNz"]
        if mode == AUTHZ:
            assert XSA not in hop.headers

    @pytest.mark.parametrize("mode", MODES)
    async def test_a_stripped_hop_carries_not_even_the_callers_own_headers(
        self, mode: str, provider: IDTokenProvider
    ) -> None:
        """aiohttp rebuilds each hop from the caller's headers; on another origin none go."""
        own = CIMultiDict([(AUTHZ, "Basic dXNlcjpwYXNz"), (XSA, "Bearer a"), (XSA, "Bearer b")])
        async with recording() as home, recording("127.0.0.2") as away:
            async with client(provider, header=mode) as session:
                target = away.redirect(away.url("/landing"))  # and on within that origin
                await get(session, home.redirect(target), headers=own)
        assert [hop.tokens() for hop in away.hops] == [[], []]

    async def test_streamed_body_is_not_replayed(self, provider: IDTokenProvider) -> None:
        """A 401 to a request whose body was a stream comes back as is: it cannot go twice."""

        async def body() -> AsyncIterator[bytes]:
            yield b"chunk"

        async with recording() as service, client(provider) as session:
            response = await get(session, service.url("/401-once/s"), method="POST", data=body())
        assert response.status == 401
        assert len(service.hops) == 1

    async def test_401_retry_carries_a_fresh_token(
        self, emulator: Emulator, provider: IDTokenProvider
    ) -> None:
        """The one retry after a 401 goes with a token fetched anew, the first one dropped."""
        fetches = Fetches(emulator)
        async with recording() as service, client(provider) as session:
            assert (await get(session, service.url("/401-once/x"))).status == 200
        assert [hop.path for hop in service.hops] == ["/401-once/x"] * 2
        assert all(hop.tokens() for hop in service.hops)
        assert fetches["identity"] == 2
        assert provider.stats.fetches == 2

    async def test_concurrent_chains_do_not_mix(self, provider: IDTokenProvider) -> None:
        """A task being redirected elsewhere does not strip another task's request there."""
        async with recording() as home, recording("127.0.0.2") as away:
            async with client(provider, targets=[home.origin, away.origin]) as session:
                await asyncio.gather(
                    get(session, home.redirect(away.url("/landing"))),
                    get(session, away.url("/direct")),
                )
        assert {hop.path: audience(hop) for hop in away.hops} == {
            "/landing": away.origin,
            "/direct": away.origin,
        }

    async def test_hop_sent_again_by_an_outer_middleware(self, provider: IDTokenProvider) -> None:
        """A retry middleware outside ours re-sends a stripped hop: still without a token."""

        async def retry(
            request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
        ) -> aiohttp.ClientResponse:
            response = await handler(request)
            if response.status == 503:
                response.release()
                response = await handler(request)
            return response

        async with recording() as home, recording("127.0.0.2") as away:
            middlewares = [retry, IDTokenMiddleware(provider=provider, header="both")]
            async with aiohttp.ClientSession(middlewares=middlewares) as session:
                response = await get(session, home.redirect(away.url("/503-once/x")))
        assert response.status == 200
        assert [(hop.path, hop.tokens()) for hop in away.hops] == [("/503-once/x", [])] * 2
        assert home.hops[0].tokens()

    def test_bad_arguments(self) -> None:
        """Bad header modes and targets raise ConfigurationError at construction."""
        with pytest.raises(ConfigurationError):
            IDTokenMiddleware(header="proxy-authorization")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            IDTokenMiddleware(targets="https://a.example")


# -- client: the redirect matrix ----------------------------------------------------------


@dataclass(frozen=True)
class Net:
    """The services a redirect can go between."""

    a: Recorder  # http://127.0.0.1:P, where each chain starts
    b: Recorder  # http://127.0.0.1:Q: another port
    c: Recorder  # http://127.0.0.2:R: another host
    s: Recorder  # https://127.0.0.1:T: TLS
    ca: ssl.SSLContext  # trusts s

    @property
    def all(self) -> tuple[Recorder, ...]:
        return (self.a, self.b, self.c, self.s)


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    """Four recorders: the start, another port, another host, and an https one."""
    tls = throwaway_tls(tmp_path, ["127.0.0.1"])
    async with recording() as a, recording() as b, recording("127.0.0.2") as c:
        async with recording(tls=tls.server) as s:
            yield Net(a, b, c, s, tls.client())


# Each case: targets (or None), the URL to call and its method, and which hops may carry a
# token, as (recorder, path) -> audience; every other hop must carry none.
Expect = dict[tuple[str, str], str]
CASES: dict[str, tuple[Any, ...]] = {
    "same origin keeps": (
        None,
        lambda n: n.a.redirect(n.a.url("/landing")),
        "GET",
        lambda n: {("a", "/to"): n.a.origin, ("a", "/landing"): n.a.origin},
    ),
    "other port": (
        None,
        lambda n: n.a.redirect(n.b.url("/landing")),
        "GET",
        lambda n: {("a", "/to"): n.a.origin},
    ),
    "other host": (
        None,
        lambda n: n.a.redirect(n.c.url("/landing")),
        "GET",
        lambda n: {("a", "/to"): n.a.origin},
    ),
    "https to http": (
        None,
        lambda n: n.s.redirect(n.a.url("/landing")),
        "GET",
        lambda n: {("s", "/to"): n.s.origin},
    ),
    "307 POST elsewhere": (
        None,
        lambda n: n.a.redirect(n.c.url("/landing"), 307),
        "POST",
        lambda n: {("a", "/to"): n.a.origin},
    ),
    "on within the other origin": (
        None,
        lambda n: n.a.redirect(n.b.redirect(n.b.url("/landing"))),
        "GET",
        lambda n: {("a", "/to"): n.a.origin},
    ),
    "back home after another origin": (
        None,
        lambda n: n.a.redirect(n.b.redirect(n.a.url("/landing"))),
        "GET",
        lambda n: {("a", "/to"): n.a.origin},
    ),
    "target sibling gets its own": (
        lambda n: [n.a.origin, n.c.origin],
        lambda n: n.a.redirect(n.c.url("/landing")),
        "GET",
        lambda n: {("a", "/to"): n.a.origin, ("c", "/landing"): n.c.origin},
    ),
    "non-target sibling": (
        lambda n: [n.a.origin, n.c.origin],
        lambda n: n.a.redirect(n.b.url("/landing")),
        "GET",
        lambda n: {("a", "/to"): n.a.origin},
    ),
    "inside the prefix": (
        lambda n: [n.a.url("/v1/")],
        lambda n: n.a.redirect(n.a.url("/v1/landing"), path="/v1/start"),
        "GET",
        lambda n: {("a", "/v1/start"): n.a.origin, ("a", "/v1/landing"): n.a.origin},
    ),
    **{
        f"prefix walk-out {to}": (
            lambda n: [n.a.url("/v1/")],
            lambda n, to=to: n.a.redirect(to, path="/v1/start"),
            "GET",
            lambda n: {("a", "/v1/start"): n.a.origin},
        )
        for to in ("/v10", "/V1/x", "/v1/../admin", "/v1/%2e%2e/admin", "/v1/..%2fadmin")
    },
}


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
async def test_redirect_matrix(case: str, mode: str, net: Net, provider: IDTokenProvider) -> None:
    """No token on a hop it was not issued for, in any header mode; its own token where due."""
    targets, start, method, expect = CASES[case]
    options: dict[str, Any] = {"header": mode}
    if targets is not None:
        options["targets"] = targets(net)
    async with client(provider, connector=aiohttp.TCPConnector(ssl=net.ca), **options) as session:
        response = await get(session, start(net), method=method, data=b"{}")
    assert response.status == 200
    assert response.history  # it was redirected
    allowed: Expect = expect(net)
    carried = {}
    for label in ("a", "b", "c", "s"):
        for hop in getattr(net, label).hops:
            if hop.tokens():
                assert [name for name in (AUTHZ, XSA) if name in hop.headers] == names(mode)
                carried[(label, hop.path)] = audience(hop)
    assert carried == allowed
    if method == "POST":
        (landed,) = net.c.hops
        assert (landed.method, landed.body) == ("POST", b"{}")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_redirect_followed_by_hand(mode: str, net: Net, provider: IDTokenProvider) -> None:
    """``allow_redirects=False``, then the Location by hand: judged as the hop it is."""
    async with client(provider, header=mode) as session:
        first = await get(session, net.a.redirect(net.b.url("/landing")), allow_redirects=False)
        assert first.status == 302
        await get(session, first.headers["Location"])
        await get(session, net.b.url("/direct"))  # a request of its own: its own token
    assert [(hop.path, bool(hop.tokens())) for hop in net.b.hops] == [
        ("/landing", False),
        ("/direct", True),
    ]


# -- server ----------------------------------------------------------------------------------


async def _hello(request: web.Request) -> web.Response:
    return web.json_response({"email": request["caller"].email})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def aiohttp_app(verifier: Verifier, **options: Any) -> web.Application:
    """``/hello`` (default allow-list), ``/admin`` (ops only), ``/healthz`` (no token)."""
    middleware = id_token_middleware(
        verifier=verifier, exempt=["/healthz"], rules=[Rule("/admin", [OPS])], **options
    )
    app = web.Application(middlewares=[middleware])
    for path, handler in (("/hello", _hello), ("/admin", _hello), ("/healthz", _healthz)):
        app.router.add_get(path, handler)
    return app


class TestServerContract(InboundContract):
    """The inbound contract for ``id_token_middleware``, the app served by aiohttp."""

    @staticmethod
    @contextmanager
    def serve(verifier: Verifier) -> Iterator[str]:
        """Serve the aiohttp app on a thread of its own."""
        with serve_aiohttp(aiohttp_app(verifier), bind()) as url:
            yield url


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on this event loop, on a free loopback port; yields the origin."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def as_account(emulator: Emulator, transport: HTTPTransport, account: str) -> IDTokenProvider:
    """A provider minting tokens for ``account`` (fixed audience: the contract's)."""
    return IDTokenProvider(MetadataServerSource(account, host=emulator.host, transport=transport))


@pytest.mark.anyio
class TestServer:
    """aiohttp-specific server behaviour, with aiohttp clients."""

    async def test_end_to_end_with_aiohttp_clients(
        self, emulator: Emulator, transport: HTTPTransport
    ) -> None:
        """Caller 200, stranger 403, no token 401, in every header mode of the client."""
        verifier = make_verifier(emulator, "standard", transport)
        caller = as_account(emulator, transport, CALLER)
        stranger = as_account(emulator, transport, STRANGER)
        async with serving(aiohttp_app(verifier)) as url:
            got = []
            for who, mode in [(caller, AUTHZ), (caller, XSA), (caller, "both"), (stranger, AUTHZ)]:
                async with client(who, audience=AUDIENCE, header=mode, targets=[url]) as session:
                    response = await get(session, url + "/hello")
                    got.append((response.status, await response.json()))
            async with aiohttp.ClientSession() as session:
                anonymous = await get(session, url + "/hello")
        assert got[:3] == [(200, {"email": CALLER})] * 3
        assert got[3][0] == 403 and got[3][1]["reason"] == "caller_not_allowed"
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="s2sauth"'

    async def test_keys_down_with_an_aiohttp_client(
        self, emulator: Emulator, transport: HTTPTransport
    ) -> None:
        """No keys to be had: 503 with Retry-After, never a 200."""
        verifier = make_verifier(emulator, "keys_down", transport)
        caller = as_account(emulator, transport, CALLER)
        async with serving(aiohttp_app(verifier)) as url:
            async with client(caller, audience=AUDIENCE, targets=[url]) as session:
                response = await get(session, url + "/hello")
        assert response.status == 503
        assert int(response.headers["Retry-After"]) > 0

    async def test_sub_application_matches_its_own_paths(
        self, emulator: Emulator, transport: HTTPTransport
    ) -> None:
        """On a sub-app at /api, exempt and rules are written as the sub-app's routes are."""
        verifier = make_verifier(emulator, "standard", transport)
        root = web.Application()
        root.router.add_get("/healthz", _healthz)
        root.add_subapp("/api", aiohttp_app(verifier))
        token = emulator.mint(AUDIENCE, account=CALLER)
        ops = emulator.mint(AUDIENCE, account=OPS)
        async with serving(root) as url, aiohttp.ClientSession() as session:

            async def status(path: str, token: str | None = None) -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return (await get(session, url + path, headers=headers)).status

            assert await status("/api/healthz") == 200
            assert await status("/api/hello") == 401
            assert await status("/api/hello", token) == 200
            assert await status("/api/admin", token) == 403
            assert await status("/api/admin", ops) == 200
            assert await status("/api/missing") == 401  # no route enumeration without a token
            assert await status("/healthz") == 200  # the root app is not protected here

    async def test_key_fetch_does_not_block_the_loop(
        self, emulator: Emulator, transport: HTTPTransport
    ) -> None:
        """While a slow key fetch is under way, the same loop keeps serving other requests."""
        verifier = make_verifier(emulator, "standard", transport)  # no keys yet
        token = emulator.mint(AUDIENCE, account=CALLER)
        emulator.inject("certs", delay=1.0)
        try:
            async with serving(aiohttp_app(verifier)) as url, aiohttp.ClientSession() as session:
                before = emulator.counters["jwks"]
                headers = {"Authorization": f"Bearer {token}"}
                protected = asyncio.ensure_future(get(session, url + "/hello", headers=headers))
                while emulator.counters["jwks"] == before:  # the fetch has started
                    await asyncio.sleep(0.005)
                assert (await get(session, url + "/healthz")).status == 200
                assert not protected.done()
                assert (await protected).status == 200
        finally:
            emulator.clear_faults()

    async def test_on_error_answers_instead(
        self, emulator: Emulator, transport: HTTPTransport
    ) -> None:
        """``on_error`` gets the request and the error, and its response is sent."""
        verifier = make_verifier(emulator, "standard", transport)
        seen: list[str] = []

        async def on_error(request: web.Request, error: S2SAuthError) -> web.StreamResponse:
            seen.append(error.reason)
            return web.Response(status=418, text="teapot")

        async with serving(aiohttp_app(verifier, on_error=on_error)) as url:
            async with aiohttp.ClientSession() as session:
                response = await get(session, url + "/hello")
        assert response.status == 418
        assert seen == ["missing_token"]


def test_demo_calls(emulator: Emulator, transport: HTTPTransport) -> None:
    """The demo's aiohttp service and calls: every outcome the expected one."""
    caller = as_account(emulator, transport, CALLER)
    stranger = as_account(emulator, transport, STRANGER)
    with ExitStack() as stack:
        url = stack.enter_context(demo_aiohttp.serve(bind(), emulator.jwks_url, CALLER, transport))
        calls = demo_aiohttp.calls(url, caller, stranger, stack)
        assert [call.send() for call in calls] == [call.expected for call in calls]
    assert [call.expected for call in calls] == [200, 200, 401, 403]


def test_missing_aiohttp_names_the_extra() -> None:
    """Importing the adapter without aiohttp says which extra to install."""
    code = "import sys; sys.modules['aiohttp'] = None; import s2sauth.aiohttp"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "pip install 's2sauth[aiohttp]'" in result.stderr


def test_client_side_import_leaves_the_server_out() -> None:
    """``import s2sauth.aiohttp`` does not import aiohttp.web: a client pays for no server."""
    code = "import sys, s2sauth.aiohttp; print('aiohttp.web' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
