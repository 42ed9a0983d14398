"""Providers and sources with fakes: caching, refresh-ahead, single flight, retries, fallback."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from support import (
    Clock,
    CountingServer,
    metadata_answer,
    wait_for,
)

from s2sauth._errors import ConfigurationError, TokenFetchError
from s2sauth._http import HTTPRequest, HTTPResponse, HTTPTransport, TransportError
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import (
    AccessTokenProvider,
    IDTokenProvider,
    default_access_provider,
    default_provider,
)
from s2sauth.tokens.sources import (
    AccessToken,
    ADCSource,
    DefaultSource,
    IDToken,
    MetadataServerSource,
)

NOW = 1_700_000_000.0
HOST = "metadata.test"


class FakeSource:
    """Mints numbered tokens; can be held at a gate or made to fail."""

    def __init__(self, clock: Clock, *, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.asked: list[object] = []
        self.entered = threading.Event()
        self.gate: threading.Event | None = None
        self.error: Exception | None = None
        self._lock = threading.Lock()

    def _mint(self, key: object) -> tuple[str, float]:
        with self._lock:
            self.calls += 1
            n = self.calls
            self.asked.append(key)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.error is not None:
            raise self.error
        return f"token-{key}-{n}", self.clock() + self.lifetime

    def fetch_id_token(self, audience: str) -> IDToken:
        return IDToken(*self._mint(audience))

    def fetch_access_token(self, scopes: Sequence[str]) -> AccessToken:
        return AccessToken(*self._mint(",".join(scopes)))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt(exp: int) -> str:
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps({'exp': exp, 'aud': 'a'}).encode())}.{b64(b'sig')}"


class FakeMetadata:
    """A transport answering from a script of statuses (then 200 with a JWT)."""

    def __init__(self, script: Sequence[int | str] = (), *, then: int | str = 200) -> None:
        self.script = list(script)
        self.then = then
        self.requests: list[HTTPRequest] = []

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else self.then
        if step == "refuse":
            raise TransportError("connection refused")
        if step == "timeout":
            raise TransportError("timed out", timeout=True)
        assert isinstance(step, int)
        flavor = {"metadata-flavor": "Google"}
        if step != 200:
            return HTTPResponse(step, flavor, b"not found: unknown service account")
        if request.url.endswith("/"):
            return HTTPResponse(200, flavor, b"")
        if "/token?" in request.url:
            body = json.dumps({"access_token": "ya29.fake", "expires_in": 3599}).encode()
            return HTTPResponse(200, flavor, body)
        return HTTPResponse(200, flavor, fake_jwt(int(time.time()) + 3600).encode())


@pytest.fixture
def clock() -> Clock:
    """A fake clock at a fixed instant."""
    return Clock(NOW)


@pytest.fixture
def source(clock: Clock) -> FakeSource:
    """A fake token source on the fake clock."""
    return FakeSource(clock)


# --- caching ------------------------------------------------------------------


def test_token_is_cached_per_audience(clock: Clock, source: FakeSource) -> None:
    """The second call for an audience is a cache hit; another audience is its own fetch."""
    provider = IDTokenProvider(source, clock=clock)
    first = provider.token("https://a")
    assert provider.token("https://a") == first
    assert provider.token("https://b") != first
    assert source.asked == ["https://a", "https://b"]
    assert provider.stats.fetches == 2
    assert provider.stats.cache_hits == 1
    assert dataclasses.asdict(provider.stats) == {
        "fetches": 2,
        "cache_hits": 1,
        "background_refreshes": 0,
        "failures": 0,
    }


def test_the_least_recently_used_audience_is_forgotten_past_the_bound(
    clock: Clock, source: FakeSource
) -> None:
    """The token cache holds at most 1024 audiences; the least recently used goes first."""
    provider = IDTokenProvider(source, clock=clock)
    provider.token("https://first")
    provider.token("https://kept")
    for n in range(1022):
        provider.token(f"https://filler-{n}")
    provider.token("https://first")  # a hit: now the most recently used
    provider.token("https://one-too-many")  # evicts https://kept, the least recently used
    fetches = provider.stats.fetches
    provider.token("https://first")
    assert provider.stats.fetches == fetches
    provider.token("https://kept")
    assert provider.stats.fetches == fetches + 1


def test_constructor_does_no_io() -> None:
    """Building providers and sources touches nothing until a token is asked for."""
    transport = FakeMetadata()
    IDTokenProvider(MetadataServerSource(host=HOST, transport=transport))
    IDTokenProvider(DefaultSource(metadata=MetadataServerSource(host=HOST, transport=transport)))
    AccessTokenProvider()
    assert transport.requests == []


def test_stale_token_served_and_refreshed_once_in_background(
    clock: Clock, source: FakeSource
) -> None:
    """Inside the refresh window the cached token is returned and one background refresh runs."""
    provider = IDTokenProvider(source, clock=clock, refresh_ahead=300)
    old = provider.token("a")
    clock.now += 3600 - 200  # 200 s left: stale, still well usable
    source.gate = threading.Event()
    source.entered.clear()
    for _ in range(20):
        assert provider.token("a") == old
    assert source.entered.wait(10)
    assert source.calls == 2
    assert provider.stats.background_refreshes == 1
    source.gate.set()
    wait_for(lambda: provider.token("a") != old)
    assert source.calls == 2
    assert provider.stats.fetches == 2


def test_failed_background_refresh_keeps_token_and_warns(
    clock: Clock, source: FakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    """A background refresh that fails logs a warning and the valid token keeps being served."""
    caplog.set_level(logging.DEBUG, logger="s2sauth")
    provider = IDTokenProvider(source, clock=clock)
    old = provider.token("https://a")
    clock.now += 3600 - 100
    source.error = TokenFetchError("metadata server on fire", retryable=True)
    assert provider.token("https://a") == old
    wait_for(lambda: provider.stats.failures == 1)
    wait_for(lambda: any(r.levelno == logging.WARNING for r in caplog.records))
    assert provider.token("https://a") == old
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0].name == "s2sauth"
    assert "metadata server on fire" in warnings[0].getMessage()
    assert "https://a" in warnings[0].getMessage()
    assert all(old not in r.getMessage() for r in caplog.records)


def test_expired_token_is_refetched(clock: Clock, source: FakeSource) -> None:
    """Past its usable life (seconds before exp) a token is fetched again in the foreground."""
    provider = IDTokenProvider(source, clock=clock)
    old = provider.token("a")
    clock.now += 3600 - 5  # inside the safety margin before exp
    new = provider.token("a")
    assert new != old
    assert source.calls == 2
    assert provider.stats.background_refreshes == 0


def test_expired_fetch_failure_raises(clock: Clock, source: FakeSource) -> None:
    """With no usable token, a failing source's error reaches the caller and is counted."""
    provider = IDTokenProvider(source, clock=clock)
    source.error = TokenFetchError("nope", status=404)
    with pytest.raises(TokenFetchError, match="nope"):
        provider.token("a")
    assert provider.stats.failures == 1


def test_short_lived_token_does_not_refresh_on_every_call(clock: Clock) -> None:
    """A token shorter-lived than refresh_ahead is refreshed at half-life, not on every call."""
    source = FakeSource(clock, lifetime=120)
    provider = IDTokenProvider(source, clock=clock, refresh_ahead=300)
    provider.token("a")
    clock.now += 30
    provider.token("a")
    assert provider.stats.background_refreshes == 0
    assert source.calls == 1


def test_invalidate_only_drops_the_named_token(clock: Clock, source: FakeSource) -> None:
    """invalidate(token) is a no-op when the cache already holds another token."""
    provider = IDTokenProvider(source, clock=clock)
    first = provider.token("a")
    provider.invalidate("a", "some-other-token")
    assert provider.token("a") == first
    provider.invalidate("a", first)
    second = provider.token("a")
    assert second != first
    provider.invalidate("a", first)  # late caller with the old token: no effect
    assert provider.token("a") == second
    provider.invalidate("a")
    assert provider.token("a") not in (first, second)
    assert source.calls == 3


def test_many_401s_with_one_token_cause_one_refetch(clock: Clock, source: FakeSource) -> None:
    """64 threads that all saw a 401 with the same token trigger exactly one refetch."""
    provider = IDTokenProvider(source, clock=clock)
    rejected = provider.token("a")
    barrier = threading.Barrier(64)
    results: list[str] = []

    def on_401() -> None:
        barrier.wait()
        provider.invalidate("a", rejected)
        results.append(provider.token("a"))

    threads = [threading.Thread(target=on_401) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert source.calls == 2
    assert len(set(results)) == 1 and rejected not in results


def test_bad_arguments(source: FakeSource) -> None:
    """Empty audiences, empty scopes and negative refresh windows are configuration errors."""
    with pytest.raises(ConfigurationError):
        IDTokenProvider(source, refresh_ahead=-1)
    provider = IDTokenProvider(source)
    for bad in ("", "  ", None, 42):
        with pytest.raises(ConfigurationError):
            provider.token(bad)  # type: ignore[arg-type]
    access = AccessTokenProvider(source)
    for scopes in ((), [""], [None]):
        with pytest.raises(ConfigurationError):
            access.token(scopes)  # type: ignore[arg-type]
    assert source.calls == 0


def test_token_never_in_repr_or_debug_logs(
    clock: Clock, source: FakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    """Debug logs name the audience but never the token; token values do not show in repr."""
    caplog.set_level(logging.DEBUG, logger="s2sauth")
    provider = IDTokenProvider(source, clock=clock)
    token = provider.token("https://aud")
    provider.token("https://aud")
    provider.invalidate("https://aud")
    assert caplog.records
    assert any("https://aud" in r.getMessage() for r in caplog.records)
    assert all(token not in r.getMessage() for r in caplog.records)
    assert "secret" not in repr(IDToken("secret", 1.0))
    assert "secret" not in repr(AccessToken("secret", 1.0))


# --- access tokens ------------------------------------------------------------


def test_access_tokens_cached_per_scope_set(clock: Clock, source: FakeSource) -> None:
    """Scope order and duplicates do not matter; a lone string is one scope."""
    provider = AccessTokenProvider(source, clock=clock)
    default = provider.token()
    assert provider.token(["https://www.googleapis.com/auth/cloud-platform"]) == default
    both = provider.token(["b", "a", "a"])
    assert provider.token(("a", "b")) == both
    assert provider.token("a") != both
    assert source.asked == ["https://www.googleapis.com/auth/cloud-platform", "a,b", "a"]
    provider.invalidate(["a", "b"], both)
    assert provider.token(["a", "b"]) != both


# --- single flight --------------------------------------------------------------


def test_100_threads_one_fetch(clock: Clock, source: FakeSource) -> None:
    """100 threads asking at once for a missing token cause exactly one fetch."""
    provider = IDTokenProvider(source, clock=clock)
    source.gate = threading.Event()
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(provider.token("a"))) for _ in range(100)
    ]
    for t in threads:
        t.start()
    assert source.entered.wait(10)
    source.gate.set()
    for t in threads:
        t.join()
    assert source.calls == 1
    assert len(results) == 100 and len(set(results)) == 1


def test_concurrent_failure_reaches_every_waiter(clock: Clock, source: FakeSource) -> None:
    """When the one fetch fails, every thread waiting on it gets the error, and it ran once."""
    provider = IDTokenProvider(source, clock=clock)
    source.gate = threading.Event()
    source.error = TokenFetchError("down", retryable=True)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            provider.token("a")
        except TokenFetchError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    assert source.entered.wait(10)
    source.gate.set()
    for t in threads:
        t.join()
    assert len(errors) == 20
    assert source.calls <= 20 and provider.stats.failures == source.calls


def test_token_future_never_blocks(clock: Clock, source: FakeSource) -> None:
    """token_future returns at once: pending while the one fetch runs, done on a cache hit."""
    provider = IDTokenProvider(source, clock=clock)
    source.gate = threading.Event()
    pending = [provider.token_future("a") for _ in range(20)]  # the fetch is held at the gate
    assert source.entered.wait(10)
    assert not any(future.done() for future in pending)
    assert not pending[0].cancel()
    source.gate.set()
    assert {future.result(10) for future in pending} == {"token-a-1"}
    hit = provider.token_future("a")
    assert hit.done() and hit.result() == "token-a-1"
    assert source.calls == 1 and provider.stats.cache_hits == 1


def test_token_future_carries_the_failure(clock: Clock, source: FakeSource) -> None:
    """A failed fetch is the future's exception; a bad audience raises at once."""
    provider = IDTokenProvider(source, clock=clock)
    source.error = TokenFetchError("down", retryable=True)
    with pytest.raises(TokenFetchError, match="down"):
        provider.token_future("a").result(10)
    with pytest.raises(ConfigurationError):
        provider.token_future("")


def test_default_provider_is_shared() -> None:
    """default_provider() and default_access_provider() each return one shared instance."""
    seen: list[tuple[IDTokenProvider, AccessTokenProvider]] = []
    threads = [
        threading.Thread(
            target=lambda: seen.append((default_provider(), default_access_provider()))
        )
        for _ in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(p) for p, _ in seen}) == 1
    assert len({id(a) for _, a in seen}) == 1
    assert isinstance(default_provider(), IDTokenProvider)
    assert isinstance(default_access_provider(), AccessTokenProvider)


# --- metadata server source with a fake transport ---------------------------------


def test_metadata_source_sends_the_right_request() -> None:
    """The source asks the configured host, with format=full and the flavor header."""
    transport = FakeMetadata()
    token = MetadataServerSource(host=HOST, transport=transport).fetch_id_token("https://x")
    assert token.value.count(".") == 2
    (request,) = transport.requests
    assert request.url.startswith(f"http://{HOST}/computeMetadata/v1/instance/service-accounts/")
    assert "format=full" in request.url
    assert request.headers["Metadata-Flavor"] == "Google"


def test_metadata_host_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a host argument, GCE_METADATA_HOST is read at use."""
    transport = FakeMetadata()
    source = MetadataServerSource(transport=transport)
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9999")
    source.fetch_id_token("a")
    assert transport.requests[0].url.startswith("http://127.0.0.1:9999/")


def test_retries_then_success() -> None:
    """Two 503s then a token: three attempts, one token."""
    transport = FakeMetadata([503, 503])
    source = MetadataServerSource(host=HOST, transport=transport)
    assert source.fetch_id_token("a").value.count(".") == 2
    assert len(transport.requests) == 3


@pytest.mark.parametrize("failure", [408, 429, 500, "refuse", "timeout"])
def test_each_transient_failure_is_retried(failure: int | str) -> None:
    """Timeouts, refused connections, 408, 429 and 5xx are retried."""
    transport = FakeMetadata([failure])
    MetadataServerSource(host=HOST, transport=transport).fetch_access_token(["s"])
    assert len(transport.requests) == 2


def test_retries_exhausted_within_deadline() -> None:
    """Endless 503s end in a retryable TokenFetchError naming host, attempts and last error."""
    transport = FakeMetadata(then=503)
    source = MetadataServerSource(host=HOST, transport=transport, deadline=0.3)
    with pytest.raises(TokenFetchError) as info:
        source.fetch_id_token("a")
    exc = info.value
    attempts = len(transport.requests)
    assert attempts >= 2
    assert exc.retryable and exc.status == 503
    assert HOST in exc.message
    assert f"after {attempts} attempt(s)" in exc.message
    assert "HTTP 503" in exc.message
    assert all(r.timeout <= 0.3 for r in transport.requests)


def test_404_is_not_retried() -> None:
    """An unknown service account fails at once, after one attempt, with the server's text."""
    transport = FakeMetadata(then=404)
    source = MetadataServerSource(
        "nobody@x.iam.gserviceaccount.com", host=HOST, transport=transport
    )
    with pytest.raises(TokenFetchError, match="unknown service account") as info:
        source.fetch_id_token("a")
    assert info.value.status == 404 and not info.value.retryable
    assert len(transport.requests) == 1


def test_source_configuration_errors() -> None:
    """An empty account or a non-positive deadline is rejected at construction."""
    with pytest.raises(ConfigurationError):
        MetadataServerSource("")
    with pytest.raises(ConfigurationError):
        MetadataServerSource(deadline=0)


# --- DefaultSource ------------------------------------------------------------------


def test_default_source_falls_back_to_adc(clock: Clock) -> None:
    """When no metadata server accepts a connection, ADC is used and remembered."""
    transport = FakeMetadata(then="refuse")
    adc = FakeSource(clock)
    source = DefaultSource(metadata=MetadataServerSource(host=HOST, transport=transport), adc=adc)
    assert source.fetch_id_token("a").value == "token-a-1"
    assert source.fetch_access_token(["s"]).value == "token-s-2"
    assert len(transport.requests) == 1  # one ping, then remembered
    assert source.chosen is adc


def test_default_source_non_metadata_reply_falls_back(clock: Clock) -> None:
    """Something answering without Metadata-Flavor is not a metadata server: ADC is used."""
    adc = FakeSource(clock)

    def captive_portal(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(200, {"content-type": "text/html"}, b"<html>log in</html>")

    metadata = MetadataServerSource(host=HOST, transport=captive_portal)
    source = DefaultSource(metadata=metadata, adc=adc)
    assert source.fetch_id_token("a").value == "token-a-1"


def test_default_source_uses_metadata_when_it_answers(clock: Clock) -> None:
    """A metadata server that answers the ping is used, and ADC is never asked."""
    transport = FakeMetadata()
    adc = FakeSource(clock)
    metadata = MetadataServerSource(host=HOST, transport=transport)
    source = DefaultSource(metadata=metadata, adc=adc)
    source.fetch_id_token("a")
    source.fetch_id_token("b")
    assert adc.calls == 0
    assert source.chosen is metadata
    assert [r.url.endswith("/") for r in transport.requests] == [True, False, False]


def test_default_source_does_not_mask_metadata_errors(clock: Clock) -> None:
    """A 404 from a metadata server that answered is raised, not hidden by the ADC fallback."""
    transport = FakeMetadata([200], then=404)
    adc = FakeSource(clock)
    source = DefaultSource(metadata=MetadataServerSource(host=HOST, transport=transport), adc=adc)
    with pytest.raises(TokenFetchError) as info:
        source.fetch_id_token("a")
    assert info.value.status == 404
    assert adc.calls == 0


def test_default_source_neither_works(clock: Clock) -> None:
    """With no metadata server and no ADC the error lists both and says what to do."""
    adc = FakeSource(clock)
    adc.error = TokenFetchError("no Application Default Credentials found")
    transport = FakeMetadata(then="refuse")
    source = DefaultSource(metadata=MetadataServerSource(host=HOST, transport=transport), adc=adc)
    with pytest.raises(TokenFetchError) as info:
        source.fetch_id_token("a")
    message = info.value.message
    assert "metadata server" in message and HOST in message and "connection refused" in message
    assert "Application Default Credentials" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message and "s2sauth emulator" in message
    # Nothing was remembered: the next call tries again, and can succeed.
    adc.error = None
    assert source.fetch_id_token("a").value.startswith("token-a-")
    assert len(transport.requests) == 2


# --- ADCSource without network --------------------------------------------------------


def test_adc_user_credentials_cannot_mint_id_tokens(tmp_path: Path) -> None:
    """gcloud user credentials give an error that suggests impersonation or a key file."""
    path = tmp_path / "adc.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "id",
                "client_secret": "secret",
                "refresh_token": "refresh",
            }
        )
    )
    with pytest.raises(TokenFetchError) as info:
        ADCSource(str(path)).fetch_id_token("https://a")
    assert "--impersonate-service-account" in info.value.message
    assert "key file" in info.value.message


def test_adc_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GOOGLE_APPLICATION_CREDENTIALS and no gcloud file: an error that says what to set."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    with pytest.raises(TokenFetchError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        ADCSource().fetch_id_token("https://a")
    with pytest.raises(TokenFetchError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        ADCSource().fetch_access_token(["s"])


def test_adc_bad_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A missing or unreadable credentials file is a TokenFetchError naming it."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(TokenFetchError, match="missing.json"):
        ADCSource().fetch_id_token("a")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(TokenFetchError, match="broken.json"):
        ADCSource(broken).fetch_id_token("a")
    other = tmp_path / "gdch.json"
    other.write_text(json.dumps({"type": "gdch_service_account"}))
    with pytest.raises(TokenFetchError, match="cannot mint ID tokens"):
        ADCSource(other).fetch_id_token("a")


# --- async ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_500_tasks_one_fetch(anyio_backend: str, clock: Clock, source: FakeSource) -> None:
    """500 tasks asking at once for a missing token cause exactly one fetch, off the loop."""
    provider = IDTokenProvider(source, clock=clock)
    source.gate = threading.Event()
    results: list[str] = []

    async def ask() -> None:
        results.append(await provider.atoken("a"))

    async with anyio.create_task_group() as tg:
        for _ in range(500):
            tg.start_soon(ask)
        # The loop stays free while the fetch is held at the gate in a worker thread.
        assert await anyio.to_thread.run_sync(source.entered.wait, 10)
        await anyio.sleep(0)
        source.gate.set()
    assert source.calls == 1
    assert len(results) == 500 and len(set(results)) == 1


@pytest.mark.anyio
async def test_atoken_cache_and_refresh_ahead(
    anyio_backend: str, clock: Clock, source: FakeSource
) -> None:
    """atoken serves from the cache and refreshes ahead in the background like token()."""
    provider = AccessTokenProvider(source, clock=clock)
    first = await provider.atoken(["s"])
    assert await provider.atoken(["s"]) == first
    clock.now += 3600 - 60
    assert await provider.atoken(["s"]) == first
    while provider.stats.fetches < 2 or (await provider.atoken(["s"])) == first:
        await anyio.sleep(0.002)
    assert provider.stats.background_refreshes == 1
    assert source.calls == 2


@pytest.mark.anyio
async def test_threads_and_tasks_share_one_fetch(
    anyio_backend: str, clock: Clock, source: FakeSource
) -> None:
    """A thread and tasks asking together still share a single fetch."""
    provider = IDTokenProvider(source, clock=clock)
    source.gate = threading.Event()
    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(provider.token("a")))
    thread.start()
    assert await anyio.to_thread.run_sync(source.entered.wait, 10)

    async def ask() -> None:
        results.append(await provider.atoken("a"))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(ask)
        await anyio.sleep(0)
        source.gate.set()
    await anyio.to_thread.run_sync(thread.join)
    assert source.calls == 1
    assert len(results) == 11 and len(set(results)) == 1


# -- helpers of the tests below ------------------------------------------------------------


AUDIENCE = "https://callee-xyz.a.run.app"


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


# -- MetadataServerSource ------------------------------------------------------------------


@pytest.mark.usefixtures("no_outer_settings")
def test_metadata_source_repr_names_account_and_host() -> None:
    """repr shows the account and the host the next call goes to."""
    source = MetadataServerSource(" sa@p.iam.gserviceaccount.com ", host="10.0.0.1:8080")
    assert repr(source) == (
        "MetadataServerSource(account='sa@p.iam.gserviceaccount.com', host='10.0.0.1:8080')"
    )


@pytest.mark.usefixtures("no_outer_settings")
@pytest.mark.parametrize("host", ["", "  ", "http://", "10.0.0.1/path", "http://a/b/"])
def test_metadata_source_refuses_a_host_that_is_not_one(host: str) -> None:
    """A host that is empty or carries a path is a ConfigurationError, not a 10 s retry loop."""
    with pytest.raises(ConfigurationError, match="host must be the metadata server's host"):
        MetadataServerSource(host=host)


@pytest.mark.usefixtures("no_outer_settings")
def test_metadata_source_tidies_its_host_like_the_environment_variable() -> None:
    """A host given as a URL is used as host[:port], as GCE_METADATA_HOST would be."""
    source = MetadataServerSource(host=" http://10.0.0.1:8080/ ")
    assert repr(source) == "MetadataServerSource(account='default', host='10.0.0.1:8080')"


@pytest.mark.usefixtures("no_outer_settings")
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


# -- DefaultSource and the providers -------------------------------------------------------


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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


# -- the token cache -----------------------------------------------------------------------


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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


@pytest.mark.usefixtures("no_outer_settings")
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
