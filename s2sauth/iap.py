"""Identity-Aware Proxy: verify the signed header IAP adds, naming the person who called.

When Identity-Aware Proxy (IAP) fronts an app (a load balancer's backend
service, App Engine, or Cloud Run), it signs in the *person* and adds the header
``x-goog-iap-jwt-assertion``: a raw compact JWT (no ``Bearer``), which Google
documents as follows (https://cloud.google.com/iap/docs/signed-headers-howto,
"Securing your app with IAP headers"):

* header: ``alg`` ``ES256``; ``kid`` one of the keys published at
  ``https://www.gstatic.com/iap/verify/public_key-jwk``;
* ``iss`` ``https://cloud.google.com/iap``;
* ``aud`` ``/projects/PROJECT_NUMBER/global/backendServices/SERVICE_ID`` (a load
  balancer's backend service: Compute Engine, GKE, Cloud Run behind a load
  balancer) or ``/projects/PROJECT_NUMBER/apps/PROJECT_ID`` (App Engine);
* ``exp`` in the future and ``iat`` in the past, with 30 s of skew, a lifetime
  of at most ten minutes; ``email`` and ``sub`` name the person, and ``hd`` their
  Google Workspace domain when they have one.

:class:`IAPVerifier` checks all of that with the same strict parser, key cache
and claim validators as :class:`~s2sauth.Verifier` (it is one, configured for
IAP), then an allow-list of people by email and by Workspace domain. Give it
to any inbound adapter: alone (``verifier=IAPVerifier(...)``: people only) or
beside an ID-token verifier (``iap=IAPVerifier(...)``, with ``accept=`` saying
which paths take service callers, people, or either).

ES256 specifics, decided here once: the signature must be the 64-byte JWS form
(``r || s``); a DER-encoded signature is refused. Keys are P-256 only, with a
``kid``, and usable for ES256 (``alg``/``use``/``key_ops``). A "high-S"
signature (``s`` above half the curve order) is *accepted*: ECDSA signatures are
malleable, so anyone holding a genuine assertion can make a second valid one
for the same claims, but that grants nothing new (same person, audience and
expiry), and Google does not promise low-S signatures, so refusing them could
refuse genuine assertions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import Any, Final

from ._errors import ConfigurationError, InvalidClaimsError
from ._http import Transport
from .verify.caller import Caller, _verified_caller
from .verify.keys import KeySet
from .verify.policy import PeoplePolicy
from .verify.verifier import Verifier

__all__ = [
    "IAP_HEADER",
    "IAP_ISSUER",
    "IAP_KEYS_URL",
    "IAP_KEYS_URL_ENV",
    "IAP_MAX_LIFETIME",
    "IAPVerifier",
    "PeoplePolicy",
]

#: Where IAP publishes the keys its assertions are signed with, as a JWKS.
IAP_KEYS_URL: Final = "https://www.gstatic.com/iap/verify/public_key-jwk"
#: The ``iss`` of every IAP assertion.
IAP_ISSUER: Final = "https://cloud.google.com/iap"
#: The request header that carries the assertion (a raw JWT, no ``Bearer``).
IAP_HEADER: Final = "x-goog-iap-jwt-assertion"
#: Environment variable naming another keys URL (such as the emulator's).
IAP_KEYS_URL_ENV: Final = "S2SAUTH_IAP_KEYS_URL"
#: Longest accepted ``exp - iat``: IAP's assertions live ten minutes.
IAP_MAX_LIFETIME: Final = 600

# "/projects/NUMBER/..." (see the module docstring for the documented forms).
_AUDIENCE = re.compile(r"/projects/[0-9]+/[A-Za-z0-9._:/-]+")


class IAPVerifier(Verifier):
    """Checks the ``x-goog-iap-jwt-assertion`` of Identity-Aware Proxy and who the person is.

    Use it in a service behind IAP, to be sure a request came through IAP (not
    around it: a misconfigured firewall, a direct ``run.app`` URL, a caller
    inside the project) and to learn who the person is. Pass it to an inbound
    adapter as ``verifier=`` (people only) or as ``iap=`` beside an ID-token
    :class:`~s2sauth.Verifier` (people and services). The result is a
    :class:`~s2sauth.Caller` whose ``kind`` is ``"person"``, ``email`` the
    person's email and ``claims`` every claim (``hd``, ``google``...). The
    constructor does no I/O; IAP's keys are fetched on first use and cached like
    Google's ID-token keys.

    Threat model: as :class:`~s2sauth.Verifier`, with IAP's facts: the algorithm
    is ES256 whatever the token says; keys come only from ``keys_url`` and must
    be P-256; the signature must be the 64-byte JWS form; ``iss`` must be IAP's;
    ``aud`` one of the configured ``/projects/...`` strings; the lifetime at most
    ten minutes. The allow-list matches ``hd`` only as IAP signed it. An ID
    token (RS256) given here, or an IAP assertion given to an ID-token verifier,
    is refused as a token of the wrong kind (HTTP 401).

    Args:
        audience: the audience (or audiences) IAP signs for this app:
            ``/projects/PROJECT_NUMBER/global/backendServices/SERVICE_ID`` behind a
            load balancer, ``/projects/PROJECT_NUMBER/apps/PROJECT_ID`` on App
            Engine (the console's IAP page shows it).
        allowed_users: emails of the people allowed.
        allowed_domains: Google Workspace domains whose people are allowed (the
            signed ``hd`` claim). With neither, anyone IAP admits is accepted (IAP's
            own IAM policy then decides; logged at WARNING).
        keys_url: IAP's key set; when ``None``, ``$S2SAUTH_IAP_KEYS_URL``, else
            :data:`IAP_KEYS_URL`.
        leeway: seconds of clock skew tolerated, 0 to 60 (IAP documents 30).
        clock: returns the current time in seconds since the epoch.
        cache_size: how many verified assertions to remember; 0 disables the cache.
        keyset: a key set to use; it must hold ES256 keys.
        transport: performs the key fetches.

    Raises:
        ConfigurationError: an audience not in IAP's ``/projects/...`` form, a bad
            allow-list entry, leeway, URL or cache size.

    .. versionadded:: 0.2
    """

    _default_keys_url = IAP_KEYS_URL
    _keys_url_env = IAP_KEYS_URL_ENV
    _token_kind = "IAP assertion"
    _allow_list_hint = "allowed_users=[...] or allowed_domains=[...]"
    token_header = IAP_HEADER

    def __init__(
        self,
        audience: str | Iterable[str],
        *,
        allowed_users: Iterable[str] | None = None,
        allowed_domains: Iterable[str] | None = None,
        keys_url: str | None = None,
        leeway: float = 30.0,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
        keyset: KeySet | None = None,
        transport: Transport | None = None,
    ) -> None:
        audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        for value in audiences:
            if not isinstance(value, str) or not _AUDIENCE.fullmatch(value):
                raise ConfigurationError(
                    f"an IAP audience looks like '/projects/NUMBER/global/backendServices/ID' "
                    f"or '/projects/NUMBER/apps/PROJECT_ID', not {value!r}"
                )
        policy = None
        if allowed_users is not None or allowed_domains is not None:
            policy = PeoplePolicy(allowed_users or (), allowed_domains or ())
        super().__init__(
            audiences,
            allowed_callers=policy,
            certs_url=keys_url,
            issuers=(IAP_ISSUER,),
            leeway=leeway,
            algorithms=("ES256",),
            clock=clock,
            cache_size=cache_size,
            keyset=keyset,
            transport=transport,
        )
        # Verifier made its ClaimRules for ID tokens (one hour); IAP's live ten minutes.
        self._rules = type(self._rules)(
            issuers=self._rules.issuers,
            audiences=self._rules.audiences,
            leeway=self._rules.leeway,
            max_lifetime=IAP_MAX_LIFETIME,
        )

    def __repr__(self) -> str:
        return f"IAPVerifier(audience={sorted(self.audiences)!r}, keyset={self.keyset!r})"

    def _caller_from_claims(self, claims: dict[str, Any]) -> Caller:
        # IAP vouches for the email it signs (it has no email_verified claim), but an
        # assertion must name the person: no email means not an IAP assertion.
        email = claims.get("email")
        if type(email) is not str or not email:
            raise InvalidClaimsError("the IAP assertion has no email claim; it must name a person")
        hd = claims.get("hd")
        if "hd" in claims and type(hd) is not str:
            raise InvalidClaimsError("the IAP assertion's hd claim must be a string")
        return _verified_caller(email, claims["sub"], claims["aud"], MappingProxyType(claims))
