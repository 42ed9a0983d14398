"""The exceptions s2sauth raises.

Every public raise derives from :class:`S2SAuthError`::

    S2SAuthError
    ├── ConfigurationError           bad arguments, raised at construction
    ├── TokenFetchError              outbound: no ID/access token could be had
    ├── KeyFetchError                inbound: no verification keys  -> HTTP 503
    ├── CallerNotAllowedError        inbound: valid token, caller not allowed -> HTTP 403
    └── InvalidTokenError            inbound: the token is not acceptable -> HTTP 401
        ├── MissingTokenError        no token at all (401 without an error code)
        ├── MalformedTokenError      not a well-formed compact JWS
        ├── InvalidHeaderError       alg/kid/typ or an extra header member rejected
        ├── UnknownKeyError          no published key has the token's kid
        ├── BadSignatureError        the signature does not verify
        ├── SignatureRemovedError    Cloud Run stripped the signature, no opt-in
        ├── ExpiredTokenError        exp is past (beyond the leeway)
        ├── ImmatureTokenError       nbf/iat is in the future (beyond the leeway)
        ├── IssuerMismatchError      iss is not an accepted issuer
        ├── AudienceMismatchError    aud is not a configured audience
        └── InvalidClaimsError       a claim is missing or of the wrong type/shape

Each class carries two machine-readable attributes: ``reason`` (one word per
class, stable, for logs and metrics) and ``error`` (the RFC 6750 error code an
adapter copies into ``WWW-Authenticate``, or ``None``). Messages say what went
wrong and what to do about it; they never contain a token.
"""

from __future__ import annotations

__all__ = [
    "AudienceMismatchError",
    "BadSignatureError",
    "CallerNotAllowedError",
    "ConfigurationError",
    "ExpiredTokenError",
    "ImmatureTokenError",
    "InvalidClaimsError",
    "InvalidHeaderError",
    "InvalidTokenError",
    "IssuerMismatchError",
    "KeyFetchError",
    "MalformedTokenError",
    "MissingTokenError",
    "S2SAuthError",
    "SignatureRemovedError",
    "TokenFetchError",
    "UnknownKeyError",
]


class S2SAuthError(Exception):
    """Base class of every error s2sauth raises."""

    #: Stable, machine-readable name of what went wrong (for logs and metrics).
    reason: str = "error"
    #: RFC 6750 error code for a ``WWW-Authenticate`` challenge, if any.
    error: str | None = None
    #: The HTTP status an inbound adapter answers with.
    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(S2SAuthError, ValueError):
    """An argument or environment setting is invalid; raised at construction."""

    reason = "configuration_error"


class TokenFetchError(S2SAuthError):
    """No ID token (or access token) could be obtained.

    Args:
        message: what was tried and why it failed.
        status: the HTTP status of the last reply, if there was one.
        retryable: whether trying again later may succeed.
    """

    reason = "token_fetch_failed"
    status_code = 503

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class KeyFetchError(S2SAuthError):
    """No usable verification keys: the service must fail closed (HTTP 503)."""

    reason = "keys_unavailable"
    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(message)
        #: Seconds a client should wait before trying again (``Retry-After``).
        self.retry_after = retry_after


class CallerNotAllowedError(S2SAuthError):
    """The token is valid but its caller is not on the allow-list (HTTP 403)."""

    reason = "caller_not_allowed"
    error = "insufficient_scope"
    status_code = 403

    def __init__(
        self, message: str, *, email: str | None = None, subject: str | None = None
    ) -> None:
        super().__init__(message)
        self.email = email
        self.subject = subject


class InvalidTokenError(S2SAuthError):
    """The token is not acceptable (HTTP 401 with ``error="invalid_token"``)."""

    reason = "invalid_token"
    error: str | None = "invalid_token"
    status_code = 401


class MissingTokenError(InvalidTokenError):
    """The request carries no bearer token (HTTP 401 without an error code)."""

    reason = "missing_token"
    error = None


class MalformedTokenError(InvalidTokenError):
    """The token is not a well-formed compact JWS (size, segments, base64url, JSON)."""

    reason = "malformed"


class InvalidHeaderError(InvalidTokenError):
    """The JOSE header is rejected: algorithm, kid, typ or an unsupported member."""

    reason = "invalid_header"


class UnknownKeyError(InvalidTokenError):
    """No published key matches the token's ``kid``, even after a refetch."""

    reason = "unknown_key"


class BadSignatureError(InvalidTokenError):
    """The signature does not verify with the published key."""

    reason = "bad_signature"


class SignatureRemovedError(InvalidTokenError):
    """Cloud Run removed the signature and the service did not opt in to trusting that."""

    reason = "signature_removed"


class ExpiredTokenError(InvalidTokenError):
    """The token's ``exp`` has passed, beyond the configured leeway."""

    reason = "expired"


class ImmatureTokenError(InvalidTokenError):
    """The token's ``nbf`` or ``iat`` lies in the future, beyond the leeway."""

    reason = "not_yet_valid"


class IssuerMismatchError(InvalidTokenError):
    """The token's ``iss`` is not one of the accepted issuers."""

    reason = "issuer_mismatch"


class AudienceMismatchError(InvalidTokenError):
    """The token's ``aud`` is not one of the configured audiences."""

    reason = "audience_mismatch"


class InvalidClaimsError(InvalidTokenError):
    """A claim is missing or has the wrong type or shape (e.g. lifetime too long)."""

    reason = "invalid_claims"
