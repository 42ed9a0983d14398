"""Shared fixtures: the async backends, and the emulator as a real server on loopback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support import IAM_HOST, PROXY_VARS, CountingServer, Tls, throwaway_tls

from s2sauth.emulator import Emulator

#: A loopback port nothing listens on (the discard port).
DEAD_LOOPBACK = "127.0.0.1:9"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test on loopback: no metadata server, keys or ADC from the real world.

    Tests that need the emulator set these again themselves; any test that forgets
    meets a dead loopback port instead of metadata.google.internal, 169.254.169.254
    or Google's certs URL.
    """
    monkeypatch.setenv("GCE_METADATA_HOST", DEAD_LOOPBACK)
    monkeypatch.setenv("GCE_METADATA_IP", DEAD_LOOPBACK)
    monkeypatch.setenv("S2SAUTH_CERTS_URL", f"http://{DEAD_LOOPBACK}/oauth2/v3/certs")
    monkeypatch.setenv("S2SAUTH_IAP_KEYS_URL", f"http://{DEAD_LOOPBACK}/iap/verify/public_key-jwk")
    monkeypatch.delenv("GCE_METADATA_ROOT", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


@pytest.fixture(scope="session", autouse=True)
def _s2sauth_log_level() -> None:
    """Set the ``s2sauth`` logger's level, as an application that configures logging does.

    Otherwise the first refusal sets it to INFO (s2sauth._log makes refusals visible in
    unconfigured processes), and what a later test captures would depend on test order.
    That behaviour is tested in fresh interpreters (tests/test_refusal_log.py).
    """
    logging.getLogger("s2sauth").setLevel(logging.WARNING)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each anyio test under asyncio and under trio."""
    return str(request.param)


@pytest.fixture(scope="session")
def emulator_key() -> rsa.RSAPrivateKey:
    """One RSA-2048 key for every emulator fixture, so tests skip key generation."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """A started emulator serving a caller (the default account) and a stranger."""
    with Emulator(
        (
            "caller@demo-project.iam.gserviceaccount.com",
            "stranger@other-project.iam.gserviceaccount.com",
        ),
        signing_key=emulator_key,
    ) as running:
        yield running


@pytest.fixture
def no_outer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run without proxies, CA bundles or gcloud settings from the outer environment."""
    for name in (
        *PROXY_VARS,
        "CLOUDSDK_CONFIG",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GOOGLE_API_USE_CLIENT_CERTIFICATE",
    ):
        monkeypatch.delenv(name, raising=False)


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
    """One throwaway certificate for every TLS server of a module."""
    return throwaway_tls(tmp_path_factory.mktemp("tls"), [IAM_HOST, "127.0.0.1"])
