"""The request-level check every inbound adapter shares, free of any framework.

An adapter (ASGI, WSGI, Flask, FastAPI) only translates shapes: it hands a
:class:`Gate` the request's method, path and authorization header values, and
turns a :class:`Denial` into its framework's response. Everything else lives
here, once:

* **Where the token is.** ``X-Serverless-Authorization`` when it carries an
  intact signature, else ``Authorization``. When Cloud Run's IAM check already
  consumed ``X-Serverless-Authorization`` (its signature reads
  ``SIGNATURE_REMOVED_BY_GOOGLE``), an intact ``Authorization`` bearer token is
  preferred; otherwise the stripped token goes to the verifier, which accepts
  it only with ``trust_cloud_run_iam=True``.
* **Bearer parsing.** ``Authorization.from_header`` semantics: the scheme is
  case-insensitive and ends at the first space; the rest, stripped, is the
  token. A header with no ``Bearer`` scheme at all (absent, empty, ``Basic``,
  a bare word) is a :class:`MissingTokenError`: the client did not try bearer
  authentication, so the challenge carries no error code (RFC 6750 §3.1). A
  repeated header, or a ``Bearer`` value that is empty, not ASCII, or holds a
  space or comma (two tokens, or repeated headers a server joined), is a
  :class:`MalformedTokenError`. Every other syntax check is the verifier's
  strict parser's, done once per token before any cryptography.
* **Which callers.** The route policy: exempt paths, per-route rules, the
  default allow-list.
* **What to answer.** 401 + ``WWW-Authenticate`` for a bad or missing token,
  403 for a caller not allowed, 503 + ``Retry-After`` when no keys can be had;
  short JSON bodies that never hold the token, and no stack traces. Any
  unexpected exception inside verification is logged (without the token) and
  answered as an invalid token: bad input of any shape is a 401, never a 500.
"""

from __future__ import annotations

import http
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import _log as _refusals
from .._errors import (
    CallerNotAllowedError,
    ConfigurationError,
    InvalidTokenError,
    KeyFetchError,
    MalformedTokenError,
    MissingTokenError,
    S2SAuthError,
)
from .caller import Caller
from .policy import EXEMPT, CallerPolicy, Resolution, RoutePolicy, Rule

if TYPE_CHECKING:  # pragma: no cover
    from .verifier import Verifier

__all__ = [
    "DEFAULT_REALM",
    "EXEMPT",
    "SERVERLESS_HEADER",
    "SIGNATURE_REMOVED",
    "Denial",
    "Gate",
    "denial",
    "find_token",
    "parse_bearer",
]

_log = logging.getLogger(__name__)

#: The realm named in ``WWW-Authenticate`` challenges unless configured otherwise.
DEFAULT_REALM = "s2sauth"
#: The header Cloud Run checks (and strips the signature of) when both are sent.
SERVERLESS_HEADER = "X-Serverless-Authorization"
#: What Cloud Run puts in place of the signature of a token it already checked.
SIGNATURE_REMOVED = "SIGNATURE_REMOVED_BY_GOOGLE"

# What may stand inside a quoted-string of a header: printable ASCII and space.
_PRINTABLE = re.compile(r"[\x20-\x7e]*")

# Short, fixed texts per reason: safe to send (no token, no configuration), and
# valid RFC 6750 error_description characters (no '"' or '\').
_DESCRIPTIONS = {
    "missing_token": "no bearer token in the request",
    "malformed": "the bearer token is not a well-formed JWT",
    "invalid_header": "the token header is not acceptable",
    "unknown_key": "the token is signed with an unknown key",
    "bad_signature": "the token signature does not verify",
    "signature_removed": "the token signature was removed and this service does not trust that",
    "expired": "the token has expired",
    "not_yet_valid": "the token is not valid yet",
    "issuer_mismatch": "the token issuer is not accepted",
    "audience_mismatch": "the token is for another audience",
    "invalid_claims": "the token claims are not acceptable",
    "invalid_token": "the token is not acceptable",
    "caller_not_allowed": "this caller is not allowed",
    "keys_unavailable": "verification keys are unavailable, try again later",
}


def parse_bearer(value: str, *, header: str = "Authorization") -> str:
    """The token of a ``Bearer <token>`` header value.

    Use it to read a header by hand; adapters call :func:`find_token`.

    Args:
        value: the header value as received (latin-1 decoded, any junk allowed).
        header: the header's name, for the error message.

    Raises:
        MissingTokenError: the value names no ``Bearer`` scheme at all.
        MalformedTokenError: ``Bearer`` with an empty value, non-ASCII text, or
            more than one token (a space or comma inside).
    """
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingTokenError(f"the {header} header carries no Bearer token")
    credentials = credentials.strip()
    # Cheap checks only: this runs on every request, even those the verified-token
    # cache answers; the verifier parses anything new strictly.
    if not credentials or not credentials.isascii() or " " in credentials or "," in credentials:
        raise MalformedTokenError(
            f"the {header} header must be 'Bearer <token>' with exactly one token"
        )
    return credentials


def _signature_removed(token: str) -> bool:
    return token.rpartition(".")[2] == SIGNATURE_REMOVED


def find_token(authorization: Sequence[str] = (), serverless: Sequence[str] = ()) -> str:
    """The bearer token a request carries, from the header the design says to trust.

    Use it when writing an adapter for another framework.

    Args:
        authorization: every ``Authorization`` header value of the request.
        serverless: every ``X-Serverless-Authorization`` header value.

    Raises:
        MissingTokenError: no bearer token in either header.
        MalformedTokenError: a repeated header (ambiguous), or a junk ``Bearer`` value.
    """
    if len(authorization) > 1:
        raise MalformedTokenError("the request has more than one Authorization header; send one")
    if len(serverless) > 1:
        raise MalformedTokenError(
            f"the request has more than one {SERVERLESS_HEADER} header; send one"
        )
    if serverless and serverless[0].strip():
        try:
            token = parse_bearer(serverless[0], header=SERVERLESS_HEADER)
        except MissingTokenError:
            raise MalformedTokenError(
                f"the {SERVERLESS_HEADER} header must be 'Bearer <token>'"
            ) from None
        if not _signature_removed(token):
            return token
        # Cloud Run checked X-Serverless-Authorization and passed Authorization through
        # intact: a token whose signature we can check beats one we must take on trust.
        if authorization:
            try:
                intact = parse_bearer(authorization[0])
            except InvalidTokenError:
                return token
            if not _signature_removed(intact):
                return intact
        return token
    if not authorization:
        raise MissingTokenError(
            "the request carries no Authorization header; send 'Authorization: Bearer <ID token>'"
        )
    return parse_bearer(authorization[0])


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Denial:
    """The response an adapter sends for a rejected request.

    Attributes:
        status: 401, 403 or 503.
        headers: every header to send (``Content-Type``, ``Content-Length``,
            ``Cache-Control``, and ``WWW-Authenticate`` or ``Retry-After``).
        payload: the JSON body as a mapping: ``error``, ``reason``, ``detail``.
        body: ``payload`` encoded.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    payload: Mapping[str, str]
    body: bytes

    @property
    def status_line(self) -> str:
        """``"401 Unauthorized"``, as a WSGI ``start_response`` wants it."""
        return f"{self.status} {http.HTTPStatus(self.status).phrase}"


def denial(exc: S2SAuthError, *, realm: str = DEFAULT_REALM) -> Denial:
    """The response for a rejection.

    Use it in an ``on_error`` hook to keep the standard answer for some errors.

    Args:
        exc: what :meth:`Gate.authenticate` raised. Anything that is not an
            invalid token, a caller not allowed or missing keys counts as an
            invalid token.
        realm: the realm of the ``WWW-Authenticate`` challenge.
    """
    if not isinstance(exc, InvalidTokenError | CallerNotAllowedError | KeyFetchError):
        exc = InvalidTokenError("the token could not be verified")
    detail = (
        _DESCRIPTIONS.get(exc.reason)
        or _DESCRIPTIONS["caller_not_allowed" if exc.status_code == 403 else "invalid_token"]
    )
    headers = [("Cache-Control", "no-store")]
    if isinstance(exc, KeyFetchError):
        error = "temporarily_unavailable"
        headers.append(("Retry-After", str(max(1, int(exc.retry_after)))))
    else:
        challenge = f"Bearer realm={_quote(realm)}"
        if exc.error is not None:
            challenge += f", error={_quote(exc.error)}, error_description={_quote(detail)}"
        headers.append(("WWW-Authenticate", challenge))
        error = exc.error or "unauthorized"
    payload = {"error": error, "reason": exc.reason, "detail": detail}
    if isinstance(exc, CallerNotAllowedError) and (exc.email or exc.subject):
        payload["caller"] = exc.email or exc.subject or ""  # who it was seen as; no allow-list
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    return Denial(exc.status_code, tuple(headers), payload, body)


class Gate:
    """The check an inbound adapter runs on each request: route, token, verifier, policy.

    Use one per middleware, decorator or dependency; adapters hold no other logic.

    Args:
        verifier: checks tokens (the key set, claims and verified-token cache live there).
        allowed_callers: the default allow-list; ``None`` keeps ``verifier.policy``.
        exempt: paths served without a token (health checks): exact paths, or
            everything under an entry ending in ``/``.
        rules: per-route allow-lists, more specific than the default.
        realm: the realm named in ``WWW-Authenticate``.

    Raises:
        ConfigurationError: a realm that cannot stand in a header.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        allowed_callers: Iterable[str] | CallerPolicy | None = None,
        exempt: Iterable[str] = (),
        rules: Sequence[Rule] = (),
        realm: str = DEFAULT_REALM,
    ) -> None:
        if not realm or not _PRINTABLE.fullmatch(realm):
            raise ConfigurationError("realm must be non-empty printable ASCII")
        self.verifier = verifier
        self.realm = realm
        default: CallerPolicy | None
        if allowed_callers is None:
            default = verifier.policy
        elif isinstance(allowed_callers, CallerPolicy):
            default = allowed_callers
        else:
            default = CallerPolicy(allowed_callers)
        #: The allow-list applied when no rule matches (``None``: any verified caller).
        self.default = default
        self.routes = RoutePolicy(self.default, rules=tuple(rules), exempt=tuple(exempt))

    def route(self, method: str, path: str) -> Resolution:
        """The policy for a request: a :class:`CallerPolicy`, ``None`` (any verified
        caller) or :data:`EXEMPT` (no token needed)."""
        resolution = self.routes.resolve(method, path)
        if resolution is not EXEMPT:
            _refusals.at(method, path)  # names the request in its refusal's log line
        return resolution

    def authenticate(
        self,
        authorization: Sequence[str],
        serverless: Sequence[str] = (),
        *,
        policy: CallerPolicy | None,
    ) -> Caller:
        """Find the token, verify it and apply ``policy``; blocking.

        Args:
            authorization: every ``Authorization`` header value of the request.
            serverless: every ``X-Serverless-Authorization`` header value.
            policy: from :meth:`route`, or :attr:`default`.

        Raises:
            InvalidTokenError: 401 (any unexpected failure is reported as this too).
            CallerNotAllowedError: 403.
            KeyFetchError: 503.
        """
        token = self._find_token(authorization, serverless)
        try:
            caller = self.verifier.authenticate(token)
        except (InvalidTokenError, KeyFetchError):
            raise  # the verifier has logged and counted it
        except Exception as exc:
            raise self._unexpected(exc) from exc
        return self.authorize(caller, policy)

    async def aauthenticate(
        self,
        authorization: Sequence[str],
        serverless: Sequence[str] = (),
        *,
        policy: CallerPolicy | None,
    ) -> Caller:
        """:meth:`authenticate` without blocking the event loop."""
        token = self._find_token(authorization, serverless)
        try:
            caller = await self.verifier.aauthenticate(token)
        except (InvalidTokenError, KeyFetchError):
            raise  # the verifier has logged and counted it
        except Exception as exc:
            raise self._unexpected(exc) from exc
        return self.authorize(caller, policy)

    def _find_token(self, authorization: Sequence[str], serverless: Sequence[str]) -> str:
        # The verifier counts and logs every refusal, these too: one INFO line per request.
        try:
            return find_token(authorization, serverless)
        except InvalidTokenError as exc:
            self.verifier.record_rejection(exc)
            raise

    def _unexpected(self, exc: Exception) -> InvalidTokenError:
        # Never a 500 from auth input. Only the type is logged: a foreign message may quote input.
        _log.warning(
            "unexpected %s while verifying a token; answered as invalid", type(exc).__name__
        )
        refusal = InvalidTokenError("the token could not be verified")
        self.verifier.record_rejection(refusal)
        return refusal

    def authorize(self, caller: Caller, policy: CallerPolicy | None) -> Caller:
        """Apply ``policy`` to a caller verified earlier (e.g. by a middleware).

        The verifier applies it (:meth:`Verifier.authorize`), so that a refusal
        is counted in its stats and logged once, like a token rejection.

        Args:
            caller: a verified caller.
            policy: from :meth:`route`, or :attr:`default`; ``None`` allows any caller.

        Raises:
            CallerNotAllowedError: 403.
        """
        if policy is not None:
            caller = self.verifier.authorize(caller, policy)
        _refusals.done()  # let in: a later refusal in this thread is not this request's
        return caller

    def deny(self, exc: S2SAuthError) -> Denial:
        """The response for ``exc`` under this gate's realm (see :func:`denial`)."""
        return denial(exc, realm=self.realm)
