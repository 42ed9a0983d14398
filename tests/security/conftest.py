"""Fixtures of the security suites: one emulator, verifier and set of real servers per module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from attack_kit import AUDIENCE, CALLER, STRANGER, Forge, soak
from cryptography.hazmat.primitives.asymmetric import rsa

from s2sauth._http import HTTPTransport
from s2sauth.emulator import Emulator


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The metadata server and certs endpoint on loopback, one per module.

    Faults and key rotations stay inside the module; the key is the session's.
    """
    with Emulator(service_accounts=(CALLER, STRANGER), signing_key=emulator_key) as running:
        yield running


@pytest.fixture(scope="module")
def forge(emulator: Emulator) -> Forge:
    """Crafts tokens with the emulator's signing key."""
    return Forge.from_emulator(emulator)


@pytest.fixture(scope="module")
def transport() -> Iterator[HTTPTransport]:
    """One pooled transport for the module's key and token fetches, closed at the end."""
    pool = HTTPTransport()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def verifier(emulator: Emulator, transport: HTTPTransport) -> Any:
    """A verifier for ``AUDIENCE`` allowing only ``CALLER``, trusting the emulator's keys."""
    from s2sauth.verify.verifier import Verifier

    return Verifier(
        AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url, transport=transport
    )


def flask_app(verifier: Any) -> Any:
    """A Flask app whose one view is behind ``require_id_token``."""
    import flask

    from s2sauth.flask import require_id_token

    app = flask.Flask("s2sauth-security")

    @app.get("/")
    @require_id_token(verifier=verifier)
    def index() -> dict[str, Any]:
        return {"email": flask.g.caller.email}

    return app


def fastapi_app(verifier: Any) -> Any:
    """A FastAPI app whose one route depends on ``IDTokenBearer``."""
    from fastapi import Depends, FastAPI

    from s2sauth.fastapi import IDTokenBearer
    from s2sauth.verify.caller import Caller

    app = FastAPI()
    bearer = IDTokenBearer(verifier)

    @app.get("/")
    async def index(caller: Caller = Depends(bearer)) -> dict[str, Any]:  # noqa: B008
        return {"email": caller.email}

    return app


@pytest.fixture(scope="module")
def servers(verifier: Any) -> Iterator[dict[str, str]]:
    """Base URLs of real servers, each behind one inbound adapter sharing ``verifier``.

    ``asgi`` (uvicorn), ``wsgi`` (waitress), ``flask`` (waitress), ``fastapi`` (uvicorn).
    """
    from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
    from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

    with contextlib.ExitStack() as stack:
        yield {
            "asgi": stack.enter_context(
                soak.serve_asgi(ASGIMiddleware(soak.asgi_app, verifier=verifier))
            ),
            "wsgi": stack.enter_context(
                soak.serve_wsgi(WSGIMiddleware(soak.wsgi_app, verifier=verifier))
            ),
            "flask": stack.enter_context(soak.serve_wsgi(flask_app(verifier))),
            "fastapi": stack.enter_context(soak.serve_asgi(fastapi_app(verifier))),
        }
