"""s2sauth: service-to-service authentication the way Google Cloud Run intends.

Outbound, :class:`IDTokenProvider` fetches Google-signed ID tokens per audience
(metadata server, or Application Default Credentials off Google Cloud) and the
``s2sauth.requests`` / ``s2sauth.httpx`` adapters attach them. Inbound,
:class:`Verifier` checks a token and the caller against an allow-list, and the
``s2sauth.asgi`` / ``s2sauth.wsgi`` / ``s2sauth.flask`` / ``s2sauth.fastapi``
adapters put the resulting :class:`Caller` on the request.

``import s2sauth`` needs only the core dependencies (google-auth, cachetools);
each adapter module imports its own framework.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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
from .tokens.provider import AccessTokenProvider, IDTokenProvider
from .tokens.sources import ADCSource, DefaultSource, MetadataServerSource
from .verify.caller import Caller
from .verify.keys import KeySet
from .verify.policy import CallerPolicy, Rule
from .verify.verifier import GOOGLE_CERTS_URL, GOOGLE_ISSUERS, Verifier

try:
    __version__ = version("s2sauth")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ADCSource",
    "AccessTokenProvider",
    "AudienceMismatchError",
    "BadSignatureError",
    "Caller",
    "CallerNotAllowedError",
    "CallerPolicy",
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
    "Rule",
    "S2SAuthError",
    "SignatureRemovedError",
    "TokenFetchError",
    "UnknownKeyError",
    "Verifier",
    "__version__",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "s2sauth"
del _name, _obj
