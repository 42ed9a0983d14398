"""Strict compact-JWS parsing and signature checks (s2sauth.verify.jws)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from s2sauth._errors import BadSignatureError, InvalidHeaderError, MalformedTokenError
from s2sauth.emulator import Emulator
from s2sauth.verify import jws

KID = "key-1"
HEADER: dict[str, Any] = {"alg": "RS256", "kid": KID, "typ": "JWT"}
PAYLOAD: dict[str, Any] = {"sub": "1234567890", "aud": "https://svc", "n": 12}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any] | str | bytes) -> str:
    if isinstance(value, dict):
        value = json.dumps(value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    return b64(value)


def sign(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    header: dict[str, Any] | str | bytes = HEADER,
    payload: dict[str, Any] | str | bytes = PAYLOAD,
) -> str:
    signing_input = f"{segment(header)}.{segment(payload)}"
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{b64(signature)}"


def _signature(token: str) -> bytes:
    return jws.parse(token).signature


def replace_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def non_canonical(text: str) -> str:
    """The same bytes, spelled with a stray bit in the last base64url character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(text) % 4 in (2, 3)
    return text[:-1] + alphabet[alphabet.index(text[-1]) + 1]


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA-2048 signing key for the whole session."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """One P-256 signing key for the whole session."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def token(rsa_key: rsa.RSAPrivateKey) -> str:
    """A well-formed RS256 token."""
    return sign(rsa_key)


def test_parses_a_well_formed_token(token: str) -> None:
    """A well-formed token yields its alg, kid, payload and signing input."""
    parsed = jws.parse(token)
    assert (parsed.alg, parsed.kid, parsed.payload) == ("RS256", KID, PAYLOAD)
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()
    assert len(parsed.signature) == 256
    assert not parsed.signature_removed


def test_repr_shows_no_signature_or_claims(token: str) -> None:
    """The parsed token's repr names alg and kid only."""
    assert repr(jws.parse(token)) == f"CompactJWS(alg='RS256', kid='{KID}')"


def test_typ_may_be_absent(rsa_key: rsa.RSAPrivateKey) -> None:
    """A header without typ is accepted."""
    assert jws.parse(sign(rsa_key, {"alg": "RS256", "kid": KID})).kid == KID


def test_token_at_the_size_cap_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    """A token of at most MAX_TOKEN_SIZE bytes parses."""
    # Each 3 payload bytes add 4 characters: start a few bytes short of the cap, not at 0.
    empty = len(sign(rsa_key, payload={"x": ""}))
    filler = max(0, (jws.MAX_TOKEN_SIZE - empty) * 3 // 4 - 8)
    assert len(sign(rsa_key, payload={"x": "a" * filler})) <= jws.MAX_TOKEN_SIZE
    while True:
        candidate = sign(rsa_key, payload={"x": "a" * (filler + 1)})
        if len(candidate) > jws.MAX_TOKEN_SIZE:
            break
        filler += 1
    token = sign(rsa_key, payload={"x": "a" * filler})
    assert jws.MAX_TOKEN_SIZE - 4 <= len(token) <= jws.MAX_TOKEN_SIZE
    assert jws.parse(token).payload == {"x": "a" * filler}
    with pytest.raises(MalformedTokenError, match="larger than 8192"):
        jws.parse(candidate)


def _parts(change: Any) -> Any:
    return lambda token: change(*token.split("."))


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "a" * (jws.MAX_TOKEN_SIZE + 1), id="over the size cap"),
        pytest.param(lambda t: t[:-3] + "é" + t[-2:], id="non-ASCII character"),
        pytest.param(_parts(lambda h, p, s: h), id="1 segment"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}"), id="2 segments"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}.{s}.{s}"), id="4 segments"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}.{s}.{s}.{s}"), id="5 segments"),
        pytest.param(lambda t: f"{t}.", id="trailing dot"),
        pytest.param(lambda t: f".{t}", id="leading dot"),
        pytest.param(_parts(lambda h, p, s: f".{p}.{s}"), id="empty header segment"),
        pytest.param(_parts(lambda h, p, s: f"{h}..{s}"), id="empty payload segment"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}."), id="empty signature segment"),
        pytest.param(_parts(lambda h, p, s: f"{h}=.{p}.{s}"), id="padded header"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}.{s}=="), id="padded signature"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}.{s[:-4]}+{s[-3:]}"), id="plus sign"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}.{s[:-4]}/{s[-3:]}"), id="slash"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}.{s[:100]} {s[101:]}"), id="space"),
        pytest.param(lambda t: f"{t}\n", id="trailing newline"),
        pytest.param(lambda t: f" {t}", id="leading space"),
        pytest.param(_parts(lambda h, p, s: f"{h}.\t{p}.{s}"), id="tab"),
        pytest.param(lambda t: f"{t}!", id="punctuation"),
        pytest.param(_parts(lambda h, p, s: f"{h}.{p}.{s}AAA"), id="impossible base64 length"),
        pytest.param(
            _parts(lambda h, p, s: f"{h}.{p}.{non_canonical(s)}"), id="non-canonical signature"
        ),
        pytest.param(
            _parts(lambda h, p, s: f"{non_canonical(h)}.{p}.{s}"), id="non-canonical header"
        ),
        pytest.param(
            _parts(lambda h, p, s: f"{h}.{non_canonical(p)}.{s}"), id="non-canonical payload"
        ),
    ],
)
def test_syntax_rejections_are_malformed(token: str, spoil: Any) -> None:
    """Every syntax defect (size, segments, padding, alphabet, canonical form) is malformed."""
    with pytest.raises(MalformedTokenError):
        jws.parse(spoil(token))


@pytest.mark.parametrize("value", [None, b"a.b.c", 123])
def test_non_string_token_is_malformed(value: Any) -> None:
    """A token that is not a str is malformed, not a TypeError."""
    with pytest.raises(MalformedTokenError):
        jws.parse(value)


def _nested(depth: int) -> str:
    """A payload object nesting ``depth`` levels deep (the object itself is level 1)."""
    return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xef\xbb\xbf" + json.dumps(PAYLOAD).encode(), id="UTF-8 BOM"),
        pytest.param(b'{"sub": "\xff"}', id="invalid UTF-8"),
        pytest.param(json.dumps(PAYLOAD).encode("utf-16"), id="UTF-16"),
        pytest.param('{"sub": "a", "sub": "b"}', id="duplicate member"),
        pytest.param('{"a": {"x": 1, "x": 1}}', id="duplicate nested member"),
        pytest.param('{"exp": NaN}', id="NaN"),
        pytest.param('{"exp": Infinity}', id="Infinity"),
        pytest.param('{"exp": -Infinity}', id="-Infinity"),
        pytest.param("[]", id="array"),
        pytest.param("1", id="number"),
        pytest.param('"text"', id="string"),
        pytest.param("null", id="null"),
        pytest.param("true", id="boolean"),
        pytest.param('{"a": 1', id="truncated JSON"),
        pytest.param('{"a": 1} {}', id="trailing data"),
        pytest.param("{'a': 1}", id="single quotes"),
        pytest.param("", id="empty"),
        pytest.param(_nested(jws.MAX_JSON_DEPTH + 1), id="one level too deep"),
        pytest.param(_nested(2500), id="deep enough to exhaust recursion"),
    ],
)
def test_payload_json_rejections(rsa_key: rsa.RSAPrivateKey, payload: str | bytes) -> None:
    """A payload that is not a strict UTF-8 JSON object is malformed."""
    with pytest.raises(MalformedTokenError):
        jws.parse(sign(rsa_key, payload=payload))


@pytest.mark.parametrize(
    "header",
    [
        pytest.param('{"alg": "RS256", "alg": "RS256", "kid": "k"}', id="duplicate member"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(HEADER).encode(), id="UTF-8 BOM"),
        pytest.param("[]", id="array"),
        pytest.param('{"alg": "RS256", "kid": "k", "typ": NaN}', id="NaN"),
    ],
)
def test_header_json_rejections(rsa_key: rsa.RSAPrivateKey, header: str | bytes) -> None:
    """A header that is not a strict UTF-8 JSON object is malformed."""
    with pytest.raises(MalformedTokenError):
        jws.parse(sign(rsa_key, header=header))


def test_nesting_up_to_the_limit_is_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    """A payload nesting exactly MAX_JSON_DEPTH levels parses."""
    assert "a" in jws.parse(sign(rsa_key, payload=_nested(jws.MAX_JSON_DEPTH))).payload


def test_many_shallow_brackets_are_not_too_deep(rsa_key: rsa.RSAPrivateKey) -> None:
    """Many sibling arrays are shallow, however many brackets they take."""
    payload = {f"k{i}": [[]] for i in range(40)}
    assert jws.parse(sign(rsa_key, payload=payload)).payload == payload


def with_header(**changes: Any) -> dict[str, Any]:
    header = dict(HEADER)
    for name, value in changes.items():
        if value is _ABSENT:
            header.pop(name, None)
        else:
            header[name] = value
    return header


_ABSENT = object()


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(with_header(jku="https://evil.example/keys"), id="jku"),
        pytest.param(with_header(x5u="https://evil.example/cert"), id="x5u"),
        pytest.param(with_header(jwk={"kty": "RSA", "n": "AQAB", "e": "AQAB"}), id="jwk"),
        pytest.param(with_header(x5c=["MIIB"]), id="x5c"),
        pytest.param(with_header(crit=["exp"]), id="crit"),
        pytest.param(with_header(cty="JWT"), id="cty"),
        pytest.param(with_header(extra=1), id="unknown member"),
        pytest.param(with_header(typ="JOSE"), id="typ JOSE"),
        pytest.param(with_header(typ="at+jwt"), id="typ at+jwt"),
        pytest.param(with_header(typ=None), id="typ null"),
        pytest.param(with_header(typ=1), id="typ number"),
        pytest.param(with_header(alg="none"), id="alg none"),
        pytest.param(with_header(alg="None"), id="alg None"),
        pytest.param(with_header(alg="NONE"), id="alg NONE"),
        pytest.param(with_header(alg="HS256"), id="alg HS256"),
        pytest.param(with_header(alg="RS512"), id="alg RS512"),
        pytest.param(with_header(alg="PS256"), id="alg PS256"),
        pytest.param(with_header(alg="ES256"), id="alg ES256, not configured"),
        pytest.param(with_header(alg="rs256"), id="alg lower case"),
        pytest.param(with_header(alg=_ABSENT), id="alg missing"),
        pytest.param(with_header(alg=None), id="alg null"),
        pytest.param(with_header(alg=["RS256"]), id="alg list"),
        pytest.param(with_header(alg={"x": 1}), id="alg object"),
        pytest.param(with_header(kid=_ABSENT), id="kid missing"),
        pytest.param(with_header(kid=""), id="kid empty"),
        pytest.param(with_header(kid=None), id="kid null"),
        pytest.param(with_header(kid=7), id="kid number"),
        pytest.param(with_header(kid=["k"]), id="kid list"),
        pytest.param(with_header(kid="a" * 257), id="kid too long"),
        pytest.param(with_header(kid="a b"), id="kid with space"),
        pytest.param(with_header(kid="a\nb"), id="kid with newline"),
        pytest.param(with_header(kid="é"), id="kid non-ASCII"),
        pytest.param({}, id="empty header"),
    ],
)
def test_header_rejections(rsa_key: rsa.RSAPrivateKey, header: dict[str, Any]) -> None:
    """Extra members, a bad typ, an unaccepted alg or a bad kid are invalid headers."""
    with pytest.raises(InvalidHeaderError):
        jws.parse(sign(rsa_key, header=header))


def test_header_rejection_names_the_member_not_the_token(rsa_key: rsa.RSAPrivateKey) -> None:
    """The message names the refused member and never quotes the token."""
    token = sign(rsa_key, header=with_header(jku="https://evil.example/keys"))
    with pytest.raises(InvalidHeaderError, match="'jku'") as caught:
        jws.parse(token)
    assert token.split(".")[2] not in str(caught.value)


def test_a_cached_header_still_obeys_each_verifiers_algorithms(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    """A header accepted for an ES256 verifier is still refused by an RS256-only one."""
    token = sign(ec_key, header=with_header(alg="ES256", kid="ec-cache-test"))
    assert jws.parse(token, ("RS256", "ES256")).alg == "ES256"
    with pytest.raises(InvalidHeaderError):
        jws.parse(token, ("RS256",))


def test_signature_verifies(rsa_key: rsa.RSAPrivateKey, token: str) -> None:
    """A genuine RS256 signature verifies with the signer's public key."""
    jws.verify_signature(jws.parse(token), rsa_key.public_key())


def test_signature_with_another_key_is_bad(token: str) -> None:
    """A signature made by another key does not verify."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(BadSignatureError):
        jws.verify_signature(jws.parse(token), other)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: replace_segment(t, 1, segment({**PAYLOAD, "n": 13})), id="payload"),
        pytest.param(lambda t: replace_segment(t, 2, b64(_signature(t)[::-1])), id="reversed"),
        pytest.param(lambda t: replace_segment(t, 2, b64(_signature(t)[:-1])), id="short"),
        pytest.param(lambda t: replace_segment(t, 2, b64(_signature(t) + b"\0")), id="long"),
        pytest.param(lambda t: replace_segment(t, 2, b64(b"\x00" * 256)), id="zeros"),
    ],
)
def test_tampered_token_has_a_bad_signature(
    rsa_key: rsa.RSAPrivateKey, token: str, tamper: Any
) -> None:
    """Changing the payload or the signature makes verification fail."""
    with pytest.raises(BadSignatureError):
        jws.verify_signature(jws.parse(tamper(token)), rsa_key.public_key())


def test_removed_signature_is_recognised(token: str, rsa_key: rsa.RSAPrivateKey) -> None:
    """SIGNATURE_REMOVED_BY_GOOGLE parses as a removed signature that never verifies."""
    parsed = jws.parse(replace_segment(token, 2, jws.SIGNATURE_REMOVED))
    assert parsed.signature_removed
    assert parsed.signature == b""
    with pytest.raises(BadSignatureError):
        jws.verify_signature(parsed, rsa_key.public_key())


def test_es256_verifies_when_configured(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """An ES256 token (raw r||s signature) verifies with a P-256 key when ES256 is configured."""
    token = sign(ec_key, header=with_header(alg="ES256"))
    parsed = jws.parse(token, ("ES256",))
    assert len(parsed.signature) == 64
    jws.verify_signature(parsed, ec_key.public_key())


def test_es256_der_signature_is_bad(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """An ES256 signature in DER form (not raw r||s) does not verify."""
    signing_input = f"{segment(with_header(alg='ES256'))}.{segment(PAYLOAD)}"
    der = ec_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    parsed = jws.parse(f"{signing_input}.{b64(der)}", ("ES256",))
    with pytest.raises(BadSignatureError):
        jws.verify_signature(parsed, ec_key.public_key())


def test_es256_token_with_an_rsa_key_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The key's type must suit alg: ES256 with an RSA key is refused."""
    parsed = jws.parse(sign(ec_key, header=with_header(alg="ES256")), ("RS256", "ES256"))
    with pytest.raises(InvalidHeaderError):
        jws.verify_signature(parsed, rsa_key.public_key())


def test_rs256_token_with_an_ec_key_is_refused(
    token: str, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """The key's type must suit alg: RS256 with a P-256 key is refused."""
    with pytest.raises(InvalidHeaderError):
        jws.verify_signature(jws.parse(token), ec_key.public_key())


def test_es256_with_another_curve_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """ES256 needs a P-256 key; a P-384 key is refused."""
    parsed = jws.parse(sign(ec_key, header=with_header(alg="ES256")), ("ES256",))
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(InvalidHeaderError):
        jws.verify_signature(parsed, p384)


# DER DigestInfo prefixes (RFC 8017 section 9.2, note 1).
SHA256_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
SHA512_INFO = bytes.fromhex("3051300d060960864801650304020305000440")
SHA256_INFO_NO_NULL = bytes.fromhex("302f300b0609608648016503040201" + "0420")


def raw_rsa_sign(key: rsa.RSAPrivateKey, encoded: bytes) -> bytes:
    """The RSA private operation on a hand-built encoded message, padded to the modulus size."""
    n = key.public_key().public_numbers().n
    size = (n.bit_length() + 7) // 8
    return pow(int.from_bytes(encoded, "big"), key.private_numbers().d, n).to_bytes(size, "big")


def emsa(digest_info: bytes, *, block_type: bytes = b"\x01", filler: bytes = b"\xff") -> bytes:
    """EMSA-PKCS1-v1_5 for a 2048-bit key, with parts that may be spoiled."""
    padding_string = filler * (256 - 3 - len(digest_info))
    return b"\x00" + block_type + padding_string + b"\x00" + digest_info


def with_signature(token: str, signature: bytes) -> jws.CompactJWS:
    return jws.parse(replace_segment(token, 2, b64(signature)))


def test_hand_built_pkcs1_signature_verifies(rsa_key: rsa.RSAPrivateKey, token: str) -> None:
    """The hand-built encoding below is the genuine one: it verifies (so the spoilt ones test)."""
    message = jws.parse(token).signing_input
    signature = raw_rsa_sign(rsa_key, emsa(SHA256_INFO + hashlib.sha256(message).digest()))
    assert signature == _signature(token)
    jws.verify_signature(with_signature(token, signature), rsa_key.public_key())


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda m: emsa(SHA512_INFO + hashlib.sha512(m).digest()), id="SHA-512"),
        pytest.param(lambda m: emsa(hashlib.sha256(m).digest()), id="no DigestInfo"),
        pytest.param(
            lambda m: emsa(SHA256_INFO_NO_NULL + hashlib.sha256(m).digest()), id="no NULL"
        ),
        pytest.param(
            lambda m: emsa(SHA256_INFO + hashlib.sha256(m).digest() + b"\0"), id="trailing byte"
        ),
        pytest.param(
            lambda m: emsa(SHA256_INFO + hashlib.sha256(m).digest(), filler=b"\xfe"),
            id="padding not FF",
        ),
        pytest.param(
            lambda m: emsa(SHA256_INFO + hashlib.sha256(m).digest(), block_type=b"\x02"),
            id="block type 2",
        ),
        pytest.param(
            lambda m: emsa(SHA256_INFO + hashlib.sha256(m + b"x").digest()), id="other message"
        ),
    ],
)
def test_spoilt_pkcs1_encodings_are_bad(
    rsa_key: rsa.RSAPrivateKey, token: str, encode: Any
) -> None:
    """Another hash, a missing or loose DigestInfo, or bad padding never verifies."""
    message = jws.parse(token).signing_input
    parsed = with_signature(token, raw_rsa_sign(rsa_key, encode(message)))
    with pytest.raises(BadSignatureError):
        jws.verify_signature(parsed, rsa_key.public_key())


def test_signature_not_below_the_modulus_is_bad(rsa_key: rsa.RSAPrivateKey, token: str) -> None:
    """A signature value equal to the modulus (s = 0 mod n) is refused."""
    n = rsa_key.public_key().public_numbers().n
    with pytest.raises(BadSignatureError):
        jws.verify_signature(with_signature(token, n.to_bytes(256, "big")), rsa_key.public_key())


def test_signature_has_one_length(rsa_key: rsa.RSAPrivateKey) -> None:
    """A genuine signature with a leading zero byte verifies only at the modulus' length."""
    for n in range(5000):
        token = sign(rsa_key, payload={**PAYLOAD, "n": n})
        if _signature(token)[0] == 0:
            break
    else:  # pragma: no cover - a chance of about 1 in 3e8
        pytest.fail("no signature with a leading zero byte")
    key = rsa_key.public_key()
    jws.verify_signature(jws.parse(token), key)
    with pytest.raises(BadSignatureError):
        jws.verify_signature(with_signature(token, _signature(token)[1:]), key)


# -- helpers of the tests below ------------------------------------------------------------


AUDIENCE = "https://svc-abc-uc.a.run.app"


# -- jws -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "none", "PS256"])
def test_hand_built_jws_with_an_unsupported_alg_is_refused(
    emulator: Emulator, emulator_key: rsa.RSAPrivateKey, alg: str
) -> None:
    """verify_signature refuses a hand-built CompactJWS whose alg parse() would never admit."""
    parsed = jws.parse(emulator.mint(AUDIENCE))
    forged = jws.CompactJWS(
        alg, parsed.kid, parsed.payload, parsed.signing_input, parsed.signature, False
    )
    with pytest.raises(InvalidHeaderError, match=f"alg '{alg}' is not supported") as caught:
        jws.verify_signature(forged, emulator_key.public_key())
    assert caught.value.reason == "invalid_header"
