"""Claim checks, one rule at a time, with an injected clock (s2sauth.verify.claims)."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError, fields
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest

from s2sauth._errors import (
    AudienceMismatchError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidClaimsError,
    InvalidTokenError,
    IssuerMismatchError,
)
from s2sauth.verify.caller import Caller
from s2sauth.verify.claims import VALIDATORS, ClaimRules, caller_from_claims, validate

NOW = 1_700_000_000
LEEWAY = 30
RULES = ClaimRules(
    issuers=frozenset({"https://accounts.google.com", "accounts.google.com"}),
    audiences=frozenset({"https://svc.example", "https://svc-abc-uc.a.run.app"}),
    leeway=LEEWAY,
)
ABSENT = object()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims issued at NOW, living one hour, with ``changes`` applied."""
    base: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": "https://svc.example",
        "azp": "112233445566778899001",
        "sub": "112233445566778899001",
        "email": "caller@proj.iam.gserviceaccount.com",
        "email_verified": True,
        "iat": NOW,
        "exp": NOW + 3600,
    }
    for name, value in changes.items():
        if value is ABSENT:
            base.pop(name, None)
        else:
            base[name] = value
    return base


CASES = [
    # -- accepted ---------------------------------------------------------------------------
    pytest.param(claims(), NOW, None, id="valid"),
    pytest.param(claims(iss="accounts.google.com"), NOW, None, id="iss without scheme"),
    pytest.param(claims(aud="https://svc-abc-uc.a.run.app"), NOW, None, id="second audience"),
    pytest.param(claims(email=ABSENT, email_verified=ABSENT), NOW, None, id="no email"),
    pytest.param(claims(email_verified="true"), NOW, None, id="email_verified a string"),
    pytest.param(claims(nbf=NOW), NOW, None, id="nbf now"),
    pytest.param(claims(exp=NOW + 3600, iat=NOW), NOW + 3600, None, id="at exp"),
    # -- iss --------------------------------------------------------------------------------
    pytest.param(claims(iss="https://evil.example"), NOW, IssuerMismatchError, id="iss other"),
    pytest.param(claims(iss="https://accounts.google.com/"), NOW, IssuerMismatchError, id="iss /"),
    pytest.param(
        claims(iss="HTTPS://ACCOUNTS.GOOGLE.COM"), NOW, IssuerMismatchError, id="iss case"
    ),
    pytest.param(claims(iss=ABSENT), NOW, InvalidClaimsError, id="iss missing"),
    pytest.param(claims(iss=["accounts.google.com"]), NOW, InvalidClaimsError, id="iss list"),
    # -- aud --------------------------------------------------------------------------------
    pytest.param(claims(aud="https://other.example"), NOW, AudienceMismatchError, id="aud other"),
    pytest.param(claims(aud="https://svc.example/"), NOW, AudienceMismatchError, id="aud slash"),
    pytest.param(claims(aud=["https://svc.example"]), NOW, InvalidClaimsError, id="aud list"),
    pytest.param(claims(aud=ABSENT), NOW, InvalidClaimsError, id="aud missing"),
    pytest.param(claims(aud=None), NOW, InvalidClaimsError, id="aud null"),
    # -- exp / iat types ----------------------------------------------------------------------
    pytest.param(claims(exp=ABSENT), NOW, InvalidClaimsError, id="exp missing"),
    pytest.param(claims(exp=float(NOW + 3600)), NOW, InvalidClaimsError, id="exp float"),
    pytest.param(claims(exp=str(NOW + 3600)), NOW, InvalidClaimsError, id="exp string"),
    pytest.param(claims(exp=True), NOW, InvalidClaimsError, id="exp boolean"),
    pytest.param(claims(exp=None), NOW, InvalidClaimsError, id="exp null"),
    pytest.param(claims(iat=ABSENT), NOW, InvalidClaimsError, id="iat missing"),
    pytest.param(claims(iat=float(NOW)), NOW, InvalidClaimsError, id="iat float"),
    pytest.param(claims(iat=str(NOW)), NOW, InvalidClaimsError, id="iat string"),
    pytest.param(claims(iat=False), NOW, InvalidClaimsError, id="iat boolean"),
    pytest.param(claims(nbf=float(NOW)), NOW, InvalidClaimsError, id="nbf float"),
    pytest.param(claims(nbf=str(NOW)), NOW, InvalidClaimsError, id="nbf string"),
    pytest.param(claims(nbf=None), NOW, InvalidClaimsError, id="nbf null"),
    # -- exp / iat consistency ----------------------------------------------------------------
    pytest.param(claims(iat=NOW, exp=NOW - 1), NOW - 10, InvalidClaimsError, id="iat after exp"),
    pytest.param(claims(iat=NOW, exp=NOW), NOW - 10, None, id="iat equals exp"),
    pytest.param(claims(exp=NOW + 3601), NOW, InvalidClaimsError, id="lifetime 3601 s"),
    pytest.param(claims(exp=NOW + 10**12), NOW, InvalidClaimsError, id="lifetime huge"),
    pytest.param(
        claims(iat=10**400 - 10, exp=10**400), NOW, InvalidClaimsError, id="times past year 9999"
    ),
    pytest.param(claims(iat=-3600, exp=0), NOW, InvalidClaimsError, id="iat before 1970"),
    pytest.param(claims(nbf=10**400), NOW, InvalidClaimsError, id="nbf past year 9999"),
    # -- exp with leeway ----------------------------------------------------------------------
    pytest.param(claims(), NOW + 3600 + LEEWAY - 1, None, id="expired, inside leeway"),
    pytest.param(claims(), NOW + 3600 + LEEWAY - 0.001, None, id="expired, just inside leeway"),
    pytest.param(claims(), NOW + 3600 + LEEWAY, ExpiredTokenError, id="expired, at leeway"),
    pytest.param(claims(), NOW + 3600 + LEEWAY + 1, ExpiredTokenError, id="expired, past leeway"),
    pytest.param(claims(iat=0, exp=3600), NOW, ExpiredTokenError, id="expired long ago"),
    # -- iat with leeway ----------------------------------------------------------------------
    pytest.param(
        claims(iat=NOW + LEEWAY, exp=NOW + LEEWAY + 3600), NOW, None, id="iat future, at leeway"
    ),
    pytest.param(
        claims(iat=NOW + LEEWAY + 1, exp=NOW + LEEWAY + 3601),
        NOW,
        ImmatureTokenError,
        id="iat future, past leeway",
    ),
    pytest.param(claims(iat=10**15, exp=10**15 + 60), NOW, InvalidClaimsError, id="iat far future"),
    # -- nbf with leeway ----------------------------------------------------------------------
    pytest.param(claims(nbf=NOW + LEEWAY), NOW, None, id="nbf future, at leeway"),
    pytest.param(claims(nbf=NOW + LEEWAY + 1), NOW, ImmatureTokenError, id="nbf past leeway"),
    pytest.param(claims(nbf=10**30), NOW, InvalidClaimsError, id="nbf huge"),
    # -- sub --------------------------------------------------------------------------------
    pytest.param(claims(sub=ABSENT), NOW, InvalidClaimsError, id="sub missing"),
    pytest.param(claims(sub=""), NOW, InvalidClaimsError, id="sub empty"),
    pytest.param(claims(sub=112233), NOW, InvalidClaimsError, id="sub number"),
    # -- email ------------------------------------------------------------------------------
    pytest.param(claims(email=42), NOW, InvalidClaimsError, id="email number"),
    pytest.param(claims(email=None), NOW, InvalidClaimsError, id="email null"),
]


@pytest.mark.parametrize(("token_claims", "now", "error"), CASES)
def test_claim_rules(
    token_claims: dict[str, Any], now: float, error: type[InvalidTokenError] | None
) -> None:
    """Each claim rule accepts or rejects as the table says, leeway boundaries included."""
    if error is None:
        validate(token_claims, now, RULES)
    else:
        with pytest.raises(error):
            validate(token_claims, now, RULES)


def test_zero_leeway_is_exact() -> None:
    """With no leeway a token is expired from exp on and immature one second before iat."""
    strict = ClaimRules(RULES.issuers, RULES.audiences, leeway=0)
    validate(claims(), NOW + 3599, strict)
    with pytest.raises(ExpiredTokenError):
        validate(claims(), NOW + 3600, strict)
    with pytest.raises(ImmatureTokenError):
        validate(claims(), NOW - 1, strict)


def test_first_failing_rule_is_reported() -> None:
    """Validators run in table order: a wrong issuer is reported before expiry."""
    assert VALIDATORS[0].__name__ == "check_issuer"
    with pytest.raises(IssuerMismatchError):
        validate(claims(iss="https://evil.example"), NOW + 10**6, RULES)


def test_messages_say_what_to_do_and_quote_values_safely() -> None:
    """Messages name the refused value (repr, shortened) and the remedy."""
    with pytest.raises(AudienceMismatchError, match="token for this service's audience") as caught:
        validate(claims(aud="https://" + "x" * 500), NOW, RULES)
    assert len(caught.value.message) < 300
    with pytest.raises(ExpiredTokenError, match="fresh token"):
        validate(claims(), NOW + 4000, RULES)


def test_caller_from_verified_claims() -> None:
    """A verified email, the subject, audience and aware UTC times land on the Caller."""
    caller = caller_from_claims(claims())
    assert caller.email == "caller@proj.iam.gserviceaccount.com"
    assert caller.subject == "112233445566778899001"
    assert caller.audience == "https://svc.example"
    assert caller.issued_at == datetime.fromtimestamp(NOW, timezone.utc)
    assert caller.expires_at == datetime.fromtimestamp(NOW + 3600, timezone.utc)
    assert caller.issued_at.tzinfo is timezone.utc


@pytest.mark.parametrize(
    "verified",
    [
        pytest.param(False, id="false"),
        pytest.param("true", id="string true"),
        pytest.param(1, id="number 1"),
        pytest.param(ABSENT, id="missing"),
    ],
)
def test_unverified_email_is_not_the_callers(verified: Any) -> None:
    """Unless email_verified is the boolean true, Caller.email is None."""
    assert caller_from_claims(claims(email_verified=verified)).email is None


def test_caller_claims_are_read_only() -> None:
    """The claims mapping on a Caller cannot be changed."""
    caller = caller_from_claims(claims())
    with pytest.raises(TypeError):
        caller.claims["sub"] = "someone else"  # type: ignore[index]
    assert caller.claims["azp"] == "112233445566778899001"


def test_caller_from_claims_equals_the_public_constructor() -> None:
    """The verifier's Caller has the fields, equality and repr of Caller(...)."""
    verified = claims()
    caller = caller_from_claims(verified)
    built = Caller(
        "caller@proj.iam.gserviceaccount.com",
        "112233445566778899001",
        "https://svc.example",
        datetime.fromtimestamp(NOW, timezone.utc),
        datetime.fromtimestamp(NOW + 3600, timezone.utc),
        MappingProxyType(verified),
    )
    assert caller == built and built == caller
    assert [getattr(caller, f.name) for f in fields(Caller)] == [
        getattr(built, f.name) for f in fields(Caller)
    ]
    assert dataclasses.replace(caller, email=None) == dataclasses.replace(built, email=None)
    assert repr(caller) == repr(built)


def test_caller_from_claims_stays_frozen() -> None:
    """The verifier's Caller refuses changes, and unknown attributes do not exist."""
    caller = caller_from_claims(claims())
    with pytest.raises(FrozenInstanceError):
        caller.issued_at = datetime.now(timezone.utc)  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        caller.email = "someone@else"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="no attribute 'nickname'"):
        caller.nickname  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(caller, "nickname")
    assert caller.expires_at is caller.expires_at
    assert caller.expires_at - caller.issued_at == timedelta(hours=1)
