"""Outbound contract suite: requests, httpx sync and httpx async against real loopback servers.

One :class:`OutboundContract` runs for each client. Tokens come from the
emulator (a real metadata server on 127.0.0.1) through a fresh provider per
test; the calls go to :class:`Receiver`, a small HTTP server that records the
headers of every request and can answer 401, or redirect to itself or to a
second receiver on another port (another origin).
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import anyio
import httpx
import pytest
import requests

import s2sauth.httpx as s2s_httpx
import s2sauth.requests as s2s_requests
from s2sauth._errors import ConfigurationError, TokenFetchError
from s2sauth._http import HTTPTransport
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import MetadataServerSource

AUTHZ = "authorization"
XSA = "x-serverless-authorization"


# -- the receiving servers -----------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request a receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        receiver = self.server.receiver
        parts = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        receiver.record(Seen(self.command, parts.path, headers, body))
        query = parse_qs(parts.query)
        status, extra = 200, {}
        if parts.path == "/redirect":
            status, extra = int(query.get("status", ["302"])[0]), {"Location": query["to"][0]}
        elif parts.path == "/401" or (
            parts.path.startswith("/401-once/") and receiver.first_time(parts.path)
        ):
            status, extra = 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        payload = b"ok" if status == 200 else b"no"
        self.send_response(status)
        for name, value in {**extra, "Content-Length": str(len(payload))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    receiver: Receiver


class Receiver:
    """A receiving service on 127.0.0.1 that records the headers of each request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._answered: set[str] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def url(self, path: str = "/ok") -> str:
        """An absolute URL on this receiver."""
        return self.origin + path

    def redirect(self, to: str, status: int = 302) -> str:
        """A URL on this receiver that redirects to ``to``."""
        return self.url(f"/redirect?status={status}&to={quote(to, safe='')}")

    def record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def first_time(self, path: str) -> bool:
        with self._lock:
            first = path not in self._answered
            self._answered.add(path)
            return first

    @property
    def seen(self) -> list[Seen]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def claims(header_value: str) -> dict[str, Any]:
    """The payload of the JWT in ``Bearer <jwt>``."""
    scheme, _, token = header_value.partition(" ")
    assert scheme == "Bearer"
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return result


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One emulator for the module; tests count fetches as differences."""
    with Emulator() as running:
        yield running


@pytest.fixture
def transport() -> Iterator[HTTPTransport]:
    """The metadata connections of this test, closed at its end."""
    pool = HTTPTransport()
    yield pool
    pool.close()


@pytest.fixture
def provider(emulator: Emulator, transport: HTTPTransport) -> IDTokenProvider:
    """A provider with an empty cache, fetching from the emulator."""
    return IDTokenProvider(MetadataServerSource(host=emulator.host, transport=transport))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The service being called."""
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def other() -> Iterator[Receiver]:
    """A second service, on another port: another origin."""
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def dead_provider() -> IDTokenProvider:
    """A provider whose metadata server is down (a closed port) and gives up quickly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{sock.getsockname()[1]}"
    return IDTokenProvider(MetadataServerSource(host=host, deadline=0.3, timeout=0.1))


class Fetches:
    """Counts the emulator's identity/token fetches from now on."""

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self._start = emulator.counters

    def __getitem__(self, endpoint: str) -> int:
        return self._emulator.counters[endpoint] - self._start[endpoint]


@dataclass(frozen=True)
class Call:
    """One request for a client to make."""

    url: str
    method: str = "GET"
    data: bytes | None = None


@dataclass(frozen=True)
class Result:
    """What the client returned."""

    status: int
    redirects: int


# -- the contract --------------------------------------------------------------------------


class OutboundContract:
    """What every outbound adapter must do; subclasses say how to make the calls."""

    def run(self, calls: Sequence[Call], **auth: Any) -> list[Result]:
        """Make ``calls`` in order through one client built with ``auth`` (IDTokenAuth kwargs)."""
        raise NotImplementedError

    def run_access(
        self, calls: Sequence[Call], provider: AccessTokenProvider, targets: Sequence[str]
    ) -> list[Result]:
        """Make ``calls`` through one client with ``AccessTokenAuth(targets=targets)``."""
        raise NotImplementedError

    @pytest.mark.parametrize("mode", [AUTHZ, XSA, "both"])
    @pytest.mark.parametrize("audience", ["derived", "explicit", "callable"])
    def test_token_for_audience_in_header_mode(
        self, mode: str, audience: str, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """The token for the right audience arrives in exactly the mode's header(s)."""
        expected = {
            "derived": receiver.origin,
            "explicit": "https://callee.example",
            "callable": "aud:/ok",
        }[audience]
        arg: Any = {
            "derived": None,
            "explicit": "https://callee.example",
            "callable": lambda url: "aud:" + urlsplit(url).path,
        }[audience]
        # A fixed audience sends its token only to its own origin unless targets says more.
        targets = [receiver.origin] if audience == "explicit" else None
        results = self.run(
            [Call(receiver.url())], audience=arg, header=mode, provider=provider, targets=targets
        )
        assert results == [Result(200, 0)]
        (seen,) = receiver.seen
        names = {AUTHZ: [AUTHZ], XSA: [XSA], "both": [AUTHZ, XSA]}[mode]
        assert [name for name in (AUTHZ, XSA) if name in seen.headers] == names
        assert len({seen.headers[name] for name in names}) == 1
        assert claims(seen.headers[names[0]])["aud"] == expected

    def test_one_fetch_per_audience(
        self, emulator: Emulator, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """Many requests to two audiences cost two metadata fetches."""
        fetches = Fetches(emulator)
        calls = [Call(receiver.url()), Call(other.url())] * 10
        results = self.run(calls, provider=provider)
        assert [r.status for r in results] == [200] * 20
        assert fetches["identity"] == 2
        assert provider.stats.fetches == 2
        assert {claims(s.headers[AUTHZ])["aud"] for s in receiver.seen} == {receiver.origin}

    def test_401_refreshes_once_and_retries(
        self, emulator: Emulator, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """A 401 drops the token, fetches a new one and sends the request again once."""
        fetches = Fetches(emulator)
        assert self.run([Call(receiver.url("/401-once/a"))], provider=provider)[0].status == 200
        assert len(receiver.seen) == 2
        assert all(AUTHZ in s.headers for s in receiver.seen)
        assert fetches["identity"] == 2

    def test_second_401_reaches_the_caller(
        self, emulator: Emulator, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """A request rejected again after its one retry returns the 401, no loop."""
        fetches = Fetches(emulator)
        assert self.run([Call(receiver.url("/401"))], provider=provider)[0].status == 401
        assert len(receiver.seen) == 2
        assert fetches["identity"] == 2

    def test_401_replays_the_body(self, provider: IDTokenProvider, receiver: Receiver) -> None:
        """The retry after a 401 carries the same method and body."""
        call = Call(receiver.url("/401-once/post"), method="POST", data=b'{"n": 1}')
        assert self.run([call], provider=provider)[0].status == 200
        assert [(s.method, s.body) for s in receiver.seen] == [("POST", b'{"n": 1}')] * 2

    def test_401_after_a_redirect_retries_only_that_hop(
        self, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """A 401 on the hop a POST was redirected to (303) sends that hop again, not the POST."""
        url = receiver.redirect(receiver.url("/401-once/order"), 303)
        assert self.run([Call(url, method="POST", data=b"{}")], provider=provider)[0].status == 200
        assert [(s.method, s.path) for s in receiver.seen] == [
            ("POST", "/redirect"),
            ("GET", "/401-once/order"),
            ("GET", "/401-once/order"),
        ]

    def test_same_origin_redirect_to_another_audience_gets_its_token(
        self, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """With an audience per path, a same-origin hop carries its own audience's token."""
        url = receiver.redirect(receiver.url("/landing"))
        audience = lambda url: "aud:" + urlsplit(url).path  # noqa: E731
        assert self.run([Call(url)], provider=provider, audience=audience) == [Result(200, 1)]
        first, landed = receiver.seen
        assert claims(first.headers[AUTHZ])["aud"] == "aud:/redirect"
        assert claims(landed.headers[AUTHZ])["aud"] == "aud:/landing"

    def test_401_without_a_token_is_not_retried(
        self, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """A request that carried no token (not a target) gets its 401 as is."""
        results = self.run([Call(receiver.url("/401"))], provider=provider, targets=[other.origin])
        assert results[0].status == 401
        assert len(receiver.seen) == 1
        assert AUTHZ not in receiver.seen[0].headers

    @pytest.mark.parametrize("mode", [AUTHZ, XSA, "both"])
    @pytest.mark.parametrize("status", [302, 307])
    def test_cross_origin_redirect_drops_both_headers(
        self, mode: str, status: int, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """Neither token header follows a redirect to another origin."""
        url = receiver.redirect(other.url("/landing"), status)
        assert self.run([Call(url)], provider=provider, header=mode) == [Result(200, 1)]
        assert AUTHZ in receiver.seen[0].headers or XSA in receiver.seen[0].headers
        (landed,) = other.seen
        assert landed.path == "/landing"
        assert AUTHZ not in landed.headers and XSA not in landed.headers

    @pytest.mark.parametrize("mode", [AUTHZ, XSA, "both"])
    def test_same_origin_redirect_keeps_the_token(
        self, mode: str, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """A redirect within the origin keeps the token headers."""
        url = receiver.redirect(receiver.url("/landing"))
        assert self.run([Call(url)], provider=provider, header=mode) == [Result(200, 1)]
        first, landed = receiver.seen
        assert landed.path == "/landing"
        for name in (AUTHZ, XSA):
            assert landed.headers.get(name) == first.headers.get(name)
        assert claims(landed.headers[XSA if mode == XSA else AUTHZ])["aud"] == receiver.origin

    def test_targets_only_targets_get_a_token(
        self, emulator: Emulator, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """A request outside ``targets`` goes without a token, and costs no fetch."""
        fetches = Fetches(emulator)
        calls = [Call(other.url()), Call(receiver.url("/v1/items")), Call(receiver.url("/v2"))]
        targets = [receiver.url("/v1/")]
        assert [r.status for r in self.run(calls, provider=provider, targets=targets)] == [200] * 3
        assert AUTHZ not in other.seen[0].headers
        in_prefix, out_of_prefix = receiver.seen
        assert claims(in_prefix.headers[AUTHZ])["aud"] == receiver.origin
        assert AUTHZ not in out_of_prefix.headers
        assert fetches["identity"] == 1

    @pytest.mark.parametrize("mode", [AUTHZ, XSA, "both"])
    def test_redirect_to_another_target_gets_its_own_token(
        self, mode: str, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """A redirect to another origin listed in ``targets`` carries a fresh token for it."""
        url = receiver.redirect(other.url("/landing"))
        targets = [receiver.origin, other.origin]
        assert (
            self.run([Call(url)], provider=provider, header=mode, targets=targets)[0].status == 200
        )
        (landed,) = other.seen
        header = XSA if mode == XSA else AUTHZ
        assert claims(landed.headers[header])["aud"] == other.origin
        assert claims(receiver.seen[0].headers[header])["aud"] == receiver.origin
        if mode == "both":
            assert landed.headers[AUTHZ] == landed.headers[XSA]

    def test_redirect_to_a_non_target_gets_nothing(
        self, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """With ``targets`` set, a redirect to an origin outside them carries no token."""
        url = receiver.redirect(other.url("/landing"))
        self.run([Call(url)], provider=provider, header="both", targets=[receiver.origin])
        (landed,) = other.seen
        assert AUTHZ not in landed.headers and XSA not in landed.headers

    def test_metadata_down_raises_and_sends_nothing(
        self, dead_provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """No metadata server: TokenFetchError reaches the caller, the request is not sent."""
        with pytest.raises(TokenFetchError):
            self.run([Call(receiver.url())], provider=dead_provider)
        assert receiver.seen == []

    def test_metadata_errors_raise_and_send_nothing(
        self, emulator: Emulator, transport: HTTPTransport, receiver: Receiver
    ) -> None:
        """A metadata server answering 503 until the deadline: TokenFetchError, nothing sent."""
        source = MetadataServerSource(host=emulator.host, transport=transport, deadline=0.3)
        provider = IDTokenProvider(source)
        emulator.inject(statuses=[503] * 50)
        try:
            with pytest.raises(TokenFetchError):
                self.run([Call(receiver.url())], provider=provider)
        finally:
            emulator.clear_faults()
        assert receiver.seen == []

    def test_no_token_in_logs(
        self, caplog: pytest.LogCaptureFixture, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """Debug logging of fetches, a 401 and its retry never shows a token."""
        with caplog.at_level(logging.DEBUG):
            self.run([Call(receiver.url("/401-once/log")), Call(receiver.url())], provider=provider)
        tokens = {s.headers[AUTHZ].split()[1] for s in receiver.seen}
        assert tokens and not any(token in caplog.text for token in tokens)

    def test_access_token(
        self, emulator: Emulator, transport: HTTPTransport, receiver: Receiver
    ) -> None:
        """AccessTokenAuth sends the metadata server's access token, fetched once."""
        fetches = Fetches(emulator)
        provider = AccessTokenProvider(
            MetadataServerSource(host=emulator.host, transport=transport)
        )
        results = self.run_access([Call(receiver.url())] * 3, provider, [receiver.origin])
        assert [r.status for r in results] == [200] * 3
        assert {s.headers[AUTHZ] for s in receiver.seen} == {
            f"Bearer {provider.token(('https://www.googleapis.com/auth/cloud-platform',))}"
        }
        assert receiver.seen[0].headers[AUTHZ].startswith("Bearer ya29.")
        assert fetches["token"] == 1


# -- requests ------------------------------------------------------------------------------


class TestRequests(OutboundContract):
    """The contract for ``s2sauth.requests`` (through ``id_token_session``)."""

    def run(self, calls: Sequence[Call], **auth: Any) -> list[Result]:
        with s2s_requests.id_token_session(**auth) as session:
            session.trust_env = False
            return [_requests_call(session, call) for call in calls]

    def run_access(
        self, calls: Sequence[Call], provider: AccessTokenProvider, targets: Sequence[str]
    ) -> list[Result]:
        with requests.Session() as session:
            session.trust_env = False
            session.auth = s2s_requests.AccessTokenAuth(provider=provider, targets=targets)
            return [_requests_call(session, call) for call in calls]

    def test_64_threads_one_fetch_per_audience(
        self, emulator: Emulator, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """64 threads sharing one Session cause one metadata fetch per audience."""
        fetches = Fetches(emulator)
        barrier = threading.Barrier(64)
        with s2s_requests.id_token_session(provider=provider) as session:
            session.trust_env = False

            def work(n: int) -> list[int]:
                barrier.wait()
                target = receiver if n % 2 else other
                return [session.get(target.url()).status_code for _ in range(3)]

            with ThreadPoolExecutor(64) as pool:
                statuses = [s for batch in pool.map(work, range(64)) for s in batch]
        assert statuses == [200] * 192
        assert fetches["identity"] == 2
        assert len(receiver.seen) + len(other.seen) == 192

    @pytest.mark.parametrize("mode", [XSA, "both"])
    def test_plain_session_drops_both_headers_on_cross_origin_redirect(
        self, mode: str, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """IDTokenAuth on a plain Session (and requests.get) strips both headers too."""
        url = receiver.redirect(other.url("/landing"))
        auth = s2s_requests.IDTokenAuth(provider=provider, header=mode)
        with requests.Session() as session:
            session.trust_env = False
            session.auth = auth
            assert session.get(url).status_code == 200
        assert requests.get(url, auth=auth, timeout=10).status_code == 200
        assert len(other.seen) == 2
        assert all(AUTHZ not in s.headers and XSA not in s.headers for s in other.seen)

    def test_plain_session_gives_a_same_origin_hop_its_own_audience(
        self, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """On a plain Session too, a same-origin hop to another audience gets that token."""
        auth = s2s_requests.IDTokenAuth(lambda url: "aud:" + urlsplit(url).path, provider=provider)
        with requests.Session() as session:
            session.trust_env = False
            session.auth = auth
            assert session.get(receiver.redirect(receiver.url("/landing"))).status_code == 200
        assert claims(receiver.seen[1].headers[AUTHZ])["aud"] == "aud:/landing"

    def test_plain_session_keeps_the_redirect_response_history(
        self, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """The 401 retry shows up in history, like requests' own digest auth."""
        with s2s_requests.id_token_session(provider=provider) as session:
            session.trust_env = False
            response = session.get(receiver.url("/401-once/h"))
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]

    def test_streamed_body_is_not_replayed(
        self, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """A body that cannot be sent twice gets its 401 back instead of a retry."""
        with s2s_requests.id_token_session(provider=provider) as session:
            session.trust_env = False
            data = iter([b"a", b"b"])
            assert session.post(receiver.url("/401"), data=data).status_code == 401
        assert len(receiver.seen) == 1


def _requests_call(session: requests.Session, call: Call) -> Result:
    response = session.request(call.method, call.url, data=call.data, timeout=10)
    return Result(response.status_code, len(response.history))


# -- httpx ---------------------------------------------------------------------------------


class TestHttpxSync(OutboundContract):
    """The contract for ``s2sauth.httpx`` with ``httpx.Client``."""

    def run(self, calls: Sequence[Call], **auth: Any) -> list[Result]:
        with s2s_httpx.id_token_client(**auth, follow_redirects=True, trust_env=False) as client:
            return [_httpx_result(client.request(c.method, c.url, content=c.data)) for c in calls]

    def run_access(
        self, calls: Sequence[Call], provider: AccessTokenProvider, targets: Sequence[str]
    ) -> list[Result]:
        auth = s2s_httpx.AccessTokenAuth(provider=provider, targets=targets)
        with httpx.Client(auth=auth, trust_env=False) as client:
            return [_httpx_result(client.request(c.method, c.url, content=c.data)) for c in calls]

    @pytest.mark.parametrize("mode", [XSA, "both"])
    def test_redirect_sent_on_by_hand_drops_both_headers(
        self, mode: str, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """Without follow_redirects, sending response.next_request strips both headers."""
        auth = s2s_httpx.IDTokenAuth(provider=provider, header=mode)
        with s2s_httpx.Client(auth=auth, trust_env=False) as client:
            response = client.get(receiver.redirect(other.url("/landing")))
            assert response.status_code == 302 and response.next_request is not None
            assert client.send(response.next_request).status_code == 200
        (landed,) = other.seen
        assert AUTHZ not in landed.headers and XSA not in landed.headers

    def test_redirect_sent_on_by_hand_to_a_target_gets_its_own_token(
        self, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """Sending next_request on by hand to another target attaches a token for it."""
        targets = [receiver.origin, other.origin]
        auth = s2s_httpx.IDTokenAuth(provider=provider, header="both", targets=targets)
        with s2s_httpx.Client(auth=auth, trust_env=False) as client:
            response = client.get(receiver.redirect(other.url("/landing")))
            assert response.next_request is not None
            client.send(response.next_request)
        (landed,) = other.seen
        assert claims(landed.headers[XSA])["aud"] == other.origin

    @pytest.mark.parametrize(
        "auth",
        [
            {"header": XSA},
            {"header": "both"},
            {"targets": ["PREFIX"]},
            {"audience": "CALLABLE"},
        ],
    )
    def test_plain_client_fails_closed_where_httpx_cannot_keep_the_token(
        self, auth: dict[str, Any], provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """A hand-built httpx.Client cannot judge hops: such configurations raise, send nothing."""
        if auth.get("targets") == ["PREFIX"]:
            auth = {"targets": [receiver.url("/v1/")]}
        if auth.get("audience") == "CALLABLE":
            auth = {"audience": lambda url: "aud:" + urlsplit(url).path}
        guard = s2s_httpx.IDTokenAuth(provider=provider, **auth)
        with httpx.Client(auth=guard, follow_redirects=True, trust_env=False) as client:
            with pytest.raises(ConfigurationError, match="s2sauth.httpx.Client"):
                client.get(receiver.redirect(other.url("/landing")).replace("/redirect", "/v1/r"))
        assert receiver.seen == [] and other.seen == []

    def test_plain_client_with_the_readme_line_keeps_the_token_home(
        self, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """``httpx.Client(auth=IDTokenAuth())`` following redirects: httpx's own rule suffices."""
        guard = s2s_httpx.IDTokenAuth(provider=provider)
        with httpx.Client(auth=guard, follow_redirects=True, trust_env=False) as client:
            assert client.get(receiver.redirect(other.url("/landing"))).status_code == 200
        assert AUTHZ in receiver.seen[0].headers
        assert AUTHZ not in other.seen[0].headers and XSA not in other.seen[0].headers

    def test_user_event_hooks_see_every_hop(
        self, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """The user's own request hooks run on each hop the client follows."""
        seen: list[str] = []
        with s2s_httpx.id_token_client(
            provider=provider,
            header="both",
            follow_redirects=True,
            trust_env=False,
            event_hooks={"request": [lambda request: seen.append(str(request.url))]},
        ) as client:
            response = client.get(receiver.redirect(other.url("/landing")))
        assert len(seen) == 2 and len(response.history) == 1
        assert XSA not in other.seen[0].headers

    def test_streamed_body_is_not_replayed(
        self, provider: IDTokenProvider, receiver: Receiver
    ) -> None:
        """A body that cannot be sent twice gets its 401 back instead of a retry."""
        with s2s_httpx.id_token_client(provider=provider, trust_env=False) as client:
            response = client.post(receiver.url("/401"), content=iter([b"a", b"b"]))
        assert response.status_code == 401
        assert len(receiver.seen) == 1


def _httpx_result(response: httpx.Response) -> Result:
    return Result(response.status_code, len(response.history))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
class TestHttpxAsync(OutboundContract):
    """The contract for ``s2sauth.httpx`` with ``httpx.AsyncClient``, under asyncio and trio."""

    backend = "asyncio"

    @pytest.fixture(autouse=True)
    def _backend(self, backend: str) -> None:
        self.backend = backend

    def run(self, calls: Sequence[Call], **auth: Any) -> list[Result]:
        async def main() -> list[Result]:
            async with s2s_httpx.id_token_async_client(
                **auth, follow_redirects=True, trust_env=False
            ) as client:
                return [
                    _httpx_result(await client.request(c.method, c.url, content=c.data))
                    for c in calls
                ]

        return anyio.run(main, backend=self.backend)

    def run_access(
        self, calls: Sequence[Call], provider: AccessTokenProvider, targets: Sequence[str]
    ) -> list[Result]:
        async def main() -> list[Result]:
            auth = s2s_httpx.AccessTokenAuth(provider=provider, targets=targets)
            async with httpx.AsyncClient(auth=auth, trust_env=False) as client:
                return [_httpx_result(await client.request(c.method, c.url)) for c in calls]

        return anyio.run(main, backend=self.backend)

    def test_500_concurrent_requests_one_fetch_per_audience(
        self, emulator: Emulator, provider: IDTokenProvider, receiver: Receiver, other: Receiver
    ) -> None:
        """500 concurrent requests to two audiences cause one metadata fetch per audience."""
        fetches = Fetches(emulator)
        statuses: list[int] = []

        async def one(client: httpx.AsyncClient, target: Receiver) -> None:
            statuses.append((await client.get(target.url())).status_code)

        async def main() -> None:
            limits = httpx.Limits(max_connections=10)
            async with s2s_httpx.id_token_async_client(
                provider=provider, trust_env=False, limits=limits, timeout=30
            ) as client:
                async with anyio.create_task_group() as tasks:
                    for n in range(500):
                        tasks.start_soon(one, client, receiver if n % 2 else other)

        anyio.run(main, backend=self.backend)
        assert statuses == [200] * 500
        assert fetches["identity"] == 2


# -- construction --------------------------------------------------------------------------


@pytest.mark.parametrize("module", [s2s_requests, s2s_httpx])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"header": "proxy-authorization"},
        {"targets": "https://a.example"},
        {"targets": ["not a url"]},
        {"audience": ""},
    ],
)
def test_bad_arguments_fail_at_construction(module: Any, kwargs: dict[str, Any]) -> None:
    """Bad header modes, targets and audiences raise ConfigurationError in __init__."""
    with pytest.raises(ConfigurationError):
        module.IDTokenAuth(provider=IDTokenProvider(), **kwargs)


@pytest.mark.parametrize(("module", "extra"), [("requests", "requests"), ("httpx", "httpx")])
def test_missing_framework_names_the_extra(module: str, extra: str) -> None:
    """Importing an adapter without its library says which extra to install."""
    code = f"import sys; sys.modules[{module!r}] = None; import s2sauth.{module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"pip install 's2sauth[{extra}]'" in result.stderr
