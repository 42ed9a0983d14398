"""Warming at startup: keys for a receiver, tokens for a caller, ASGI lifespan."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from s2sauth import IDTokenProvider, KeyFetchError, MetadataServerSource, Verifier
from s2sauth.asgi import IDTokenMiddleware
from s2sauth.emulator import Emulator

AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
DEAD_CERTS = "http://127.0.0.1:9/oauth2/v3/certs"


def test_verifier_warm_fetches_the_keys_before_any_request(emulator: Emulator) -> None:
    """warm() fetches the key set once; the first verification then fetches nothing."""
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url)
    verifier.warm()
    assert verifier.stats.key_fetches == 1
    verifier.verify(emulator.mint(AUDIENCE, account=CALLER))
    assert verifier.stats.key_fetches == 1


def test_verifier_warm_says_when_keys_cannot_be_had() -> None:
    """warm() raises KeyFetchError when the keys endpoint does not answer."""
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=DEAD_CERTS)
    with pytest.raises(KeyFetchError):
        verifier.warm()


def test_provider_warm_fetches_each_audience_once(emulator: Emulator) -> None:
    """IDTokenProvider.warm fetches a token per audience; later calls are cache hits."""
    provider = IDTokenProvider(MetadataServerSource(host=emulator.host))
    provider.warm([AUDIENCE, "https://other.example"])
    assert provider.stats.fetches == 2
    provider.token(AUDIENCE)
    assert (provider.stats.fetches, provider.stats.cache_hits) == (2, 1)


@pytest.mark.anyio
async def test_provider_awarm_fetches_each_audience(emulator: Emulator) -> None:
    """awarm is warm for asyncio and trio."""
    provider = IDTokenProvider(MetadataServerSource(host=emulator.host))
    await provider.awarm([AUDIENCE])
    assert provider.stats.fetches == 1


async def _run_lifespan(middleware: IDTokenMiddleware) -> list[str]:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


def _lifespan_app(seen: list[int], verifier: Verifier) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                seen.append(verifier.stats.key_fetches)  # what the app sees at its startup
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


@pytest.mark.anyio
async def test_asgi_lifespan_startup_fetches_keys_first(emulator: Emulator) -> None:
    """Lifespan passes through; the app's startup runs after the keys were fetched."""
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url)
    seen: list[int] = []
    middleware = IDTokenMiddleware(_lifespan_app(seen, verifier), verifier=verifier)
    sent = await _run_lifespan(middleware)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert seen == [1]


@pytest.mark.anyio
async def test_asgi_lifespan_without_warming_or_keys(caplog: pytest.LogCaptureFixture) -> None:
    """warm=False fetches nothing; unreachable keys are logged and startup goes on."""
    for warm, fetches in ((False, 0), (True, 1)):
        verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=DEAD_CERTS)
        seen: list[int] = []
        app = _lifespan_app(seen, verifier)
        with caplog.at_level(logging.WARNING, logger="s2sauth"):
            await _run_lifespan(IDTokenMiddleware(app, verifier=verifier, warm=warm))
        assert seen == [fetches]
    assert "could not fetch verification keys at startup" in caplog.text
