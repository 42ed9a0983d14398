"""s2sauth: service-to-service authentication the way Google Cloud Run intends.

Outbound, :class:`IDTokenProvider` fetches Google-signed ID tokens per audience
(metadata server, or Application Default Credentials off Google Cloud) and the
``s2sauth.requests`` / ``s2sauth.httpx`` adapters attach them. Inbound,
:class:`Verifier` checks a token and the caller against an allow-list, and the
``s2sauth.asgi`` / ``s2sauth.wsgi`` / ``s2sauth.flask`` / ``s2sauth.fastapi``
adapters put the resulting :class:`Caller` on the request.

``import s2sauth`` needs only the core dependency (google-auth);
each adapter module imports its own framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    AudienceMismatchError,
    BadSignatureError,
    CallerNotAllowedError,
    ConfigurationError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidClaimsError,
    InvalidHeaderError,
    InvalidTokenError,
    IssuerMismatchError,
    KeyFetchError,
    MalformedTokenError,
    MissingTokenError,
    S2SAuthError,
    SignatureRemovedError,
    TokenFetchError,
    UnknownKeyError,
)

if TYPE_CHECKING:  # pragma: no cover
    from .tokens.provider import AccessTokenProvider, IDTokenProvider
    from .tokens.sources import ADCSource, DefaultSource, MetadataServerSource
    from .verify.audience import CloudRunAudience, PushAudience
    from .verify.caller import Caller
    from .verify.keys import KeySet
    from .verify.policy import CallerPolicy, PeoplePolicy, Rule
    from .verify.verifier import GOOGLE_CERTS_URL, GOOGLE_ISSUERS, Verifier

# Cold start: each core is imported on first use of one of its names, so a receiving
# service never loads the outbound core, nor a caller the inbound one (PEP 562).
_LAZY = {
    "AccessTokenProvider": ".tokens.provider",
    "IDTokenProvider": ".tokens.provider",
    "ADCSource": ".tokens.sources",
    "DefaultSource": ".tokens.sources",
    "MetadataServerSource": ".tokens.sources",
    "CloudRunAudience": ".verify.audience",
    "PushAudience": ".verify.audience",
    "Caller": ".verify.caller",
    "KeySet": ".verify.keys",
    "CallerPolicy": ".verify.policy",
    "PeoplePolicy": ".verify.policy",
    "Rule": ".verify.policy",
    "GOOGLE_CERTS_URL": ".verify.verifier",
    "GOOGLE_ISSUERS": ".verify.verifier",
    "Verifier": ".verify.verifier",
}

#: The package's version; a literal, since importlib.metadata costs tens of ms at import
#: (tests/test_cold_start.py keeps it equal to pyproject.toml's).
__version__ = "0.2.0"

__all__ = [
    "ADCSource",
    "AccessTokenProvider",
    "AudienceMismatchError",
    "BadSignatureError",
    "Caller",
    "CallerNotAllowedError",
    "CallerPolicy",
    "CloudRunAudience",
    "ConfigurationError",
    "DefaultSource",
    "ExpiredTokenError",
    "GOOGLE_CERTS_URL",
    "GOOGLE_ISSUERS",
    "IDTokenProvider",
    "ImmatureTokenError",
    "InvalidClaimsError",
    "InvalidHeaderError",
    "InvalidTokenError",
    "IssuerMismatchError",
    "KeyFetchError",
    "KeySet",
    "MalformedTokenError",
    "MetadataServerSource",
    "MissingTokenError",
    "PeoplePolicy",
    "PushAudience",
    "Rule",
    "S2SAuthError",
    "SignatureRemovedError",
    "TokenFetchError",
    "UnknownKeyError",
    "Verifier",
    "__version__",
]


def _public(obj: Any) -> Any:
    # Public classes read as s2sauth.X in reprs and tracebacks (httpx does the same).
    if isinstance(obj, type):
        obj.__module__ = "s2sauth"
    return obj


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 's2sauth' has no attribute {name!r}")
    value = _public(getattr(importlib.import_module(module, __name__), name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


for _name in __all__:
    if _name not in _LAZY:
        _public(globals()[_name])
del _name
