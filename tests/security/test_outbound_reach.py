"""Outbound reach: a credential goes only where it was issued for, and no fetch outlives its
deadline (issue "Outbound reach", DESIGN.md).

Real servers on loopback stand in for the rest of the world: several ports of 127.0.0.1
and the host 127.0.0.2 are other origins, a TLS server with a throwaway certificate is the
``https`` side of a downgrade. Each receiver records the token headers of every request;
a test fails if a token reaches a place it was not issued for.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpx
import pytest
import requests
from attack_kit import CALLER
from support import Clock, throwaway_tls

import s2sauth.httpx as s2s_httpx
import s2sauth.requests as s2s_requests
from s2sauth._errors import ConfigurationError, KeyFetchError, TokenFetchError
from s2sauth._flight import SingleFlight
from s2sauth._http import MAX_BODY, HTTPRequest, HTTPTransport, TransportError
from s2sauth.emulator import Emulator
from s2sauth.tokens._tokens import IDToken, safe_text
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import MetadataServerSource
from s2sauth.verify.keys import KeySet

AUTHZ = "authorization"
XSA = "x-serverless-authorization"
MODES = ("authorization", "x-serverless-authorization", "both")


# -- receivers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request a receiver got: where, how, and its token headers."""

    origin: str
    method: str
    path: str
    tokens: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = urlsplit(self.path)
        tokens = {
            name.lower(): value
            for name, value in self.headers.items()
            if name.lower() in (AUTHZ, XSA)
        }
        self.server.hits.append(Hit(self.server.origin, self.command, parts.path, tokens))
        query = parse_qs(parts.query)
        status, extra = 200, {}
        if parts.path.endswith("/redirect"):
            status, extra = int(query.get("status", ["302"])[0]), {"Location": query["to"][0]}
        self.send_response(status)
        for name, value in {**extra, "Content-Length": "2"}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    origin: str
    hits: list[Hit]


@contextlib.contextmanager
def receiver(host: str, hits: list[Hit], tls: Any = None) -> Iterator[str]:
    """A recording server on ``host``; yields its origin."""
    server = _Server((host, 0), _Handler)
    scheme = "http"
    if tls is not None:
        server.socket = tls.server.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    server.origin = f"{scheme}://{host}:{server.server_address[1]}"
    server.hits = hits
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.origin
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class World:
    """The origins of one module: ``a`` and ``a2`` (two ports), ``b`` (another host), ``s``
    (TLS), and every request they saw."""

    a: str
    a2: str
    b: str
    s: str
    ca: str
    hits: list[Hit]

    def redirect(self, start: str, to: str, status: int = 302) -> str:
        """``start`` (origin plus path prefix) answering with a redirect to ``to``."""
        return f"{start}/redirect?status={status}&to={quote(to, safe='')}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Four receivers on loopback sharing one record of requests."""
    tls = throwaway_tls(Path(tmp_path_factory.mktemp("tls")), ["127.0.0.1"])
    hits: list[Hit] = []
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(receiver("127.0.0.1", hits))
        a2 = stack.enter_context(receiver("127.0.0.1", hits))
        b = stack.enter_context(receiver("127.0.0.2", hits))
        s = stack.enter_context(receiver("127.0.0.1", hits, tls))
        yield World(a, a2, b, s, str(tls.ca), hits)


@pytest.fixture
def hits(world: World) -> list[Hit]:
    """The requests of this test only."""
    world.hits.clear()
    return world.hits


@pytest.fixture(scope="module")
def provider(emulator: Emulator) -> IDTokenProvider:
    """ID tokens from the emulator, as CALLER."""
    return IDTokenProvider(MetadataServerSource(CALLER, host=emulator.host))


def audience_of(header_value: str) -> str:
    """The ``aud`` of the bearer token in a header value."""
    payload = header_value.split()[1].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["aud"])


# -- the redirect matrix ----------------------------------------------------------------------

CLIENTS = (
    "requests.Session",
    "requests id_token_session",
    "httpx.Client",
    "s2sauth.httpx.Client",
    "httpx.AsyncClient",
    "s2sauth.httpx.AsyncClient",
    "aiohttp.ClientSession",
)


def call(client: str, auth_kwargs: dict[str, Any], method: str, url: str, ca: str) -> None:
    """One request through ``client`` with IDTokenAuth(**auth_kwargs), following redirects."""
    if client.startswith("requests"):
        if client == "requests.Session":
            session = requests.Session()
            session.auth = s2s_requests.IDTokenAuth(**auth_kwargs)
        else:
            session = s2s_requests.id_token_session(**auth_kwargs)
        with session:
            session.trust_env = False
            session.request(method, url, data=b"{}", verify=ca, timeout=10)
        return
    if client == "aiohttp.ClientSession":
        asyncio.run(_aiohttp_call(auth_kwargs, method, url, ca))
        return
    auth = s2s_httpx.IDTokenAuth(**auth_kwargs)
    verify = ssl.create_default_context(cafile=ca)
    kwargs: dict[str, Any] = {"follow_redirects": True, "trust_env": False, "verify": verify}
    if "Async" in client:
        cls = s2s_httpx.AsyncClient if client.startswith("s2sauth") else httpx.AsyncClient

        async def main() -> None:
            async with cls(auth=auth, **kwargs) as async_client:
                await async_client.request(method, url, content=b"{}")

        anyio.run(main)
        return
    sync_cls = s2s_httpx.Client if client.startswith("s2sauth") else httpx.Client
    with sync_cls(auth=auth, **kwargs) as sync_client:
        sync_client.request(method, url, content=b"{}")


async def _aiohttp_call(auth_kwargs: dict[str, Any], method: str, url: str, ca: str) -> None:
    import aiohttp

    from s2sauth.aiohttp import IDTokenMiddleware

    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca))
    middlewares = [IDTokenMiddleware(**auth_kwargs)]
    async with aiohttp.ClientSession(middlewares=middlewares, connector=connector) as session:
        async with session.request(method, url, data=b"{}") as response:
            await response.read()


@dataclass(frozen=True)
class Hop:
    """A redirect scenario: where the chain starts and lands, and what may arrive there."""

    start: str
    landing: str
    method: str = "GET"
    targets: tuple[str, ...] | None = None
    # The only audience a token at the landing may carry (None: no token may arrive).
    landing_audience: str | None = None


def hop(world: World, name: str) -> Hop:
    """The scenario ``name`` in ``world``."""
    a, a2, b, s = world.a, world.a2, world.b, world.s
    v1 = f"{a}/v1"
    return {
        "same origin": Hop(world.redirect(a, f"{a}/landing"), f"{a}/landing", landing_audience=a),
        "other port": Hop(world.redirect(a, f"{a2}/landing"), f"{a2}/landing"),
        "other host": Hop(world.redirect(a, f"{b}/landing"), f"{b}/landing"),
        "https to http": Hop(world.redirect(s, f"{a}/landing"), f"{a}/landing"),
        "307 POST": Hop(world.redirect(a, f"{b}/landing", 307), f"{b}/landing", "POST"),
        "sibling /v10": Hop(world.redirect(v1, f"{a}/v10/x"), f"{a}/v10/x", targets=(f"{v1}/",)),
        "sibling /V1": Hop(world.redirect(v1, f"{a}/V1/x"), f"{a}/V1/x", targets=(f"{v1}/",)),
        "walk out ..": Hop(
            world.redirect(v1, f"{a}/v1/%2e%2e/admin"), "/admin", targets=(f"{v1}/",)
        ),
        "target B of [A, B]": Hop(
            world.redirect(a, f"{b}/landing"), f"{b}/landing", targets=(a, b), landing_audience=b
        ),
    }[name]


HOPS = (
    "same origin",
    "other port",
    "other host",
    "https to http",
    "307 POST",
    "sibling /v10",
    "sibling /V1",
    "walk out ..",
    "target B of [A, B]",
)


@pytest.mark.parametrize("name", HOPS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("client", CLIENTS)
def test_no_token_lands_where_it_was_not_issued_for(
    client: str, mode: str, name: str, world: World, hits: list[Hit], provider: IDTokenProvider
) -> None:
    """Every client, header mode and redirect: the landing gets no token, or its own."""
    scenario = hop(world, name)
    auth = {"provider": provider, "header": mode, "targets": scenario.targets}
    try:
        call(client, auth, scenario.method, scenario.start, world.ca)
    except ConfigurationError as exc:
        # A plain httpx client cannot judge hops: it refuses before sending anything.
        assert client in ("httpx.Client", "httpx.AsyncClient")
        assert "s2sauth.httpx.Client" in str(exc)
        assert hits == []
        return
    first, *rest = hits
    assert first.tokens, "the first request was issued a token"
    assert audience_of(next(iter(first.tokens.values()))) == origin_of(scenario.start)
    landed = [h for h in rest if (h.origin + h.path).endswith(scenario.landing)]
    assert landed, f"never landed: {rest}"
    for hit in landed:
        assert hit.method == scenario.method
        for value in hit.tokens.values():
            assert scenario.landing_audience is not None, f"a token leaked to {hit}"
            assert audience_of(value) == scenario.landing_audience


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# -- which URLs a token may go to at all ------------------------------------------------------


@pytest.mark.parametrize("library", [s2s_requests, s2s_httpx])
def test_a_fixed_url_audience_goes_only_to_its_origin(
    library: Any, world: World, hits: list[Hit], provider: IDTokenProvider
) -> None:
    """IDTokenAuth("https://orders...") on a shared client sends nothing to other hosts."""
    auth = library.IDTokenAuth(world.a, provider=provider)
    for url in (f"{world.a}/x", f"{world.b}/x", f"{world.a2}/x"):
        if library is s2s_requests:
            requests.get(url, auth=auth, timeout=10)
        else:
            httpx.get(url, auth=auth)
    owners = {(h.origin, bool(h.tokens)) for h in hits}
    assert owners == {(world.a, True), (world.b, False), (world.a2, False)}


@pytest.mark.parametrize("library", [s2s_requests, s2s_httpx])
def test_a_custom_audience_needs_targets(library: Any, provider: IDTokenProvider) -> None:
    """A non-URL audience names no origin: without targets it is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="targets"):
        library.IDTokenAuth("my-custom-audience", provider=provider)
    library.IDTokenAuth("my-custom-audience", provider=provider, targets=["https://x.example"])


@pytest.mark.parametrize("library", [s2s_requests, s2s_httpx])
def test_access_tokens_go_only_to_google_apis_unless_targets_says(
    library: Any, emulator: Emulator, world: World, hits: list[Hit]
) -> None:
    """The cloud-platform access token never reaches a third-party host by default."""
    provider = AccessTokenProvider(MetadataServerSource(CALLER, host=emulator.host))
    default = library.AccessTokenAuth(provider=provider)
    listed = library.AccessTokenAuth(provider=provider, targets=[world.b])
    for auth in (default, listed):
        if library is s2s_requests:
            requests.get(f"{world.b}/api", auth=auth, timeout=10)
        else:
            httpx.get(f"{world.b}/api", auth=auth)
    assert [bool(h.tokens) for h in hits] == [False, True]


@pytest.mark.parametrize(
    ("spec", "url", "allowed"),
    [
        ("https://*.googleapis.com", "https://storage.googleapis.com/b", True),
        ("https://*.googleapis.com", "https://googleapis.com/", False),
        ("https://*.googleapis.com", "http://storage.googleapis.com/", False),
        ("https://*.googleapis.com", "https://storage.googleapis.com:8443/", False),
        ("https://*.googleapis.com", "https://a.googleapis.com.evil.example/", False),
        ("https://*.googleapis.com", "https://evilgoogleapis.com/", False),
        ("https://*.googleapis.com", "https://evil.example/x.googleapis.com", False),
    ],
)
def test_host_pattern_targets(spec: str, url: str, allowed: bool) -> None:
    """``https://*.domain`` matches hosts below the domain, over https on port 443 only."""
    from s2sauth._outbound import AccessTokenRules

    assert AccessTokenRules(["s"], targets=[spec]).allows(url) is allowed


# -- forwarded token headers ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("library", ["requests", "httpx"])
def test_forwarded_token_headers_are_replaced(
    library: str, mode: str, world: World, hits: list[Hit], provider: IDTokenProvider
) -> None:
    """A request copying an incoming request's token headers leaves with the adapter's only."""
    stale = {"Authorization": "Bearer stale.user.token", XSA: "Bearer stale.iap.token"}
    url = f"{world.a}/forward"
    if library == "requests":
        auth: Any = s2s_requests.IDTokenAuth(provider=provider, header=mode)  # type: ignore[arg-type]
        requests.get(url, headers=stale, auth=auth, timeout=10)
    else:
        with s2s_httpx.Client(auth=s2s_httpx.IDTokenAuth(provider=provider, header=mode)) as c:
            c.get(url, headers=stale)
    (hit,) = hits
    for name, value in hit.tokens.items():
        if mode == "x-serverless-authorization" and name == AUTHZ:
            assert value == stale["Authorization"]  # the callee's own header in this mode
        else:
            assert "stale" not in value and audience_of(value) == world.a
    assert (XSA in hit.tokens) == (mode != "authorization")


# -- deadlines and body caps ------------------------------------------------------------------


class _Trickle(BaseHTTPRequestHandler):
    """Answers one byte a tenth of a second, for at most 30 s; /huge sends 2 MiB."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/huge"):
            body = b"x" * (MAX_BODY * 2)
            self.send_response(200)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        reply = b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nContent-Length: 9999\r\n\r\n"
        with contextlib.suppress(OSError):
            for byte in (reply + b"a" * 300)[:300]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)


@pytest.fixture(scope="module")
def trickle() -> Iterator[str]:
    """``host:port`` of a server that trickles its reply and never finishes it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def elapsed(fn: Callable[[], object]) -> tuple[float, BaseException | None]:
    """Seconds ``fn`` took, and what it raised."""
    started = time.monotonic()
    try:
        fn()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_the_transport_ends_a_trickling_reply_at_its_timeout(trickle: str) -> None:
    """A reply trickled byte by byte is cut off at the request's timeout, wall clock."""
    transport = HTTPTransport()
    took, error = elapsed(lambda: transport(HTTPRequest("GET", f"http://{trickle}/", timeout=0.5)))
    assert isinstance(error, TransportError) and error.timeout
    assert took < 4  # each byte came within the timeout: per-read timeouts never fired


def test_bodies_are_capped(trickle: str) -> None:
    """A reply body over MAX_BODY bytes is refused, not read into memory."""
    with pytest.raises(TransportError, match="larger than"):
        HTTPTransport()(HTTPRequest("GET", f"http://{trickle}/huge", timeout=10))


def test_a_metadata_fetch_ends_within_its_deadline(trickle: str) -> None:
    """MetadataServerSource(deadline=0.5) gives up at 0.5 s against a trickling server."""
    source = MetadataServerSource(host=trickle, deadline=0.5)
    took, error = elapsed(lambda: source.fetch_id_token("https://x.example"))
    assert isinstance(error, TokenFetchError) and error.retryable
    assert took < 5


def test_an_async_token_ends_within_its_deadline(trickle: str) -> None:
    """``await provider.atoken`` against a trickling server ends at the source's deadline."""
    provider = IDTokenProvider(MetadataServerSource(host=trickle, deadline=0.5))
    took, error = elapsed(lambda: asyncio.run(provider.atoken("https://x.example")))
    assert isinstance(error, TokenFetchError)
    assert took < 5


def test_a_key_fetch_ends_within_its_timeout(trickle: str) -> None:
    """KeySet(timeout=0.5) against a trickling keys endpoint fails closed at 0.5 s."""
    keys = KeySet(f"http://{trickle}/certs", timeout=0.5)
    took, error = elapsed(lambda: keys.get("kid"))
    assert isinstance(error, KeyFetchError)
    assert took < 5


def test_a_slow_but_working_metadata_server_is_waited_for(emulator: Emulator) -> None:
    """An attempt is not cut short of the deadline: the one attempt may take all 30 s of it
    (GKE can take ~30 s), and a slow answer arrives."""
    real = HTTPTransport()
    timeouts: list[float] = []

    def recording(request: HTTPRequest) -> Any:
        timeouts.append(request.timeout)
        return real(request)

    emulator.inject(delay=0.5)
    try:
        source = MetadataServerSource(CALLER, host=emulator.host, transport=recording)
        token = source.fetch_id_token("https://x.a")
    finally:
        emulator.clear_faults()
        real.close()
    assert token.value.count(".") == 2
    assert len(timeouts) == 1
    assert timeouts[0] > 29


# -- pools ------------------------------------------------------------------------------------


def test_hung_token_fetches_cannot_starve_key_fetches(emulator: Emulator) -> None:
    """16 async token fetches hanging on the metadata server; a key fetch still answers."""
    release, entered, lock = threading.Event(), [0], threading.Lock()
    real = HTTPTransport()

    def hanging(request: HTTPRequest) -> Any:
        with lock:
            entered[0] += 1
        release.wait(30)
        return real(request)

    async def main() -> None:
        source = MetadataServerSource(CALLER, host=emulator.host, transport=hanging)
        provider = IDTokenProvider(source)
        # A shared pool would leave this lookup queued behind the hung fetches until it
        # gives up (KeyFetchError), since the token fetches are released only after it.
        keys = KeySet(emulator.jwks_url, timeout=5, queue_slack=1)

        async def token(n: int) -> None:
            with contextlib.suppress(TokenFetchError):
                await provider.atoken(f"https://callee-{n}.example")

        async with anyio.create_task_group() as tasks:
            for n in range(16):
                tasks.start_soon(token, n)
            with anyio.fail_after(10):
                while entered[0] < 4:  # every worker of the token pool hangs now
                    await anyio.sleep(0.01)
            try:
                await keys.aget(emulator.kid)
            finally:
                release.set()

    try:
        anyio.run(main)
    finally:
        real.close()
    assert entered[0] == 16


def test_metadata_fetches_in_flight_are_bounded(emulator: Emulator) -> None:
    """32 threads asking for 32 audiences keep at most 4 calls at the metadata server."""
    from s2sauth.tokens.sources import MAX_CONCURRENT_FETCHES

    emulator.inject(delay=0.1)
    in_flight, peak, lock = [0], [0], threading.Lock()
    inner = HTTPTransport()

    def counting(request: HTTPRequest) -> Any:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return inner(request)
        finally:
            with lock:
                in_flight[0] -= 1

    source = MetadataServerSource(CALLER, host=emulator.host, transport=counting)
    try:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda n: source.fetch_id_token(f"https://a{n}.example"), range(32)))
    finally:
        emulator.clear_faults()
    assert peak[0] == MAX_CONCURRENT_FETCHES


def test_a_queued_work_item_whose_worker_never_started_is_dropped() -> None:
    """SingleFlight: a call whose worker failed to start never runs later nor frees another's
    claim (issue "Code health": the next call's future stayed unresolved)."""
    queued: list[Callable[[], None]] = []

    class Refusing(concurrent.futures.Executor):
        """Queues the work, then fails to start a thread, as ThreadPoolExecutor can."""

        def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            queued.append(lambda: fn(*args, **kwargs))
            if len(queued) == 1:
                raise RuntimeError("can't start new thread")
            return None

    flight: SingleFlight[str, int] = SingleFlight(executor=Refusing())
    calls: list[int] = []
    with pytest.raises(RuntimeError):
        flight.start("k", lambda: calls.append(1) or 1)
    assert flight.start("k", lambda: calls.append(2) or 2)
    second = flight.running("k")
    queued[0]()  # the first item runs late, once a thread exists
    assert calls == [] and flight.running("k") is second  # it did nothing, took nothing
    queued[1]()
    assert calls == [2] and second is not None and second.result(timeout=1) == 2


# -- redaction --------------------------------------------------------------------------------


SIGNATURE = "Qk9HVVNzaWduYXR1cmVfX19fX19fX19fX19fX19fX19fX19fX2VuZA"
HEADER, PAYLOAD = "eyJhbGciOiJSUzI1NiJ9", "eyJzdWIiOiIxMjMifQ"


@pytest.mark.parametrize(
    "quoted",
    [
        f"{HEADER}.{PAYLOAD}.{SIGNATURE}",
        f"{HEADER}.{PAYLOAD}.{SIGNATURE[:20]}\n{SIGNATURE[20:]}",
        f"{HEADER}%2E{PAYLOAD}%2E{SIGNATURE}",
        f"{HEADER}\\u002e{PAYLOAD}\\u002e{SIGNATURE}",
        f"token={SIGNATURE}",
        f"ya29.{SIGNATURE}",
    ],
)
def test_redaction_removes_any_long_base64url_run(quoted: str) -> None:
    """Signature text never survives into an error message, however the token is written."""
    text = safe_text(f"error: bad request for {quoted} (try again)")
    assert SIGNATURE[:16] not in text and SIGNATURE[-16:] not in text
    assert "bad request" in text


# -- refresh spacing --------------------------------------------------------------------------


class SameToken:
    """A source that always hands back the same token (same ``exp``)."""

    def __init__(self, clock: Clock, token: str) -> None:
        self.calls = 0
        self._exp = clock() + 3600
        self._token = token

    def fetch_id_token(self, audience: str) -> IDToken:
        self.calls += 1
        return IDToken(self._token, self._exp)

    def fetch_access_token(self, scopes: Any) -> Any:  # pragma: no cover - not used
        raise NotImplementedError


def _drive(provider: IDTokenProvider, clock: Clock, seconds: int) -> None:
    for _ in range(seconds * 10):  # ten requests a second, through the refresh window
        provider.token("https://x.example")
        clock.advance(0.1)
        _settle()


def _settle() -> None:
    # Background refreshes run on the token pool: wait until none is in progress.
    from s2sauth._flight import TOKENS, pool

    pool(TOKENS).submit(lambda: None).result(timeout=5)


def test_a_refresh_returning_the_same_token_is_not_repeated_per_request() -> None:
    """The metadata server answers the refresh with the cached token: refreshes are spaced
    (halving the time left), never one per request (AIP-4110)."""
    clock = Clock()
    source = SameToken(clock, "aaa.bbb.ccc")
    provider = IDTokenProvider(source, clock=clock)
    provider.token("https://x.example")
    clock.advance(3600 - 300)  # into the refresh-ahead window
    _drive(provider, clock, 280)  # 2,800 requests until just before expiry
    assert source.calls <= 8


def test_a_failing_refresh_is_spaced_out() -> None:
    """A background refresh that keeps failing is retried seconds apart, not per request."""
    clock = Clock()

    class Failing(SameToken):
        def fetch_id_token(self, audience: str) -> IDToken:
            self.calls += 1
            if self.calls > 1:
                raise TokenFetchError("down", retryable=True)
            return super().fetch_id_token(audience)

    source = Failing(clock, "aaa.bbb.ccc")
    provider = IDTokenProvider(source, clock=clock)
    provider.token("https://x.example")
    clock.advance(3600 - 300)
    _drive(provider, clock, 100)  # 1,000 requests over 100 s of failing refreshes
    assert 2 <= source.calls <= 1 + 100 / 5
