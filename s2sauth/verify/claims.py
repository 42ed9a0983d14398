"""Claim checks: one small validator per rule, run in order, with an injected clock.

:data:`VALIDATORS` is the whole table. Each validator takes the claims, the
current time and the :class:`ClaimRules`, and raises an
:class:`~s2sauth.InvalidTokenError` subclass or returns ``None``:

==================  =============================================================
``iss``             a string, exactly one of the accepted issuers
``aud``             one string (a list is refused), equal to a configured audience
``exp``/``iat``     required JSON integers (not floats, strings or booleans)
                    between 1970 and 9999; ``iat <= exp``; ``exp - iat`` at most
                    :data:`MAX_LIFETIME`; ``exp`` not past and ``iat`` not in the
                    future, beyond the leeway
``nbf``             optional; when present a JSON integer in the same range, not in
                    the future beyond the leeway
``sub``             a non-empty string (the account's unique ID)
``email``           optional; when present a string. It names the caller only when
                    ``email_verified`` is the JSON boolean ``true``; otherwise the
                    token is still valid but :attr:`Caller.email` is ``None`` (see
                    :func:`caller_from_claims`)
==================  =============================================================

A missing claim or one of the wrong type is an
:class:`~s2sauth.InvalidClaimsError`; a well-formed claim with a refused value
has its own error (expired, issuer or audience mismatch, not yet valid).

Leeway is explicit and symmetric: a token is accepted until ``exp + leeway``
(exclusive) and from ``iat - leeway``/``nbf - leeway`` (inclusive). The lifetime
rule has no leeway: it compares two times set by the same issuer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from .._errors import (
    AudienceMismatchError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidClaimsError,
    IssuerMismatchError,
)
from .caller import Caller, _verified_caller

# For users: the rules and the one entry point. The validators below are its parts.
__all__ = [
    "MAX_LIFETIME",
    "ClaimRules",
    "validate",
]

#: Longest accepted token lifetime (``exp - iat``), in seconds: Google ID tokens live one hour.
MAX_LIFETIME: Final = 3600

_MAX_SHOWN = 60
# 9999-12-31T23:59:59Z, the last second a datetime holds: later "times" are junk, and
# arithmetic on arbitrarily large JSON integers could overflow a float.
_LAST_SECOND = 253_402_300_799


@dataclass(frozen=True)
class ClaimRules:
    """What the claims of an acceptable token must say.

    Args:
        issuers: accepted ``iss`` values, compared exactly.
        audiences: accepted ``aud`` values, compared exactly.
        leeway: seconds of clock skew tolerated on ``exp``, ``iat`` and ``nbf``.
        max_lifetime: longest accepted ``exp - iat``, in seconds.
        audience_bases: base URLs under which any ``aud`` is accepted here (push
            audiences); the exact URL is then matched to the request by the verifier.
    """

    issuers: frozenset[str]
    audiences: frozenset[str]
    leeway: float = 30.0
    max_lifetime: int = MAX_LIFETIME
    audience_bases: tuple[str, ...] = ()


#: A claim validator: claims, the current time (seconds since the epoch), the rules.
Validator: TypeAlias = Callable[[Mapping[str, Any], float, ClaimRules], None]


def check_issuer(claims: Mapping[str, Any], now: float, rules: ClaimRules) -> None:
    """``iss`` is a string and exactly one of ``rules.issuers``."""
    iss = claims.get("iss")
    if type(iss) is not str:
        raise InvalidClaimsError(_wrong_type("iss", iss, "a string"))
    if iss not in rules.issuers:
        raise IssuerMismatchError(
            f"the token was issued by {_show(iss)}, not by {_one_of(rules.issuers)}"
        )


def check_audience(claims: Mapping[str, Any], now: float, rules: ClaimRules) -> None:
    """``aud`` is one string, equal to a configured audience."""
    aud = claims.get("aud")
    if type(aud) is not str:
        raise InvalidClaimsError(_wrong_type("aud", aud, "one string"))
    if aud not in rules.audiences and not any(
        aud.startswith(base) and (len(aud) == len(base) or aud[len(base)] in "/?")
        for base in rules.audience_bases
    ):
        raise AudienceMismatchError(
            f"the token is for audience {_show(aud)}, not {_one_of(rules.audiences)}; the "
            "caller must ask for a token for this service's audience"
        )


def check_times(claims: Mapping[str, Any], now: float, rules: ClaimRules) -> None:
    """``exp``/``iat`` (required) and ``nbf`` (optional) are integers, consistent and current."""
    exp = claims.get("exp")
    iat = claims.get("iat")
    nbf = claims.get("nbf")
    # `type(...) is int` on purpose: JSON true/false decode to bool, a subclass of int.
    if type(exp) is not int:
        raise InvalidClaimsError(_wrong_type("exp", exp, "an integer (seconds since the epoch)"))
    if type(iat) is not int:
        raise InvalidClaimsError(_wrong_type("iat", iat, "an integer (seconds since the epoch)"))
    if "nbf" in claims and type(nbf) is not int:
        raise InvalidClaimsError(_wrong_type("nbf", nbf, "an integer (seconds since the epoch)"))
    if not (0 <= exp <= _LAST_SECOND and 0 <= iat <= _LAST_SECOND) or (
        nbf is not None and not 0 <= nbf <= _LAST_SECOND
    ):
        raise InvalidClaimsError("the token's exp, iat or nbf is not a time between 1970 and 9999")
    if iat > exp:
        raise InvalidClaimsError("the token expires (exp) before it was issued (iat)")
    if exp - iat > rules.max_lifetime:
        raise InvalidClaimsError(
            f"the token lives {exp - iat} s (exp - iat); at most {rules.max_lifetime} s is accepted"
        )
    leeway = rules.leeway
    if now >= exp + leeway:
        raise ExpiredTokenError(
            f"the token expired at {_when(exp)}, {now - exp:.0f} s ago (leeway {leeway:g} s); "
            "the caller must fetch a fresh token"
        )
    if iat > now + leeway:
        raise ImmatureTokenError(
            f"the token was issued at {_when(iat)}, {iat - now:.0f} s in the future (leeway "
            f"{leeway:g} s); check the clocks"
        )
    if nbf is not None and nbf > now + leeway:
        raise ImmatureTokenError(
            f"the token is not valid before {_when(nbf)}, {nbf - now:.0f} s from now (leeway "
            f"{leeway:g} s)"
        )


def check_subject(claims: Mapping[str, Any], now: float, rules: ClaimRules) -> None:
    """``sub`` is a non-empty string."""
    sub = claims.get("sub")
    if type(sub) is not str or not sub:
        raise InvalidClaimsError(_wrong_type("sub", sub, "a non-empty string"))


def check_email(claims: Mapping[str, Any], now: float, rules: ClaimRules) -> None:
    """``email``, when present, is a string.

    ``email_verified`` is not checked here: anything but the boolean ``true``
    (including the string ``"true"``) only means the email is not used.
    """
    email = claims.get("email")
    if "email" in claims and type(email) is not str:
        raise InvalidClaimsError(_wrong_type("email", email, "a string"))


#: Every validator, in the order they run: the first failure is the one reported.
VALIDATORS: Final[tuple[Validator, ...]] = (
    check_issuer,
    check_audience,
    check_times,
    check_subject,
    check_email,
)


def validate(claims: Mapping[str, Any], now: float, rules: ClaimRules) -> None:
    """Run every validator of :data:`VALIDATORS` on ``claims``.

    Args:
        claims: the token's payload.
        now: the current time, seconds since the epoch (from the injected clock).
        rules: what the claims must say.

    Raises:
        InvalidClaimsError: a claim is missing or malformed, or the lifetime is too long.
        IssuerMismatchError: ``iss`` is not accepted.
        AudienceMismatchError: ``aud`` is not a configured audience.
        ExpiredTokenError: ``exp`` is past, beyond the leeway.
        ImmatureTokenError: ``iat`` or ``nbf`` is in the future, beyond the leeway.
    """
    for validator in VALIDATORS:
        validator(claims, now, rules)


def caller_from_claims(claims: dict[str, Any]) -> Caller:
    """The :class:`~s2sauth.Caller` that validated ``claims`` describe.

    ``Caller.email`` is the ``email`` claim only when ``email_verified`` is the
    boolean ``true``; otherwise it is ``None``, so an email allow-list cannot
    match the caller (an allow-list entry by unique ID still can).

    Args:
        claims: claims that passed :func:`validate`; kept read-only in the result.
    """
    email = claims.get("email") if claims.get("email_verified") is True else None
    return _verified_caller(email, claims["sub"], claims["aud"], MappingProxyType(claims))


def _wrong_type(name: str, value: object, expected: str) -> str:
    if value is None:
        return f"the token has no {name} claim; it must be {expected}"
    return f"the token's {name} claim must be {expected}, not {type(value).__name__}"


def _when(timestamp: int) -> str:
    # Times are checked to lie in 1970-9999 first, so every one has a date.
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_of(values: Collection[str]) -> str:
    return " or ".join(repr(value) for value in sorted(values))


def _show(value: str) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
