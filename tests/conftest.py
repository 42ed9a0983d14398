"""Shared fixtures: the async backends, and the emulator as a real server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from s2sauth.emulator import Emulator


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
