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
* **Which kind of caller.** Services present Google ID tokens; people signed in
  by Identity-Aware Proxy arrive with IAP's ``x-goog-iap-jwt-assertion``. With
  an :class:`~s2sauth.iap.IAPVerifier` the gate takes either, or one kind per
  path (``accept``); a token of the wrong kind is a 401 like any bad token.
* **Which callers.** The route policy: exempt paths, per-route rules, the
  default allow-list (for people: the IAP verifier's allow-list, or a route's
  :class:`~s2sauth.iap.PeoplePolicy`).
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
from typing import TYPE_CHECKING, Literal, TypeAlias

from .. import _log as _refusals
from .._cloudrun import SIGNATURE_REMOVED, X_SERVERLESS_AUTHORIZATION
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
from .policy import (
    EXEMPT,
    CallerPolicy,
    PeoplePolicy,
    Resolution,
    RoutePolicy,
    Rule,
    _normalise,
    _under,
)

if TYPE_CHECKING:  # pragma: no cover
    from .verifier import Verifier

__all__ = [
    "DEFAULT_REALM",
    "EXEMPT",
    "IAP_HEADER",
    "SERVERLESS_HEADER",
    "SIGNATURE_REMOVED",
    "Denial",
    "Gate",
    "Kind",
    "denial",
    "find_assertion",
    "find_token",
    "parse_bearer",
]

_log = logging.getLogger(__name__)

#: The realm named in ``WWW-Authenticate`` challenges unless configured otherwise.
DEFAULT_REALM = "s2sauth"
#: The header Cloud Run checks (and strips the signature of) when both are sent.
SERVERLESS_HEADER = X_SERVERLESS_AUTHORIZATION
#: The header Identity-Aware Proxy signs a person's identity into (a raw JWT).
IAP_HEADER = "x-goog-iap-jwt-assertion"

#: Which callers a path takes: ``"service"`` (a Google ID token), ``"person"`` (an
#: Identity-Aware Proxy assertion) or ``"either"`` (the IAP assertion when the
#: request carries one, else an ID token).
Kind: TypeAlias = Literal["service", "person", "either"]
_KINDS = ("service", "person", "either")

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


def find_assertion(values: Sequence[str] = ()) -> str:
    """The Identity-Aware Proxy assertion a request carries (``x-goog-iap-jwt-assertion``).

    Use it when writing an adapter for another framework.

    Args:
        values: every ``x-goog-iap-jwt-assertion`` header value of the request.

    Raises:
        MissingTokenError: no assertion (the request did not come through IAP).
        MalformedTokenError: a repeated header, or a value that is not one bare JWT.
    """
    if len(values) > 1:
        raise MalformedTokenError(f"the request has more than one {IAP_HEADER} header")
    token = values[0].strip() if values else ""
    if not token:
        raise MissingTokenError(
            f"the request carries no {IAP_HEADER} header; is the service behind "
            "Identity-Aware Proxy, and did the request come through it?"
        )
    # IAP sends the bare JWT: a scheme ("Bearer ...") or a list is not its assertion.
    if not token.isascii() or " " in token or "," in token:
        raise MalformedTokenError(f"the {IAP_HEADER} header must be one JWT, with no scheme")
    return token


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
        rules: per-route allow-lists, more specific than the default. A rule
            holding a :class:`~s2sauth.iap.PeoplePolicy` narrows the people
            allowed on its paths.
        realm: the realm named in ``WWW-Authenticate``.
        iap: an :class:`~s2sauth.iap.IAPVerifier`, to take people signed in by
            Identity-Aware Proxy beside the services ``verifier`` takes. (To take
            people only, pass the ``IAPVerifier`` as ``verifier``.)
        accept: which kind of caller (:data:`Kind`) each path takes: one kind for
            every path, or ``{path prefix: kind}`` (longest prefix wins, on segment
            boundaries; paths it does not cover take the default). The default is
            ``"either"`` with ``iap``, else the kind of ``verifier``.

    Raises:
        ConfigurationError: a realm that cannot stand in a header, an unknown
            kind, or a kind no verifier here can check.

    .. versionchanged:: 0.2 ``iap`` and ``accept``.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        allowed_callers: Iterable[str] | CallerPolicy | None = None,
        exempt: Iterable[str] = (),
        rules: Sequence[Rule] = (),
        realm: str = DEFAULT_REALM,
        iap: Verifier | None = None,
        accept: Kind | Mapping[str, Kind] | None = None,
    ) -> None:
        if not realm or not _PRINTABLE.fullmatch(realm):
            raise ConfigurationError("realm must be non-empty printable ASCII")
        self.verifier = verifier
        people_only = getattr(verifier, "token_header", None) == IAP_HEADER
        if iap is not None and (people_only or getattr(iap, "token_header", None) != IAP_HEADER):
            raise ConfigurationError(
                "pass the ID-token Verifier as verifier and the IAPVerifier as iap"
            )
        #: The verifier of Identity-Aware Proxy assertions, if people are taken.
        self.iap: Verifier | None = verifier if people_only else iap
        self._kinds = _kinds(accept, people_only=people_only, iap=self.iap is not None)
        #: Whether a token's audience depends on the request's URL (push audiences): only
        #: then need adapters hand over ``query`` and ``url_path``.
        self.needs_url = any(
            getattr(v, "request_audiences", None) for v in (verifier, iap) if v is not None
        )
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
        # recall() answers only where a bearer token in Authorization, checked by the
        # verifier's own authenticate, is the whole check: no people, no URL-bound
        # audiences, and no subclass that adds to authenticate.
        from .verifier import Verifier  # loaded already: ``verifier`` is one

        kind = type(verifier)
        self._recalls = (
            self.iap is None
            and not self.needs_url
            and getattr(kind, "authenticate", None) is Verifier.authenticate
            and getattr(kind, "aauthenticate", None) is Verifier.aauthenticate
        )

    def route(self, method: str, path: str) -> Resolution:
        """The policy for a request: a :class:`CallerPolicy`, ``None`` (any verified
        caller) or :data:`EXEMPT` (no token needed).

        .. versionchanged:: 0.2 no longer names the request for the refusal log:
           pass ``method`` to :meth:`authenticate` instead.
        """
        return self.routes.resolve(method, path)

    def recall(
        self, authorization: Sequence[str], serverless: Sequence[str], policy: CallerPolicy | None
    ) -> Caller | None:
        """The caller of a request whose token was let in before and would be again.

        The first step of :meth:`authenticate` and :meth:`aauthenticate`: the
        verified-token cache alone (:meth:`Verifier.recall`), for the common
        request with one ``Authorization: Bearer`` header and no
        ``X-Serverless-Authorization``. It never raises or logs; ``None`` means
        the full check gives the answer and the log line, the same as if this had
        not been tried. Async adapters call it before awaiting
        :meth:`aauthenticate`, which then costs no coroutine for a known token.

        .. versionadded:: 0.2
        """
        if not self._recalls or serverless or len(authorization) != 1:
            return None
        value = authorization[0]
        if not value.startswith("Bearer "):
            return None
        return self.verifier.recall(value[7:], policy)

    def kind(self, path: str | None) -> Kind:
        """Which kind of caller a path takes (``accept``); ``None`` stands for ``/``."""
        if path is None:
            path = "/"
        elif "//" in path:
            path = _normalise(path)
        for prefix, kind in self._kinds:
            if _under(path, prefix):
                return kind
        raise AssertionError("unreachable: '/' is always in the kinds")  # pragma: no cover

    def verifier_of(self, caller: Caller) -> Verifier:
        """The verifier that checked ``caller``: :attr:`iap` for a person, else :attr:`verifier`.

        Adapters record it beside the caller, so a decorator further in can reuse
        the caller only when it would have used the same verifier.
        """
        if caller.kind == "person" and self.iap is not None:
            return self.iap
        return self.verifier

    def authenticate(
        self,
        authorization: Sequence[str],
        serverless: Sequence[str] = (),
        *,
        policy: CallerPolicy | None,
        assertion: Sequence[str] = (),
        path: str | None = None,
        query: str = "",
        url_path: str | None = None,
        method: str | None = None,
    ) -> Caller:
        """Find the token, verify it and apply ``policy``; blocking.

        Args:
            authorization: every ``Authorization`` header value of the request.
            serverless: every ``X-Serverless-Authorization`` header value.
            policy: from :meth:`route`, or :attr:`default`.
            assertion: every ``x-goog-iap-jwt-assertion`` header value (only read
                when the gate takes people).
            path: the path :meth:`route` was given, which decides the kind of
                caller (``accept``); ``None`` is judged as ``/``.
            query: the request's raw query string (without ``?``), for push audiences.
            url_path: the request's path from the root of its URL (with any mount
                prefix), percent-decoded, for push audiences; ``path`` when ``None``.
            method: the request's method: with it, a refusal's log line names the
                request (``GET /path``).

        Raises:
            InvalidTokenError: 401 (any unexpected failure is reported as this too).
            CallerNotAllowedError: 403.
            KeyFetchError: 503.

        .. versionchanged:: 0.2 ``assertion``, ``path``, ``query``, ``url_path`` and ``method``.
        """
        if (caller := self.recall(authorization, serverless, policy)) is not None:
            return caller
        if method is not None:
            _refusals.at(method, path or "/")  # names the request in its refusal's log line
        verifier, token, policy = self._choose(authorization, serverless, assertion, path, policy)
        try:
            caller = verifier.authenticate(token)
            if getattr(verifier, "request_audiences", None):
                caller = verifier.check_request(
                    caller, path=path if url_path is None else url_path, query=query
                )
        except (InvalidTokenError, KeyFetchError):
            raise  # the verifier has logged and counted it
        except Exception as exc:
            raise self._unexpected(verifier, exc) from exc
        return _admit(verifier, caller, policy)

    async def aauthenticate(
        self,
        authorization: Sequence[str],
        serverless: Sequence[str] = (),
        *,
        policy: CallerPolicy | None,
        assertion: Sequence[str] = (),
        path: str | None = None,
        query: str = "",
        url_path: str | None = None,
        method: str | None = None,
    ) -> Caller:
        """:meth:`authenticate` without blocking the event loop."""
        if (caller := self.recall(authorization, serverless, policy)) is not None:
            return caller
        if method is not None:
            _refusals.at(method, path or "/")  # names the request in its refusal's log line
        verifier, token, policy = self._choose(authorization, serverless, assertion, path, policy)
        try:
            caller = await verifier.aauthenticate(token)
            if getattr(verifier, "request_audiences", None):
                caller = verifier.check_request(
                    caller, path=path if url_path is None else url_path, query=query
                )
        except (InvalidTokenError, KeyFetchError):
            raise  # the verifier has logged and counted it
        except Exception as exc:
            raise self._unexpected(verifier, exc) from exc
        return _admit(verifier, caller, policy)

    def _choose(
        self,
        authorization: Sequence[str],
        serverless: Sequence[str],
        assertion: Sequence[str],
        path: str | None,
        policy: CallerPolicy | None,
    ) -> tuple[Verifier, str, CallerPolicy | None]:
        """The verifier, token and policy for a request, by the kind its path takes."""
        kind = self.kind(path) if self.iap is not None else "service"
        if kind == "either":
            kind = "person" if assertion else "service"
        verifier = self.verifier
        # The verifier counts and logs every refusal, these too: one INFO line per request.
        try:
            if kind == "person" and self.iap is not None:
                verifier = self.iap
                if not isinstance(policy, PeoplePolicy):
                    policy = verifier.policy  # the route's allow-list names services
                return verifier, find_assertion(assertion), policy
            return verifier, find_token(authorization, serverless), policy
        except InvalidTokenError as exc:
            verifier.record_rejection(exc)
            raise

    def _unexpected(self, verifier: Verifier, exc: Exception) -> InvalidTokenError:
        # Never a 500 from auth input. Only the type is logged: a foreign message may quote input.
        _log.warning(
            "unexpected %s while verifying a token; answered as invalid", type(exc).__name__
        )
        refusal = InvalidTokenError("the token could not be verified")
        verifier.record_rejection(refusal)
        return refusal

    def authorize(
        self, caller: Caller, policy: CallerPolicy | None, *, path: str | None = None
    ) -> Caller:
        """Apply ``policy`` to a caller verified earlier (e.g. by a middleware).

        The verifier applies it (:meth:`Verifier.authorize`), so that a refusal
        is counted in its stats and logged once, like a token rejection. A person
        (an IAP caller) is judged by the IAP verifier's allow-list unless
        ``policy`` is a :class:`~s2sauth.iap.PeoplePolicy`, and refused (401) where
        ``path`` takes services only.

        Args:
            caller: a verified caller.
            policy: from :meth:`route`, or :attr:`default`; ``None`` allows any caller.
            path: the request's path, which decides the kind of caller taken.

        Raises:
            InvalidTokenError: a caller of a kind this gate does not take here.
            CallerNotAllowedError: 403.
        """
        verifier = self.verifier_of(caller)
        if caller.kind == "person":
            if self.iap is None or self.kind(path) == "service":
                refusal = InvalidTokenError("this path takes service callers, not IAP assertions")
                verifier.record_rejection(refusal)
                raise refusal
            if not isinstance(policy, PeoplePolicy):
                policy = self.iap.policy
        elif self.iap is not None and self.kind(path) == "person":
            refusal = InvalidTokenError("this path takes people signed in by IAP only")
            verifier.record_rejection(refusal)
            raise refusal
        return _admit(verifier, caller, policy)

    def deny(self, exc: S2SAuthError) -> Denial:
        """The response for ``exc`` under this gate's realm (see :func:`denial`)."""
        return denial(exc, realm=self.realm)


def _kinds(
    accept: Kind | Mapping[str, Kind] | None, *, people_only: bool, iap: bool
) -> tuple[tuple[str, Kind], ...]:
    default: Kind = "person" if people_only else "either" if iap else "service"
    chosen: dict[str, Kind] = {}
    if isinstance(accept, str):
        chosen["/"] = accept
    elif accept is not None:
        for path, kind in accept.items():
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(f"an accept path must start with '/', not {path!r}")
            chosen[_normalise(path).rstrip("/") or "/"] = kind
    chosen.setdefault("/", default)
    for kind in chosen.values():
        if kind not in _KINDS:
            raise ConfigurationError(f"accept takes {', '.join(_KINDS)}, not {kind!r}")
        if kind != "service" and not iap:
            raise ConfigurationError(f"accepting {kind!r} needs an IAPVerifier (iap=...)")
        if kind != "person" and people_only:
            raise ConfigurationError(
                f"accepting {kind!r} needs an ID-token Verifier: pass it as verifier, "
                "and the IAPVerifier as iap"
            )
    return tuple(sorted(chosen.items(), key=lambda item: len(item[0]), reverse=True))


def _admit(verifier: Verifier, caller: Caller, policy: CallerPolicy | None) -> Caller:
    # The last step of every check: the allow-list, then forget the request being checked,
    # so that a later refusal in this thread is not logged under its name.
    if policy is not None:
        caller = verifier.authorize(caller, policy)
    _refusals.done()
    return caller
