"""Edges of the token sources, the token cache and the HTTP transport that other tests miss.

Real servers on 127.0.0.1 wherever a socket is involved: a counting HTTP server
(plain, HTTP/1.0 or TLS), the emulator, and a fake of Google's token endpoint that
also plays the IAM Credentials API behind an HTTPS proxy tunnel. Fakes stand in
only for third-party credentials objects and for a metadata transport whose ping
a test holds at a gate.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime
import gc
import json
import logging
import os
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import google.auth.credentials
import google.auth.exceptions
import google.oauth2.credentials
import google.oauth2.service_account
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import impersonated_credentials
from support import (
    IAM_HOST,
    PROXY_VARS,
    REFRESH_TOKEN,
    FakeGoogle,
    Tls,
    service_account_info,
    throwaway_tls,
    wait_for,
)

from s2sauth._errors import ConfigurationError, TokenFetchError
from s2sauth._http import HTTPRequest, HTTPResponse, HTTPTransport, TransportError, wait_future
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import (
    AccessToken,
    ADCSource,
    DefaultSource,
    IDToken,
    MetadataServerSource,
    UrllibRequest,
)

CALLER = "caller@demo-project.iam.gserviceaccount.com"
TARGET = "target@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://callee-xyz.a.run.app"
ADC_FILE = "application_default_credentials.json"
FLAVOR = {"Metadata-Flavor": "Google"}
NOW = 1_700_000_000.0
#: A loopback port nothing listens on (the discard port), as in conftest.
DEAD = "127.0.0.1:9"


@pytest.fixture(autouse=True)
def _no_outer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run without proxies, CA bundles or gcloud settings from the outer environment."""
    for name in (
        *PROXY_VARS,
        "CLOUDSDK_CONFIG",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GOOGLE_API_USE_CLIENT_CERTIFICATE",
    ):
        monkeypatch.delenv(name, raising=False)


# --- helpers ------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt(claims: Mapping[str, Any]) -> str:
    """A JWT-shaped string with `claims` (the signature is junk: nobody here verifies it)."""
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(dict(claims)).encode())}.{b64(b'signature')}"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


Answer = tuple[int, Mapping[str, str], bytes]


def metadata_answer(path: str) -> Answer:
    """What a metadata server says to a ping or an identity call."""
    if path == "/":
        return 200, FLAVOR, b""
    return 200, FLAVOR, fake_jwt({"aud": AUDIENCE, "exp": int(time.time()) + 3600}).encode()


class CountingServer:
    """An HTTP server on 127.0.0.1 that counts connections opened and closed by clients.

    Args:
        answer: the status, headers and body for a GET of a path.
        protocol: ``HTTP/1.1`` keeps connections alive; ``HTTP/1.0`` closes after each
            reply without saying ``Connection: close``, as old servers do.
        tls: serve HTTPS with this context.
        barrier: every request waits here before its answer, to hold requests together.
    """

    def __init__(
        self,
        answer: Callable[[str], Answer] = metadata_answer,
        *,
        protocol: str = "HTTP/1.1",
        tls: ssl.SSLContext | None = None,
        barrier: threading.Barrier | None = None,
    ) -> None:
        self.opened = 0
        self.closed = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol
            timeout = 10  # a connection a test forgot cannot hold a thread for ever

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner.opened += 1

            def finish(self) -> None:
                super().finish()
                with owner._lock:
                    owner.closed += 1

            def do_GET(self) -> None:
                if barrier is not None:
                    barrier.wait(10)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting() -> Iterator[Callable[..., CountingServer]]:
    """Start CountingServers on demand; all are stopped after the test."""
    started: list[CountingServer] = []

    def start(*args: Any, **kwargs: Any) -> CountingServer:
        started.append(CountingServer(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """One throwaway certificate for every TLS server in this module."""
    return throwaway_tls(tmp_path_factory.mktemp("tls"), [IAM_HOST, "127.0.0.1"])


@pytest.fixture
def fake_google(emulator_key: rsa.RSAPrivateKey, tls: Tls) -> Iterator[FakeGoogle]:
    """The fake token endpoint and IAM proxy, stopped after the test."""
    with FakeGoogle(emulator_key, tls=tls.server, access_token="ya29.fake-access") as fake:
        yield fake


@pytest.fixture
def write_key(emulator_key: rsa.RSAPrivateKey, fake_google: FakeGoogle) -> Callable[[Path], Path]:
    """Write a service-account key file that gets its tokens from the fake Google."""

    def write(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(service_account_info(emulator_key, CALLER, fake_google.token_uri))
        )
        return path

    return write


class ScriptedCredentials(google.auth.credentials.Credentials):
    """Third-party credentials whose refresh sets a fixed token and expiry."""

    def __init__(self, token: str | None, expiry: datetime.datetime | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.next_token = token
        self.next_expiry = expiry
        self.audiences: list[str] = []

    def refresh(self, request: Any) -> None:
        self.token = self.next_token
        self.expiry = self.next_expiry

    def with_target_audience(self, audience: str) -> ScriptedCredentials:
        self.audiences.append(audience)
        return self


class Clocks:
    """A provider clock that reads differently on the test's thread and on any other
    (a flight's worker): how a clock that stepped back in between looks to the cache."""

    def __init__(self, now: float = NOW) -> None:
        self.home = threading.get_ident()
        self.here = now
        self.elsewhere = now

    def __call__(self) -> float:
        return self.here if threading.get_ident() == self.home else self.elsewhere


class Minting:
    """A token source minting numbered tokens that expire `lifetime` seconds after `clock()`."""

    def __init__(self, clock: Callable[[], float], lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0

    def fetch_id_token(self, audience: str) -> IDToken:
        self.calls += 1
        return IDToken(f"token-{self.calls}", self.clock() + self.lifetime)

    def fetch_access_token(self, scopes: Sequence[str]) -> AccessToken:
        self.calls += 1
        return AccessToken(f"token-{self.calls}", self.clock() + self.lifetime)


# --- MetadataServerSource -----------------------------------------------------------------


def test_metadata_source_repr_names_account_and_host() -> None:
    """repr shows the account and the host the next call goes to."""
    source = MetadataServerSource(" sa@p.iam.gserviceaccount.com ", host="10.0.0.1:8080")
    assert repr(source) == (
        "MetadataServerSource(account='sa@p.iam.gserviceaccount.com', host='10.0.0.1:8080')"
    )


@pytest.mark.parametrize("host", ["", "  ", "http://", "10.0.0.1/path", "http://a/b/"])
def test_metadata_source_refuses_a_host_that_is_not_one(host: str) -> None:
    """A host that is empty or carries a path is a ConfigurationError, not a 10 s retry loop."""
    with pytest.raises(ConfigurationError, match="host must be the metadata server's host"):
        MetadataServerSource(host=host)


def test_metadata_source_tidies_its_host_like_the_environment_variable() -> None:
    """A host given as a URL is used as host[:port], as GCE_METADATA_HOST would be."""
    source = MetadataServerSource(host=" http://10.0.0.1:8080/ ")
    assert repr(source) == "MetadataServerSource(account='default', host='10.0.0.1:8080')"


def test_close_drops_idle_connections_of_its_own_transport_only(
    counting: Callable[..., CountingServer],
) -> None:
    """close() closes the pooled connection of the source's own transport, not a given one."""
    server = counting()
    owned = MetadataServerSource(host=server.host)
    owned.fetch_id_token(AUDIENCE)
    owned.fetch_id_token(AUDIENCE)
    assert server.opened == 1  # kept alive and reused
    owned.close()
    wait_for(lambda: server.closed == 1)
    owned.fetch_id_token(AUDIENCE)
    assert server.opened == 2

    given = HTTPTransport()
    shared = MetadataServerSource(host=server.host, transport=given)
    shared.fetch_id_token(AUDIENCE)
    assert server.opened == 3
    shared.close()
    shared.fetch_id_token(AUDIENCE)
    assert server.opened == 3  # the given transport's connection was left open
    owned.close()
    given.close()


# --- UrllibRequest ------------------------------------------------------------------------


def test_urllib_request_returns_status_headers_and_body(
    counting: Callable[..., CountingServer],
) -> None:
    """The ADC transport hands google-auth the reply's status, headers and body."""
    server = counting(lambda path: (201, {"X-Probe": path}, b"made"))
    response = UrllibRequest()(f"http://{server.host}/thing")
    assert response.status == 201
    assert response.headers["X-Probe"] == "/thing"
    assert response.data == b"made"


def test_urllib_request_unreachable_is_a_google_auth_transport_error() -> None:
    """A refused connection is google-auth's TransportError naming the method and URL."""
    with pytest.raises(google.auth.exceptions.TransportError) as caught:
        UrllibRequest(timeout=2)(f"http://{DEAD}/token", method="POST", body=b"x=1")
    assert str(caught.value).startswith(f"POST http://{DEAD}/token failed: ")
    assert isinstance(caught.value.__cause__, OSError)


def test_adc_unreachable_token_endpoint_is_retryable(
    tmp_path: Path, emulator_key: rsa.RSAPrivateKey
) -> None:
    """A key file whose token endpoint refuses connections is a retryable TokenFetchError."""
    path = tmp_path / "key.json"
    path.write_text(json.dumps(service_account_info(emulator_key, CALLER, f"http://{DEAD}/token")))
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(path).fetch_id_token(AUDIENCE)
    assert caught.value.retryable is True
    assert caught.value.message.startswith(
        "Application Default Credentials could not mint an ID token: "
    )
    assert f"http://{DEAD}/token failed" in caught.value.message


# --- ADCSource: where the file is found -----------------------------------------------------


def test_adc_found_in_cloudsdk_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_key: Callable[[Path], Path]
) -> None:
    """Without GOOGLE_APPLICATION_CREDENTIALS, gcloud's file under CLOUDSDK_CONFIG is used."""
    config = tmp_path / "gcloud-config"
    write_key(config / ADC_FILE)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(config))
    token = ADCSource().fetch_id_token(AUDIENCE)
    assert claims_of(token.value)["email"] == CALLER
    assert claims_of(token.value)["aud"] == AUDIENCE


def test_adc_found_in_home_gcloud_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_key: Callable[[Path], Path]
) -> None:
    """Without CLOUDSDK_CONFIG, the file is looked for in ~/.config/gcloud."""
    write_key(tmp_path / ".config" / "gcloud" / ADC_FILE)
    monkeypatch.setenv("HOME", str(tmp_path))
    token = ADCSource().fetch_id_token(AUDIENCE)
    assert claims_of(token.value)["email"] == CALLER


def test_adc_found_in_appdata_on_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On Windows the gcloud file is looked for in %APPDATA%/gcloud."""
    path = tmp_path / "gcloud" / ADC_FILE
    path.parent.mkdir()
    path.write_text(json.dumps({"type": "authorized_user", "refresh_token": "r"}))
    monkeypatch.setenv("APPDATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    source = ADCSource()
    with monkeypatch.context() as windows, pytest.raises(TokenFetchError) as caught:
        windows.setattr(os, "name", "nt")
        source.fetch_id_token(AUDIENCE)
    # User credentials are refused, naming the file that was found.
    assert f"(found {path})" in caught.value.message


def test_adc_file_is_read_once(tmp_path: Path, write_key: Callable[[Path], Path]) -> None:
    """The ADC file is read at first use: ID and access tokens still come after it is removed."""
    path = write_key(tmp_path / "key.json")
    source = ADCSource(path)
    first = source.fetch_id_token(AUDIENCE)
    path.unlink()
    second = source.fetch_id_token("https://other.example")
    assert claims_of(first.value)["aud"] == AUDIENCE
    assert claims_of(second.value)["aud"] == "https://other.example"
    # Access tokens use the same contents (so the same key after a rotation), not a re-read.
    assert source.fetch_access_token(["scope-a"]).value


@pytest.mark.parametrize("content", ["[]", '"key"', "null", "42"])
def test_adc_file_not_a_json_object(tmp_path: Path, content: str) -> None:
    """A credentials file holding JSON that is not an object is a TokenFetchError naming it."""
    path = tmp_path / "adc.json"
    path.write_text(content)
    for fetch in (
        lambda: ADCSource(path).fetch_id_token(AUDIENCE),
        lambda: ADCSource(path).fetch_access_token(["scope-a"]),
    ):
        with pytest.raises(TokenFetchError) as caught:
            fetch()
        assert caught.value.message == f"{path} is not a JSON credentials object"


# --- ADCSource: credentials objects ---------------------------------------------------------


def test_adc_source_repr_names_credentials_never_secrets(tmp_path: Path) -> None:
    """repr names the file, the credentials class, or 'ADC'; never a token."""
    credentials = ScriptedCredentials("ya29.secret-token", None)
    source = ADCSource(credentials)
    source.fetch_access_token(["scope-a"])
    assert repr(source) == "ADCSource(credentials=ScriptedCredentials)"
    path = tmp_path / "key.json"
    assert repr(ADCSource(path)) == f"ADCSource(credentials={str(path)!r})"
    assert repr(ADCSource()) == "ADCSource(credentials=ADC)"


def test_adc_credentials_object_that_mints_no_id_token() -> None:
    """ID-token credentials whose refresh leaves no token give a TokenFetchError."""
    credentials = ScriptedCredentials(None, None)
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(credentials).fetch_id_token(AUDIENCE)
    assert caught.value.message == "Application Default Credentials returned no ID token"
    assert credentials.audiences == [AUDIENCE]


def test_adc_access_token_from_credentials_object(
    emulator_key: rsa.RSAPrivateKey, fake_google: FakeGoogle
) -> None:
    """A service-account credentials object mints access tokens with the scopes asked for."""
    credentials = google.oauth2.service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        service_account_info(emulator_key, CALLER, fake_google.token_uri)
    )
    before = time.time()
    token = ADCSource(credentials).fetch_access_token(["scope-a", "scope-b"])
    after = time.time()
    assert token.value == "ya29.fake-access"
    # google-auth keeps a naive UTC expiry; it is read as UTC, not local time.
    assert before + 3599 - 1 <= token.expires_at <= after + 3599 + 1
    (grant,) = fake_google.seen
    assert grant.body["scope"] == "scope-a scope-b"


def test_adc_empty_access_token_is_an_error(
    tmp_path: Path, write_key: Callable[[Path], Path], fake_google: FakeGoogle
) -> None:
    """A token endpoint answering an empty access_token gives a TokenFetchError, not ''."""
    fake_google.access_token = ""
    source = ADCSource(write_key(tmp_path / "key.json"))
    with pytest.raises(TokenFetchError) as caught:
        source.fetch_access_token(["scope-a"])
    assert caught.value.message == "Application Default Credentials returned no access token"
    assert len(fake_google.seen) == 1


def test_adc_access_token_without_expiry_lives_five_minutes(fake_google: FakeGoogle) -> None:
    """A token endpoint that omits expires_in: the access token is assumed to last 300 s."""
    fake_google.expires_in = None
    credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        None,
        refresh_token=REFRESH_TOKEN,
        token_uri=fake_google.token_uri,
        client_id="client-id",
        client_secret="client-secret",
    )
    before = time.time()
    token = ADCSource(credentials).fetch_access_token(["scope-a"])
    after = time.time()
    assert token.value == "ya29.fake-access"
    assert before + 300 <= token.expires_at <= after + 300
    assert fake_google.seen[0].body["grant_type"] == "refresh_token"


def test_adc_expiry_with_a_time_zone_is_kept() -> None:
    """An aware expiry is read in its own zone; a naive one as UTC: both give the same instant."""
    instant = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    aware = ScriptedCredentials("ya29.aware", datetime.datetime(2030, 1, 1, 2, tzinfo=plus_two))
    naive = ScriptedCredentials("ya29.naive", datetime.datetime(2030, 1, 1))
    assert ADCSource(aware).fetch_access_token(["s"]).expires_at == instant
    assert ADCSource(naive).fetch_access_token(["s"]).expires_at == instant


def test_adc_impersonated_credentials_object_mints_id_token(
    monkeypatch: pytest.MonkeyPatch, tls: Tls, fake_google: FakeGoogle
) -> None:
    """Impersonated credentials handed in mint the target's ID token through generateIdToken."""
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, fake_google.origin)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
    fake_google.issued.append("ya29.caller-token")  # as if the fake had handed it out earlier
    caller = google.oauth2.credentials.Credentials("ya29.caller-token")  # type: ignore[no-untyped-call]
    credentials = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
        source_credentials=caller,
        target_principal=TARGET,
        target_scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    token = ADCSource(credentials).fetch_id_token(AUDIENCE)
    claims = claims_of(token.value)
    assert claims["email"] == TARGET and claims["aud"] == AUDIENCE
    assert token.expires_at == claims["exp"]
    assert fake_google.tunnels == [f"{IAM_HOST}:443"]
    (generate,) = fake_google.seen
    assert generate.path == f"/v1/projects/-/serviceAccounts/{TARGET}:generateIdToken"
    assert generate.authorization == "Bearer ya29.caller-token"
    assert generate.body["audience"] == AUDIENCE
    assert generate.body["includeEmail"] is True


def test_adc_user_credentials_object_cannot_mint_id_tokens() -> None:
    """A gcloud user credentials object is refused with what to do instead, before any call."""
    credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        None,
        refresh_token="1//fake-refresh-token",
        token_uri=f"http://{DEAD}/token",
        client_id="client-id",
        client_secret="client-secret",
    )
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(credentials).fetch_id_token(AUDIENCE)
    assert "--impersonate-service-account" in caught.value.message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.message
    assert "1//fake-refresh-token" not in caught.value.message
    assert caught.value.retryable is False


def test_adc_other_credentials_object_cannot_mint_id_tokens() -> None:
    """Credentials that cannot mint ID tokens are refused, naming their class and the options."""
    anonymous = google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(anonymous).fetch_id_token(AUDIENCE)
    message = caught.value.message
    assert message.startswith("AnonymousCredentials cannot mint ID tokens: ")
    assert "IDTokenCredentials" in message and "impersonated" in message and "key file" in message


# --- DefaultSource and the providers ------------------------------------------------------


def test_reprs_show_the_chosen_source_never_a_token(emulator: Emulator) -> None:
    """Provider and DefaultSource reprs show which source was chosen, and no token."""
    metadata = MetadataServerSource(host=emulator.host)
    source = DefaultSource(metadata=metadata, adc=ADCSource("/nowhere/key.json"))
    ids = IDTokenProvider(source)
    access = AccessTokenProvider(source)
    assert repr(ids) == "IDTokenProvider(source=DefaultSource(chosen=None))"
    token = ids.token(AUDIENCE)
    access_token = access.token()
    chosen = f"DefaultSource(chosen={metadata!r})"
    assert repr(source) == chosen
    assert repr(ids) == f"IDTokenProvider(source={chosen})"
    assert repr(access) == f"AccessTokenProvider(source={chosen})"
    assert emulator.host in chosen
    for text in (repr(ids), repr(access)):
        assert token not in text and access_token not in text


class GatedPing:
    """A metadata transport whose ping waits at a gate; identity calls answer at once."""

    def __init__(self) -> None:
        self.pings = 0
        self.pinged = threading.Event()
        self.gate = threading.Event()

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        if request.url.endswith("/"):
            self.pings += 1
            self.pinged.set()
            assert self.gate.wait(10), "the test never opened the gate"
        path = "/" if request.url.endswith("/") else "/identity"
        status, headers, body = metadata_answer(path)
        return HTTPResponse(status, {name.lower(): v for name, v in headers.items()}, body)


def test_default_source_first_use_from_two_threads_pings_once() -> None:
    """A thread arriving while the first probe runs waits for it and uses its choice."""
    transport = GatedPing()
    metadata = MetadataServerSource(host="127.0.0.1:1", transport=transport)
    adc = Minting(time.time)
    source = DefaultSource(metadata=metadata, adc=adc)
    results: list[IDToken] = []
    first = threading.Thread(target=lambda: results.append(source.fetch_id_token("a")))
    first.start()
    assert transport.pinged.wait(10)
    second = threading.Thread(target=lambda: results.append(source.fetch_id_token("b")))
    second.start()

    def second_waits_on_the_choice() -> bool:
        # The second thread has read "nothing chosen yet" and is queued behind the probe.
        frame = sys._current_frames().get(second.ident or 0)
        return (
            frame is not None
            and frame.f_code.co_name == "_fetch"
            and frame.f_locals.get("self") is source
            and "chosen" in frame.f_locals
        )

    wait_for(second_waits_on_the_choice)
    transport.gate.set()
    first.join()
    second.join()
    assert transport.pings == 1
    assert source.chosen is metadata
    assert len(results) == 2 and all(token.value.count(".") == 2 for token in results)
    assert adc.calls == 0


# --- the token cache ----------------------------------------------------------------------


def test_stats_is_a_frozen_snapshot_of_the_four_counters() -> None:
    """ProviderStats is a frozen snapshot of four counters, like KeySetStats and VerifierStats."""
    provider = IDTokenProvider(Minting(time.time))
    provider.token("a")
    provider.token("a")
    stats = provider.stats
    assert dataclasses.asdict(stats) == {
        "fetches": 1,
        "cache_hits": 1,
        "background_refreshes": 0,
        "failures": 0,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.fetches = 2  # type: ignore[misc]


@pytest.mark.anyio
async def test_flight_reuses_a_token_usable_by_its_own_clock(anyio_backend: str) -> None:
    """A fetch that finds the cached token usable after all (the clock stepped back) reuses it."""
    clocks = Clocks()
    source = Minting(clocks)
    provider = IDTokenProvider(source, clock=clocks)
    first = await provider.atoken("a")
    clocks.here += 3600 - 5  # the caller's check: inside the expiry margin
    assert await provider.atoken("a") == first  # the flight's check: still fresh
    assert source.calls == 1
    assert provider.stats.fetches == 1


def test_background_refresh_of_a_fresh_token_fetches_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A background refresh that finds the token no longer due (the clock stepped back) ends
    without calling the source."""
    caplog.set_level(logging.DEBUG, logger="s2sauth")
    clocks = Clocks()
    source = Minting(clocks)
    provider = IDTokenProvider(source, clock=clocks, refresh_ahead=300)
    token = provider.token("a")
    clocks.here += 3600 - 200  # the caller sees the refresh window; the worker does not

    def second_refresh_started() -> bool:
        assert provider.token("a") == token
        return provider.stats.background_refreshes == 2

    # A second refresh can only start once the first has ended.
    wait_for(second_refresh_started)
    assert source.calls == 1
    assert provider.stats.fetches == 1 and provider.stats.failures == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_token_already_expired_on_arrival_warns_and_is_not_cached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A token expired by the local clock is returned once, with a WARNING about the clock,
    and fetched again on the next call."""
    caplog.set_level(logging.DEBUG, logger="s2sauth")
    source = Minting(lambda: NOW, lifetime=-60)
    provider = IDTokenProvider(source, clock=lambda: NOW)
    assert provider.token("https://a") == "token-1"
    assert provider.token("https://a") == "token-2"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    message = warnings[0].getMessage()
    assert warnings[0].name == "s2sauth"
    assert "already expired by the local clock" in message
    assert "is the system clock right?" in message and "'https://a'" in message
    assert "token-1" not in message


# --- HTTPTransport and wait_future ---------------------------------------------------------


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "http:///no-host", "127.0.0.1:80/x"])
def test_transport_rejects_urls_it_cannot_send(url: str) -> None:
    """Anything but an http(s) URL with a host is a TransportError, not a connection attempt."""
    with pytest.raises(TransportError) as caught:
        HTTPTransport()(HTTPRequest("GET", url))
    assert str(caught.value) == f"unsupported URL {url!r}: need http:// or https://"
    assert caught.value.timeout is False


@pytest.mark.parametrize(
    ("protocol", "headers"), [("HTTP/1.0", {}), ("HTTP/1.1", {"Connection": "close"})]
)
def test_transport_reopens_connections_the_server_closes(
    counting: Callable[..., CountingServer], protocol: str, headers: dict[str, str]
) -> None:
    """A server that closes after each reply (HTTP/1.0, or Connection: close) gets every
    request, each on a new connection."""
    server = counting(lambda path: (200, headers, path.encode()), protocol=protocol)
    transport = HTTPTransport()
    for path in ("/one", "/two", "/three"):
        response = transport(HTTPRequest("GET", f"http://{server.host}{path}", timeout=5))
        assert (response.status, response.body) == (200, path.encode())
    assert server.opened == 3
    transport.close()


def test_transport_https_trusts_its_context_and_nothing_else(
    counting: Callable[..., CountingServer], tls: Tls
) -> None:
    """HTTPS works with an ssl_context that trusts the server; the system store refuses it."""
    server = counting(lambda path: (200, {}, b"secure"), tls=tls.server)
    url = f"https://{server.host}/"
    trusting = HTTPTransport(ssl_context=tls.client())
    assert trusting(HTTPRequest("GET", url, timeout=5)).body == b"secure"
    trusting.close()
    with pytest.raises(TransportError) as caught:
        HTTPTransport()(HTTPRequest("GET", url, timeout=5))
    assert str(caught.value).startswith(f"could not reach {server.host}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert caught.value.timeout is False


def test_transport_keeps_at_most_8_idle_connections_per_origin(
    counting: Callable[..., CountingServer],
) -> None:
    """After 9 requests at once, 8 connections stay pooled and the 9th is closed."""
    server = counting(lambda path: (200, {}, b"ok"), barrier=threading.Barrier(9))
    transport = HTTPTransport()
    url = f"http://{server.host}/"

    def nine_at_once() -> None:
        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            replies = list(pool.map(lambda _: transport(HTTPRequest("GET", url)), range(9)))
        assert [reply.status for reply in replies] == [200] * 9

    nine_at_once()
    assert server.opened == 9
    wait_for(lambda: server.closed == 1)
    nine_at_once()
    assert server.opened == 10  # 8 pooled connections reused, one new
    wait_for(lambda: server.closed == 2)
    transport.close()


@pytest.mark.anyio
async def test_wait_future_of_a_done_future(anyio_backend: str) -> None:
    """Awaiting a future that is already done gives its result, or raises its exception."""
    done: concurrent.futures.Future[str] = concurrent.futures.Future()
    done.set_result("value")
    assert await wait_future(done) == "value"
    failed: concurrent.futures.Future[str] = concurrent.futures.Future()
    failed.set_exception(TokenFetchError("down"))
    with pytest.raises(TokenFetchError, match="down"):
        await wait_future(failed)


@pytest.mark.anyio
async def test_a_cancelled_wait_returns_at_once_and_the_work_goes_on(anyio_backend: str) -> None:
    """A task cancelled while it waits on shared work stops waiting then (under trio too);
    the work is not cancelled and others still get its result."""
    future: concurrent.futures.Future[int] = concurrent.futures.Future()
    future.set_running_or_notify_cancel()
    finisher = threading.Timer(10, future.set_result, (7,))  # only if the wait hangs on
    finisher.start()
    try:
        with anyio.move_on_after(0.05) as scope:
            await wait_future(future)
        assert scope.cancelled_caught
        assert not future.done()
    finally:
        finisher.cancel()
    future.set_result(7)
    assert await wait_future(future) == 7


def test_a_cancelled_asyncio_wait_leaves_nothing_unretrieved() -> None:
    """When work fails after its only waiter was cancelled, asyncio reports nothing."""

    async def main() -> list[str]:
        reported: list[str] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: reported.append(context["message"])
        )
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        task = asyncio.create_task(wait_future(future))
        await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        future.set_exception(TokenFetchError("down"))
        for _ in range(5):
            await asyncio.sleep(0.01)
        gc.collect()
        await asyncio.sleep(0.01)
        return reported

    assert asyncio.run(main()) == []


def test_transport_does_not_pool_a_connection_the_server_closed() -> None:
    """After an HTTP/1.0 reply the next request opens one fresh connection, and a failure
    there is not retried as if a pooled socket had gone stale."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            with conn:
                if len(accepted) == 1:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:  # every later connection is reset at once
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    transport = HTTPTransport()
    try:
        assert transport(HTTPRequest("GET", url, timeout=5)).body == b"ok"
        with pytest.raises(TransportError):
            transport(HTTPRequest("GET", url, timeout=5))
    finally:
        transport.close()
        stop.set()
        thread.join(5)
        listener.close()
    assert len(accepted) == 2
