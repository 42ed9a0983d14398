"""The values every token source returns, and the checks they share.

A token is handed around as an :class:`IDToken` or :class:`AccessToken`: the
secret ``value`` plus when it expires. Their ``repr`` never shows the value, so
a token that lands in a log line or a traceback by accident stays secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .._errors import TokenFetchError

__all__ = [
    "AccessToken",
    "AccessTokenSource",
    "IDToken",
    "IDTokenSource",
    "TokenSource",
    "id_token_expiry",
    "safe_text",
]


@dataclass(frozen=True)
class IDToken:
    """A Google-signed OIDC ID token for one audience.

    Attributes:
        value: the compact JWT, to send as ``Authorization: Bearer <value>``.
            Never shown by ``repr``.
        expires_at: the token's own ``exp``, seconds since the epoch.
    """

    value: str = field(repr=False)
    expires_at: float


@dataclass(frozen=True)
class AccessToken:
    """An OAuth 2.0 access token for a set of scopes (for calling Google APIs).

    Attributes:
        value: the opaque bearer token. Never shown by ``repr``.
        expires_at: when it expires, seconds since the epoch.
    """

    value: str = field(repr=False)
    expires_at: float


class IDTokenSource(Protocol):
    """Anything that can mint an ID token for an audience (see :mod:`s2sauth.tokens.sources`)."""

    def fetch_id_token(self, audience: str) -> IDToken:
        """Fetch a new ID token for ``audience``; raise TokenFetchError on failure."""
        ...


class AccessTokenSource(Protocol):
    """Anything that can mint an access token for a set of OAuth scopes."""

    def fetch_access_token(self, scopes: Sequence[str]) -> AccessToken:
        """Fetch a new access token for ``scopes``; raise TokenFetchError on failure."""
        ...


class TokenSource(IDTokenSource, AccessTokenSource, Protocol):
    """A source of both kinds of token, like every source in :mod:`s2sauth.tokens.sources`."""


_COMPACT_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Anything that may be a token, or a piece of one, is cut out of any text we quote from
# a server, so an echoed token never reaches a message or a log line. A *span* is a run
# of base64url text whose pieces may be joined by a dot however it is written (".",
# "%2E", "\u002e", "\x2e") or by a line break; it goes when it starts like a JWT
# ("eyJ", a JSON header) or an access token ("ya29"), or when any piece is long and
# random-looking: 16+ characters with a digit in them, or 40+ characters of any kind.
_SEPARATOR = r"(?:\.|%2[eE]|\\u002[eE]|\\x2[eE]|\r?\n[ \t]*)"
_SPAN = re.compile(rf"[A-Za-z0-9_-]+(?:{_SEPARATOR}[A-Za-z0-9_-]+)*")
_PIECES = re.compile(_SEPARATOR)
_TAG = re.compile(r"<[^>]*>")
_SAFE_TEXT_LIMIT = 200


def id_token_expiry(value: str, *, origin: str) -> float:
    """The ``exp`` of compact JWT ``value``, after checking it is one.

    Only the shape is checked (three base64url segments, a JSON payload with an
    integer ``exp``); the signature is the receiving service's business.

    Args:
        value: the token as received.
        origin: who sent it, for the error message (e.g. "the metadata server at HOST").

    Raises:
        TokenFetchError: ``value`` is not a three-part JWT with an integer ``exp``.
    """
    if not _COMPACT_JWT.fullmatch(value):
        raise TokenFetchError(
            f"{origin} did not return an ID token: the reply is not a three-part JWT"
        )
    payload = value.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise TokenFetchError(
            f"{origin} did not return an ID token: the JWT payload is not base64url JSON"
        ) from exc
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise TokenFetchError(
            f"{origin} did not return a usable ID token: its payload has no integer 'exp'"
        )
    return float(exp)


def _redact(match: re.Match[str]) -> str:
    span = match.group(0)
    if span.startswith(("eyJ", "ya29")):
        return "[redacted]"
    for piece in _PIECES.split(span):
        if len(piece) >= 40 or (len(piece) >= 16 and any(c.isdigit() for c in piece)):
            return "[redacted]"
    return span


def safe_text(text: str) -> str:
    """A server's error text made fit for a message: tags stripped, short, no token in it."""
    if "</" in text or text.lstrip().startswith("<!"):  # an HTML error page
        text = _TAG.sub(" ", text)
    text = _SPAN.sub(_redact, text)
    text = " ".join(text.split())
    if len(text) > _SAFE_TEXT_LIMIT:
        text = text[: _SAFE_TEXT_LIMIT - 3] + "..."
    return text or "(empty reply)"
