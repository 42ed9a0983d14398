"""Crafted tokens: every one is refused by the Verifier and by every middleware under a real server.

Each case is a function of a :class:`~attack_kit.Forge` holding the emulator's
own signing key, so a case differs from a genuine token only by the defect its
id names. ``test_genuine_*`` prove the forge makes tokens that *are* accepted,
so each refusal below is the verifier's doing.

A case expects 401 (an :class:`~s2sauth.InvalidTokenError`) unless marked 403
(a valid token from a caller not on the allow-list: look-alike emails).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from attack_kit import (
    AUDIENCE,
    CALLER,
    DELETE,
    STRANGER,
    Forge,
    b64url,
    fetch,
    find_leaks,
    raw_json,
    segment,
)
from cryptography.hazmat.primitives import serialization

from s2sauth._errors import CallerNotAllowedError, InvalidTokenError, S2SAuthError

Build = Callable[[Forge], str]


def _public_bytes(forge: Forge, encoding: str, fmt: str) -> bytes:
    return forge.key.public_key().public_bytes(
        getattr(serialization.Encoding, encoding), getattr(serialization.PublicFormat, fmt)
    )


def _hmac_with_public_key(alg: str, encoding: str, fmt: str) -> Build:
    def build(f: Forge) -> str:
        secret = _public_bytes(f, encoding, fmt)
        return f.sign(f.header(alg=alg), alg=alg, key=secret)

    return build


def _payload_with_length(f: Forge, claims: dict[str, Any], remainder: int) -> str:
    """The claims as a payload segment of length ``remainder`` mod 4 (unused bits at its end).

    JSON may end in spaces, which shift the length without changing the claims.
    """
    text = raw_json(claims)
    while len(segment(text)) % 4 != remainder:
        text += " "
    return segment(text)


def _non_canonical(f: Forge) -> str:
    # Same bytes, other spelling: set an unused low bit of the last character, and sign that.
    payload = _payload_with_length(f, f.claims(), 2)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(payload[-1]) | 1]
    return f.seal(segment(f.header()), payload[:-1] + last)


def _padded_payload(f: Forge) -> str:
    payload = _payload_with_length(f, f.claims(), 2)
    return f.seal(segment(f.header()), payload + "==")


def _padded_signature(f: Forge) -> str:
    token = f.good
    return token + "=" * (-len(token.rpartition(".")[2]) % 4)


def _standard_alphabet(f: Forge) -> str:
    # Aligned anywhere, six tildes hold a "~~~" group, which encodes to "fn5-": a '-' to turn
    # into '+'. The token is signed as sent, in the standard alphabet.
    payload = segment(f.claims(nonce="~~~~~~")).translate(str.maketrans("-_", "+/"))
    assert "+" in payload
    return f.seal(segment(f.header()), payload)


def _with_signature_of(f: Forge, donor: str, header: Any = None, claims: Any = None) -> str:
    head = f"{segment(f.header() if header is None else header)}"
    body = f"{segment(f.claims() if claims is None else claims)}"
    return f"{head}.{body}.{donor.rpartition('.')[2]}"


def _signature_reused(f: Forge) -> str:
    donor = f.sign(claims=f.claims(aud="https://another-service.example.run.app"))
    return _with_signature_of(f, donor)


def _signature_reused_other_caller(f: Forge) -> str:
    donor = f.sign(claims=f.claims(email=STRANGER))
    return _with_signature_of(f, donor)


def _embedded_jwk(f: Forge) -> str:
    numbers = f.attacker.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": f.kid,
        "alg": "RS256",
        "n": b64url(numbers.n.to_bytes(256, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
    }
    return f.sign(f.header(jwk=jwk), key=f.attacker)


def _jose_with(**members: Any) -> Build:
    return lambda f: f.sign(f.header(**members), key=f.attacker)


def _raw_header(text: Callable[[Forge], str]) -> Build:
    return lambda f: f.seal(segment(text(f)), segment(f.claims()))


def _raw_claims(**literals: str) -> Build:
    return lambda f: f.sign(claims=raw_json(f.claims(), **literals))


def _claims(**changes: Any) -> Build:
    return lambda f: f.sign(claims=f.claims(**changes))


def _lifetime(f: Forge, *, iat: Any = None, exp: Any = None) -> dict[str, Any]:
    now = f.good_claims["iat"]
    return f.claims(iat=now if iat is None else iat, exp=now + 3600 if exp is None else exp)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _cyrillic(email: str) -> str:
    return email.replace("a", "\u0430", 1)


ATTACKS = [
    # --- alg: the algorithm must come from configuration, never from the token -------------
    pytest.param(
        lambda f: f.unsigned(f.header(alg="none")),
        id="alg none: unsigned token must never verify",
    ),
    pytest.param(
        lambda f: f.unsigned(f.header(alg="None")),
        id="alg None (capitalised): unsigned token must never verify",
    ),
    pytest.param(
        lambda f: f.unsigned(f.header(alg="NONE")),
        id="alg NONE (upper case): unsigned token must never verify",
    ),
    pytest.param(
        lambda f: f.unsigned(f.header(alg="nOnE")),
        id="alg nOnE (mixed case): unsigned token must never verify",
    ),
    pytest.param(
        lambda f: _with_signature_of(f, f.good, header=f.header(alg="none")),
        id="alg none with a genuine RS256 signature kept: the header decides nothing",
    ),
    pytest.param(
        _hmac_with_public_key("HS256", "PEM", "SubjectPublicKeyInfo"),
        id="HS256 keyed with the RSA public key PEM: key confusion must fail",
    ),
    pytest.param(
        _hmac_with_public_key("HS256", "DER", "SubjectPublicKeyInfo"),
        id="HS256 keyed with the RSA public key DER: key confusion must fail",
    ),
    pytest.param(
        _hmac_with_public_key("HS256", "PEM", "PKCS1"),
        id="HS256 keyed with the PKCS1 RSA PUBLIC KEY PEM: key confusion must fail",
    ),
    pytest.param(
        _hmac_with_public_key("HS512", "PEM", "SubjectPublicKeyInfo"),
        id="HS512 keyed with the RSA public key PEM: no HMAC algorithm is ever accepted",
    ),
    pytest.param(
        lambda f: f.sign(f.header(alg="RS512"), alg="RS512"),
        id="RS512 genuinely signed by the right key: alg differs from the configured RS256",
    ),
    pytest.param(
        lambda f: f.sign(f.header(alg="PS256"), alg="PS256"),
        id="PS256 genuinely signed by the right key: alg differs from the key's RS256",
    ),
    pytest.param(
        lambda f: f.unsigned(f.header(alg="ES256"), signature=bytes(64)),
        id="ES256 with an all-zero signature: alg differs from the RSA key, r=s=0 is invalid",
    ),
    pytest.param(
        lambda f: f.sign(f.header(alg="rs256")),
        id="alg rs256 in lower case with a genuine signature: alg names are case-sensitive",
    ),
    pytest.param(
        lambda f: f.sign(f.header(alg=DELETE)),
        id="alg missing with a genuine signature: no default algorithm",
    ),
    pytest.param(
        lambda f: f.sign(f.header(alg=["RS256"])),
        id="alg a list with a genuine signature: alg must be a string",
    ),
    # --- kid: names a published key, nothing else ------------------------------------------
    pytest.param(
        lambda f: f.sign(f.header(kid="../../../../../../etc/passwd"), key=f.attacker),
        id="kid path traversal: must not name a file",
    ),
    pytest.param(
        lambda f: f.sign(f.header(alg="HS256", kid="/dev/null"), alg="HS256", key=b""),
        id="kid /dev/null with HS256 and an empty secret: classic file-key confusion",
    ),
    pytest.param(
        lambda f: f.sign(f.header(kid="x' UNION SELECT 'secret' --"), key=f.attacker),
        id="kid SQL injection: must only be looked up, never interpreted",
    ),
    pytest.param(
        lambda f: f.sign(f.header(kid="$(id)|`id`;id"), key=f.attacker),
        id="kid shell injection: must only be looked up, never interpreted",
    ),
    pytest.param(
        lambda f: f.sign(f.header(kid="")),
        id="kid empty with a genuine signature: no default key",
    ),
    pytest.param(
        lambda f: f.sign(f.header(kid=DELETE)),
        id="kid missing with a genuine signature: no trying every key",
    ),
    pytest.param(
        lambda f: f.sign(f.header(kid=0)),
        id="kid a number with a genuine signature: kid must be a string",
    ),
    pytest.param(
        lambda f: f.sign(f.header(kid=None)),
        id="kid null with a genuine signature: kid must be a string",
    ),
    pytest.param(
        lambda f: f.sign(f.header(kid=[f.kid])),
        id="kid a list holding the right kid, genuine signature: kid must be a string",
    ),
    pytest.param(
        lambda f: f.sign(f.header(kid=f.kid + "\u0000")),
        id="kid with a trailing NUL, genuine signature: no truncating look-up",
    ),
    # --- header members that point at or carry a key, or change processing ----------------
    pytest.param(
        _embedded_jwk,
        id="embedded jwk with the attacker's key: a token may not carry its own key",
    ),
    pytest.param(
        _jose_with(jku="http://127.0.0.1:9/keys.json"),
        id="jku to an attacker's key set: a token may not say where keys are",
    ),
    pytest.param(
        _jose_with(x5u="http://127.0.0.1:9/cert.pem"),
        id="x5u to an attacker's certificate: a token may not say where keys are",
    ),
    pytest.param(
        _jose_with(x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        id="x5c with an attacker's chain: a token may not carry its own key",
    ),
    pytest.param(
        lambda f: f.sign(f.header(crit=["exp"])),
        id="crit naming a claim, genuine signature: unknown critical extensions are refused",
    ),
    pytest.param(
        lambda f: f.sign(f.header(crit=["b64"], b64=False)),
        id="crit b64 false (unencoded payload), genuine signature: must be refused",
    ),
    pytest.param(
        lambda f: f.sign(f.header(typ="at+jwt")),
        id="typ at+jwt, genuine signature: only typ JWT is an ID token",
    ),
    pytest.param(
        lambda f: f.sign(f.header(cty="JWT")),
        id="cty JWT (nested token), genuine signature: no nested JWTs",
    ),
    # --- segments ---------------------------------------------------------------------------
    pytest.param(lambda f: f.good.split(".")[0], id="1 segment: a header alone is no token"),
    pytest.param(
        lambda f: f.good.rpartition(".")[0],
        id="2 segments (signature cut off): unsigned token must never verify",
    ),
    pytest.param(
        lambda f: f.good.rpartition(".")[0] + ".",
        id="3 segments with an empty signature: unsigned token must never verify",
    ),
    pytest.param(
        lambda f: f.good + "." + f.good.split(".")[2],
        id="4 segments (a second signature appended): exactly three segments",
    ),
    pytest.param(
        lambda f: f.good + ".eyJ9.e30",
        id="5 segments (JWE-shaped): exactly three segments",
    ),
    pytest.param(lambda f: f.good + ".", id="trailing dot: exactly three segments"),
    pytest.param(lambda f: f.good + "..", id="two trailing dots: exactly three segments"),
    pytest.param(lambda f: "." + f.good, id="leading dot: exactly three segments"),
    pytest.param(
        lambda f: f.good.replace(".", "..", 1),
        id="doubled dot after the header: no empty segments",
    ),
    pytest.param(
        lambda f: "{}.{} .{}".format(*f.good.split(".")),
        id="space before the signature: no whitespace inside a token",
    ),
    pytest.param(lambda f: "..", id="three empty segments: not a token"),
    # --- base64url: one token, one spelling --------------------------------------------------
    pytest.param(
        _padded_signature,
        id="padded signature ('='): JWS base64url is unpadded",
    ),
    pytest.param(
        _padded_payload,
        id="padded payload signed as sent: JWS base64url is unpadded",
    ),
    pytest.param(
        _standard_alphabet,
        id="standard base64 alphabet (+ and /): only base64url",
    ),
    pytest.param(
        _non_canonical,
        id="non-canonical base64url (stray bits in the last character), signed as sent",
    ),
    pytest.param(
        lambda f: "{}.{}*.{}".format(*f.good.split(".")),
        id="a character outside base64url in the payload",
    ),
    pytest.param(
        lambda f: "{}.{}.{}A".format(*f.good.split(".")),
        id="signature segment of impossible length (1 mod 4)",
    ),
    # --- JSON: UTF-8 objects, no duplicates, no BOM, no NaN, bounded ---------------------------
    pytest.param(
        _raw_header(lambda f: f'{{"alg":"none","alg":"RS256","kid":"{f.kid}","typ":"JWT"}}'),
        id="duplicate alg in the header (none then RS256), genuine signature",
    ),
    pytest.param(
        _raw_header(lambda f: f'{{"alg":"RS256","kid":"attacker","kid":"{f.kid}","typ":"JWT"}}'),
        id="duplicate kid in the header, genuine signature: parsers disagree on which wins",
    ),
    pytest.param(
        lambda f: f.sign(
            claims=raw_json(f.claims(aud=DELETE)).replace(
                "{", f'{{"aud":"https://another.example","aud":"{AUDIENCE}",', 1
            )
        ),
        id="duplicate aud in the payload (other then ours), genuine signature",
    ),
    pytest.param(
        lambda f: f.sign(
            claims=raw_json(f.claims(email=DELETE)).replace(
                "{", f'{{"email":"{STRANGER}","email":"{CALLER}",', 1
            )
        ),
        id="duplicate email in the payload (stranger then caller), genuine signature",
    ),
    pytest.param(
        lambda f: f.sign(claims=[f.good_claims]),
        id="payload a JSON array holding the claims, genuine signature",
    ),
    pytest.param(
        lambda f: f.sign(claims=f'"{CALLER}"'),
        id="payload a JSON string, genuine signature",
    ),
    pytest.param(lambda f: f.sign(claims="1"), id="payload a JSON number, genuine signature"),
    pytest.param(lambda f: f.sign(claims="null"), id="payload JSON null, genuine signature"),
    pytest.param(
        lambda f: f.sign(header=[f.good_header]),
        id="header a JSON array holding the header, genuine signature",
    ),
    pytest.param(
        lambda f: f.sign(claims=b"\xef\xbb\xbf" + raw_json(f.claims()).encode()),
        id="payload with a UTF-8 byte order mark, genuine signature",
    ),
    pytest.param(
        lambda f: f.sign(
            claims=raw_json(f.claims(name="caller")).encode().replace(b"caller", b"\xff")
        ),
        id="payload not UTF-8, genuine signature",
    ),
    pytest.param(
        lambda f: f.sign(claims=f.claims(padding="A" * 9000)),
        id="huge payload over 8 KiB, genuine signature: size cap before any work",
    ),
    pytest.param(
        _raw_claims(nested=_nested(2000)),
        id="JSON nested 2000 deep in an extra claim, genuine signature: depth cap, no crash",
    ),
    pytest.param(
        lambda f: f.sign(header=raw_json(f.header(), x=_nested(2000))),
        id="JSON nested 2000 deep in the header: refused, never a RecursionError",
    ),
    pytest.param(
        _raw_claims(extra=_nested(40)),
        id="JSON nested 40 deep in an extra claim, genuine signature: beyond the depth cap",
    ),
    # --- numeric claims: JSON integers, nothing else -----------------------------------------
    pytest.param(_raw_claims(exp="NaN"), id="exp NaN, genuine signature"),
    pytest.param(_raw_claims(exp="Infinity"), id="exp Infinity, genuine signature"),
    pytest.param(_raw_claims(iat="-Infinity"), id="iat -Infinity, genuine signature"),
    pytest.param(_raw_claims(nbf="NaN"), id="nbf NaN, genuine signature"),
    pytest.param(
        lambda f: f.sign(claims=f.claims(exp=str(f.good_claims["exp"]))),
        id="exp a numeric string, genuine signature",
    ),
    pytest.param(
        lambda f: f.sign(claims=f.claims(iat=str(f.good_claims["iat"]))),
        id="iat a numeric string, genuine signature",
    ),
    pytest.param(
        lambda f: f.sign(claims=f.claims(exp=f.good_claims["exp"] + 0.5)),
        id="exp a fraction, genuine signature: integers only",
    ),
    pytest.param(
        _raw_claims(exp="1e10"),
        id="exp in exponent notation (a JSON float), genuine signature: integers only",
    ),
    pytest.param(
        lambda f: f.sign(claims=_lifetime(f, exp=10**400)),
        id="exp a 400-digit integer, genuine signature: no overflow crash",
    ),
    pytest.param(
        lambda f: f.sign(claims=_lifetime(f, iat=-(10**400))),
        id="iat a huge negative integer, genuine signature: no overflow crash",
    ),
    pytest.param(
        lambda f: f.sign(claims=_lifetime(f, exp=2**63)),
        id="exp 2**63, genuine signature: beyond any datetime",
    ),
    pytest.param(_claims(exp=True), id="exp true (a bool is not a number), genuine signature"),
    pytest.param(_claims(iat=False), id="iat false (a bool is not a number), genuine signature"),
    pytest.param(_claims(exp=None), id="exp null, genuine signature"),
    pytest.param(
        lambda f: f.sign(claims=f.claims(exp=[f.good_claims["exp"]])),
        id="exp a list holding the right value, genuine signature",
    ),
    pytest.param(_claims(exp=DELETE), id="exp missing, genuine signature: no eternal tokens"),
    pytest.param(
        lambda f: f.sign(claims=_lifetime(f, exp=f.good_claims["iat"] + 86400)),
        id="lifetime of a day, genuine signature: Google tokens live one hour",
    ),
    # --- aud and iss: exact strings -----------------------------------------------------------
    pytest.param(_claims(aud=[AUDIENCE]), id="aud a list holding our audience: one string only"),
    pytest.param(
        _claims(aud=[AUDIENCE, "https://another.example"]),
        id="aud a list of ours and another: one string only",
    ),
    pytest.param(_claims(aud=AUDIENCE + "/"), id="aud with a trailing slash: exact match"),
    pytest.param(_claims(aud=AUDIENCE.upper()), id="aud in upper case: exact match"),
    pytest.param(_claims(aud=DELETE), id="aud missing: the audience is required"),
    pytest.param(
        _claims(iss="https://accounts.google.com/"),
        id="iss with a trailing slash: exact issuer match",
    ),
    pytest.param(
        _claims(iss="https://Accounts.Google.com"),
        id="iss in other case: exact issuer match",
    ),
    pytest.param(
        _claims(iss="http://accounts.google.com"),
        id="iss with the http scheme: exact issuer match",
    ),
    pytest.param(
        _claims(iss="https://accounts.google.com.attacker.example"),
        id="iss with Google's name as a prefix: exact issuer match",
    ),
    pytest.param(_claims(iss=["https://accounts.google.com"]), id="iss a list: one string only"),
    pytest.param(_claims(iss=DELETE), id="iss missing: the issuer is required"),
    pytest.param(_claims(sub=DELETE), id="sub missing: a caller needs a stable ID"),
    pytest.param(
        _claims(email=[CALLER]),
        id="email a list holding the allowed email: email must be a string",
    ),
    pytest.param(_claims(sub=1234567890), id="sub a number: a string only"),
    # --- signatures ---------------------------------------------------------------------------
    pytest.param(
        lambda f: f.sign(key=f.attacker),
        id="signed by another RSA-2048 key under the published kid",
    ),
    pytest.param(
        _signature_reused,
        id="genuine signature of another audience's token re-used on ours",
    ),
    pytest.param(
        _signature_reused_other_caller,
        id="genuine signature stripped from one token and re-used on other claims",
    ),
    pytest.param(
        lambda f: f.unsigned(f.header(), signature=bytes(256)),
        id="RS256 signature of 256 zero bytes",
    ),
    pytest.param(
        lambda f: f.unsigned(f.header(), signature=b"\xff" * 256),
        id="RS256 signature larger than the modulus",
    ),
    pytest.param(
        lambda f: (
            f.good.rpartition(".")[0]
            + "."
            + b64url(base64.urlsafe_b64decode(f.good.rpartition(".")[2] + "==")[:-1])
        ),
        id="genuine signature truncated by one byte",
    ),
    pytest.param(
        lambda f: f.good.rpartition(".")[0] + ".SIGNATURE_REMOVED_BY_GOOGLE",
        id="SIGNATURE_REMOVED_BY_GOOGLE without the Cloud Run IAM opt-in",
    ),
]

#: Genuine tokens of callers not on the allow-list: a valid token, refused with 403.
NOT_ALLOWED = [
    pytest.param(
        _claims(email=_cyrillic(CALLER)),
        id="look-alike email with a Cyrillic a: must not match the allow-list",
    ),
    pytest.param(
        _claims(email=CALLER.replace("@", "\uff20")),
        id="look-alike email with a fullwidth at sign: must not match the allow-list",
    ),
    pytest.param(
        _claims(email=CALLER.replace(".iam.", ".\u0131am.")),
        id="look-alike email with a dotless i (upper-cases to I): must not match",
    ),
    pytest.param(
        _claims(email=CALLER.replace("gservice", "g\u017fervice")),
        id="look-alike email with a long s (case-folds to s): must not match",
    ),
    pytest.param(
        _claims(email=CALLER + "\u0000"),
        id="email with a trailing NUL: must not match the allow-list",
    ),
    pytest.param(
        _claims(email=CALLER + " "),
        id="email with a trailing space: must not match the allow-list",
    ),
    pytest.param(
        _claims(email=CALLER + ".attacker.example"),
        id="email with the allowed one as a prefix: exact match only",
    ),
]

#: Genuine tokens whose email must not be trusted for the allow-list. As
#: ``s2sauth.verify.claims`` documents, the token is still valid but
#: ``Caller.email`` is ``None`` unless ``email_verified`` is the boolean ``true``,
#: so no email allow-list matches: 403.
UNVERIFIED_EMAIL = [
    pytest.param(
        _claims(email_verified="true"),
        id="email_verified the string 'true': must not satisfy an email allow-list",
    ),
    pytest.param(
        _claims(email_verified=1),
        id="email_verified the number 1: must not satisfy an email allow-list",
    ),
    pytest.param(
        _claims(email_verified=DELETE),
        id="email_verified missing: must not satisfy an email allow-list",
    ),
]

#: Defects an HTTP server removes or refuses before any application sees them, so
#: they are checked against the Verifier alone.
VERIFIER_ONLY = [
    pytest.param(lambda f: f.good + " ", id="trailing space: no whitespace in a token"),
    pytest.param(lambda f: f.good + "\n", id="trailing newline: no whitespace in a token"),
    pytest.param(lambda f: " " + f.good, id="leading space: no whitespace in a token"),
    pytest.param(lambda f: f.good + "\u00e9", id="a non-ASCII character appended"),
    pytest.param(lambda f: f.good.replace(".", "\u2024", 1), id="a one-dot leader for a dot"),
    pytest.param(lambda f: f.good[:20] + "\x00" + f.good[20:], id="a NUL inside the token"),
    pytest.param(lambda f: f.good + "." * 9000, id="over 8 KiB of dots: size cap first"),
]


def _rejections(expected: int) -> type[S2SAuthError]:
    return InvalidTokenError if expected == 401 else CallerNotAllowedError


CASES = [pytest.param(*p.values, 401, id=p.id) for p in ATTACKS] + [
    pytest.param(*p.values, 403, id=p.id) for p in NOT_ALLOWED + UNVERIFIED_EMAIL
]


def test_there_are_at_least_forty_attacks() -> None:
    """The issue asks for at least forty crafted tokens beyond the ordinary claim tests."""
    assert len(ATTACKS) + len(NOT_ALLOWED) + len(UNVERIFIED_EMAIL) + len(VERIFIER_ONLY) >= 40


def test_genuine_token_is_accepted(forge: Forge, verifier: Any) -> None:
    """The forge's own signature verifies: a refusal below is never the forge's fault."""
    caller = verifier.verify(forge.good)
    assert caller.email == CALLER


def test_genuine_stranger_is_refused_with_caller_not_allowed(forge: Forge, verifier: Any) -> None:
    """A genuine token of a caller not on the allow-list raises CallerNotAllowedError."""
    with pytest.raises(CallerNotAllowedError):
        verifier.verify(forge.sign(claims=forge.claims(email=STRANGER, sub="1")))


@pytest.mark.parametrize("server", ["asgi", "wsgi", "flask", "fastapi"])
def test_genuine_token_is_served(forge: Forge, servers: dict[str, str], server: str) -> None:
    """Every server answers 200 to the genuine token and 401 to no token at all."""
    assert fetch(servers[server], forge.good).status == 200
    assert fetch(servers[server]).status == 401


@pytest.mark.parametrize(("build", "expected"), CASES)
def test_verifier_refuses(build: Build, expected: int, forge: Forge, verifier: Any) -> None:
    """The Verifier raises the typed refusal: never another exception, never a Caller."""
    token = build(forge)
    with pytest.raises(_rejections(expected)) as refused:
        verifier.verify(token)
    assert refused.value.status_code == expected
    told = f"{refused.value}\n{refused.value!r}\n{refused.value.message}"
    assert not find_leaks(told, [token])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("build", "expected"), CASES)
async def test_async_verifier_refuses(
    build: Build, expected: int, forge: Forge, verifier: Any
) -> None:
    """``averify`` refuses exactly like ``verify``."""
    with pytest.raises(_rejections(expected)):
        await verifier.averify(build(forge))


@pytest.mark.parametrize("build", VERIFIER_ONLY)
def test_verifier_refuses_what_http_would_not_carry(
    build: Build, forge: Forge, verifier: Any
) -> None:
    """Whitespace, non-ASCII and control characters never reach a verified Caller."""
    with pytest.raises(InvalidTokenError):
        verifier.verify(build(forge))


@pytest.mark.parametrize("server", ["asgi", "wsgi", "flask", "fastapi"])
@pytest.mark.parametrize(("build", "expected"), CASES)
def test_server_refuses(
    build: Build, expected: int, server: str, forge: Forge, servers: dict[str, str]
) -> None:
    """Each adapter under a real server answers 401 (or 403), never 200 or 5xx.

    A 401 carries a Bearer challenge, and no reply holds any trace of the token.
    """
    token = build(forge)
    reply = fetch(servers[server], token)
    assert reply.status == expected, reply.body
    if expected == 401:
        assert reply.headers["www-authenticate"].startswith("Bearer ")
    assert not find_leaks(reply.text, [token])
