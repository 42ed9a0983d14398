"""The verified caller: what a receiving service learns about who called it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Caller:
    """A caller whose ID token verified.

    Adapters put it where each framework's users look for it:
    ``request.state.caller`` (ASGI), ``environ["s2sauth.caller"]`` (WSGI),
    ``flask.g.caller``, or the value of the FastAPI dependency.

    Attributes:
        email: the service account's email (``None`` for a token minted without
            ``format=full``, or whose ``email_verified`` is not ``true``).
        subject: the account's stable numeric unique ID (``sub``).
        audience: the audience the token was issued for.
        issued_at: ``iat``, timezone-aware UTC.
        expires_at: ``exp``, timezone-aware UTC.
        claims: every claim of the token, read-only.
    """

    email: str | None
    subject: str
    audience: str
    issued_at: datetime
    expires_at: datetime
    claims: Mapping[str, Any]

    def __repr__(self) -> str:
        # Keep reprs short and free of anything token-like.
        return f"Caller(email={self.email!r}, subject={self.subject!r}, audience={self.audience!r})"
