"""Type-checked, never run: the public API as a user writes it (mypy strict)."""

from __future__ import annotations

import httpx
import requests

import s2sauth
import s2sauth.httpx
import s2sauth.requests
from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware


def outbound(provider: s2sauth.IDTokenProvider) -> None:
    token: str = provider.token("https://receiver.example")
    session = requests.Session()
    session.auth = s2sauth.requests.IDTokenAuth(provider=provider, header="both")
    client = httpx.Client(auth=s2sauth.httpx.IDTokenAuth("https://receiver.example"))
    del token, session, client


async def outbound_async(provider: s2sauth.IDTokenProvider) -> str:
    return await provider.atoken("https://receiver.example")


def inbound(verifier: s2sauth.Verifier, token: str) -> str | None:
    caller: s2sauth.Caller = verifier.verify(token)
    return caller.email


def errors_are_typed(exc: s2sauth.S2SAuthError) -> tuple[str, str | None, int]:
    return exc.reason, exc.error, exc.status_code


def middleware_types() -> tuple[type, type]:
    return ASGIMiddleware, WSGIMiddleware
