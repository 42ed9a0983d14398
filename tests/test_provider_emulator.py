"""The outbound core against the emulator over real HTTP on loopback."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any, Literal

import anyio
import pytest

from s2sauth._errors import TokenFetchError
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import MetadataServerSource

CALLER = "caller@demo-project.iam.gserviceaccount.com"
OTHER = "other@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://callee-xyz.a.run.app"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A fresh emulator per test (its counters start at zero), exported in the environment."""
    for name in (*PROXY_VARS, "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    with Emulator(service_accounts=(CALLER, OTHER)) as emu:
        for name, value in emu.environ().items():
            monkeypatch.setenv(name, value)
        yield emu


@pytest.fixture
def provider(emulator: Emulator) -> IDTokenProvider:
    """A provider straight on the emulator's metadata server, with a short deadline."""
    return IDTokenProvider(MetadataServerSource(host=emulator.host, deadline=5.0))


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def test_token_shape(provider: IDTokenProvider) -> None:
    """A three-part JWT for the audience, carrying the email because of format=full."""
    token = provider.token(AUDIENCE)
    assert token.count(".") == 2
    claims = claims_of(token)
    assert claims["aud"] == AUDIENCE
    assert claims["email"] == CALLER
    assert claims["email_verified"] is True
    assert isinstance(claims["exp"], int)


def test_named_account(emulator: Emulator) -> None:
    """A named service account gets tokens carrying its own email."""
    token = IDTokenProvider(MetadataServerSource(OTHER, host=emulator.host)).token(AUDIENCE)
    assert claims_of(token)["email"] == OTHER


def test_one_fetch_for_many_calls(emulator: Emulator, provider: IDTokenProvider) -> None:
    """Fifty calls for one audience make one identity request."""
    tokens = {provider.token(AUDIENCE) for _ in range(50)}
    assert len(tokens) == 1
    assert emulator.counters["identity"] == 1
    assert provider.stats.cache_hits == 49


def test_default_source_finds_the_emulator(emulator: Emulator) -> None:
    """IDTokenProvider() with GCE_METADATA_HOST set pings once, then uses the metadata server."""
    provider = IDTokenProvider()
    provider.token(AUDIENCE)
    provider.token("https://another")
    assert emulator.counters["ping"] == 1
    assert emulator.counters["identity"] == 2


def test_100_threads_one_request(emulator: Emulator, provider: IDTokenProvider) -> None:
    """100 threads asking at once cause one identity request."""
    barrier = threading.Barrier(100)
    results: list[str] = []

    def ask() -> None:
        barrier.wait()
        results.append(provider.token(AUDIENCE))

    threads = [threading.Thread(target=ask) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 100 and len(set(results)) == 1
    assert emulator.counters["identity"] == 1


@pytest.mark.anyio
async def test_500_tasks_one_request(
    anyio_backend: str, emulator: Emulator, provider: IDTokenProvider
) -> None:
    """500 tasks asking at once cause one identity request."""
    results: list[str] = []

    async def ask() -> None:
        results.append(await provider.atoken(AUDIENCE))

    async with anyio.create_task_group() as tg:
        for _ in range(500):
            tg.start_soon(ask)
    assert len(results) == 500 and len(set(results)) == 1
    assert emulator.counters["identity"] == 1


def test_retries_then_success(emulator: Emulator, provider: IDTokenProvider) -> None:
    """Two 503s then a token: three requests, one token."""
    emulator.inject(statuses=(503, 503))
    assert provider.token(AUDIENCE).count(".") == 2
    assert emulator.counters["identity"] == 3


def test_retries_exhausted(emulator: Emulator) -> None:
    """503s until the deadline end in a retryable TokenFetchError that names the host."""
    emulator.inject(statuses=(503,) * 1000)
    provider = IDTokenProvider(MetadataServerSource(host=emulator.host, deadline=0.5))
    with pytest.raises(TokenFetchError) as info:
        provider.token(AUDIENCE)
    assert info.value.retryable and info.value.status == 503
    assert emulator.host in info.value.message
    assert emulator.counters["identity"] >= 2
    assert provider.stats.failures == 1


def test_unknown_account_fails_at_once(emulator: Emulator) -> None:
    """A 404 for an unknown service account is raised after one request."""
    source = MetadataServerSource("nobody@demo-project.iam.gserviceaccount.com", host=emulator.host)
    with pytest.raises(TokenFetchError) as info:
        IDTokenProvider(source).token(AUDIENCE)
    assert info.value.status == 404 and not info.value.retryable
    assert emulator.counters["identity"] == 1


@pytest.mark.parametrize("body", ["garbage", "empty", "html"])
def test_non_jwt_body_is_an_error(
    emulator: Emulator, provider: IDTokenProvider, body: Literal["garbage", "empty", "html"]
) -> None:
    """A 200 whose body is not a JWT is an error, never a token."""
    emulator.inject(body=body)
    with pytest.raises(TokenFetchError, match="ID token"):
        provider.token(AUDIENCE)


def test_reply_without_flavor_is_an_error(emulator: Emulator, provider: IDTokenProvider) -> None:
    """A reply without Metadata-Flavor: Google is not trusted."""
    emulator.inject(omit_flavor=True)
    with pytest.raises(TokenFetchError, match="did not come from the metadata server"):
        provider.token(AUDIENCE)


def test_dropped_connection_is_retried(emulator: Emulator, provider: IDTokenProvider) -> None:
    """A connection dropped without a reply is retried and the token still arrives."""
    emulator.inject(drop=1)
    assert provider.token(AUDIENCE).count(".") == 2
    emulator.clear_faults()
    assert provider.token(AUDIENCE).count(".") == 2


def test_slow_server_times_out_within_deadline(emulator: Emulator) -> None:
    """A server slower than the attempt timeout ends in a retryable timeout error."""
    emulator.inject(delay=1.0)
    source = MetadataServerSource(host=emulator.host, timeout=0.2, deadline=0.5)
    with pytest.raises(TokenFetchError, match="timed out") as info:
        source.fetch_id_token(AUDIENCE)
    assert info.value.retryable


def test_proxies_are_ignored(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every proxy variable pointing at a dead address does not stop a direct fetch."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    assert IDTokenProvider().token(AUDIENCE).count(".") == 2
    assert emulator.counters["identity"] == 1


def test_invalidate_refetches_once(emulator: Emulator, provider: IDTokenProvider) -> None:
    """After a 401 the rejected token is dropped once; later drops of it are no-ops."""
    rejected = provider.token(AUDIENCE)
    provider.invalidate(AUDIENCE, "some-other-token")
    assert provider.token(AUDIENCE) == rejected
    # Tokens minted within one second are identical; move on so the new one differs.
    emulator.clock_offset += 5
    for _ in range(5):
        provider.invalidate(AUDIENCE, rejected)
        assert provider.token(AUDIENCE) != rejected
    assert emulator.counters["identity"] == 2


def test_access_tokens_cached_per_scope_set(emulator: Emulator) -> None:
    """Access tokens are fetched once per scope set and then served from the cache."""
    provider = AccessTokenProvider(MetadataServerSource(host=emulator.host))
    default = provider.token()
    assert provider.token() == default
    scoped = provider.token(["https://www.googleapis.com/auth/pubsub", "openid"])
    assert provider.token(("openid", "https://www.googleapis.com/auth/pubsub")) == scoped
    assert emulator.counters["token"] == 2
