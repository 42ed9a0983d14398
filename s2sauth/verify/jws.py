"""Strict compact-JWS parsing and signature checks: the first thing a token meets.

A token is parsed completely, and rejected at the first irregularity, before any
key is looked up or any cryptography runs:

* at most :data:`MAX_TOKEN_SIZE` bytes of ASCII;
* exactly three segments of unpadded, *canonical* base64url (no ``=``, ``+``,
  ``/`` or whitespace, and no stray bits in the last character, so that one
  token has exactly one spelling);
* header and payload are UTF-8 JSON objects without a BOM, duplicate members,
  ``NaN``/``Infinity``, or nesting deeper than :data:`MAX_JSON_DEPTH`;
* the header holds only ``alg``, ``kid`` and ``typ``. ``jku``, ``x5u``, ``jwk``,
  ``crit`` and everything else are refused, so a token can never point at its
  own key. ``typ``, when present, is ``"JWT"``; ``kid`` is a short printable
  string; ``alg`` is one of the algorithms the *verifier* was configured with
  (``none`` and HMAC never are).

The signature is then checked with the published key for ``kid``; the key's
type must suit ``alg`` (an RSA key for RS256, a P-256 key for ES256), so the
algorithm is fixed by configuration and key, never by the token alone.

This is the hot path of every first-seen token, so the happy path is a few
string scans, two strict base64 decodes, one JSON parse and one signature check
(a header segment seen before is answered from a small cache); the detailed
diagnosis of a malformed token runs only when the fast checks fail.
"""

from __future__ import annotations

import binascii
import json
import re
import sys
from collections.abc import Collection
from json.scanner import make_scanner
from typing import Any, Final, NamedTuple, NoReturn, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .._cloudrun import SIGNATURE_REMOVED
from .._errors import BadSignatureError, InvalidHeaderError, MalformedTokenError

# For users: the limits and the key type. parse() and verify_signature() are the
# verifier's steps, importable for tests, not a promise.
__all__ = [
    "MAX_TOKEN_SIZE",
    "SIGNATURE_REMOVED",
    "SUPPORTED_ALGORITHMS",
    "PublicKey",
]

#: Largest token accepted, in bytes. Google ID tokens are about 1 KB; 8 KiB leaves
#: room for generous custom claims while bounding the work a junk token can cause.
MAX_TOKEN_SIZE: Final = 8192

#: Deepest JSON nesting accepted in the header or payload (Google's own tokens
#: nest three levels, in the ``google.compute_engine`` claim).
MAX_JSON_DEPTH: Final = 16

#: Algorithms a verifier may be configured with. Google signs ID tokens with RS256.
SUPPORTED_ALGORITHMS: Final = frozenset({"RS256", "ES256"})


#: A verification key as :class:`~s2sauth.verify.keys.KeySet` hands it out.
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_HEADER_MEMBERS: Final = frozenset({"alg", "kid", "typ"})
_KID = re.compile(r"[A-Za-z0-9._~+/=:-]{1,256}")
_B64URL_CHARS = re.compile(r"[A-Za-z0-9_-]*")
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
_HEADER_CACHE_SIZE = 64
# Header segments that passed every check -> (alg, kid). Shared by all verifiers: a
# hit is used only if its alg is one the asking verifier accepts.
_headers: dict[str, tuple[str, str]] = {}
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# A segment whose length is 2 or 3 mod 4 ends in a character carrying 4 or 2 unused
# bits; canonical encoders leave them zero. Characters with any unused bit set:
_NON_CANONICAL_LAST: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset(),
    frozenset(c for i, c in enumerate(_ALPHABET) if i & 0b1111),
    frozenset(c for i, c in enumerate(_ALPHABET) if i & 0b11),
)
_PKCS1V15: Final = padding.PKCS1v15()
_SHA256: Final = hashes.SHA256()
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
_MAX_SHOWN = 40


class CompactJWS(NamedTuple):
    """A token that passed every syntax and header check; its signature is not checked yet.

    Attributes:
        alg: the header's algorithm, one of the configured ones.
        kid: the header's key ID.
        payload: the claims, a JSON object.
        signing_input: the bytes the signature covers (``header.payload``).
        signature: the decoded signature; empty when Cloud Run removed it.
        signature_removed: whether the signature reads ``SIGNATURE_REMOVED_BY_GOOGLE``.
    """

    alg: str
    kid: str
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes
    signature_removed: bool

    def __repr__(self) -> str:
        # The signature and payload stay out of reprs, tracebacks and logs.
        return f"CompactJWS(alg={self.alg!r}, kid={self.kid!r})"


class _JSONRejected(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:  # pragma: no branch - a shorter dict means a repeated name
            if name in seen:
                raise _JSONRejected(f"duplicate member {_show(name)}")
            seen.add(name)
    return obj


def _constant(name: str) -> NoReturn:
    raise _JSONRejected(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)
# The decoder's scanner, called directly: the common case (no surrounding whitespace)
# then skips decode()'s two whitespace scans. (The stub wants the decoder's duck type.)
_scan = make_scanner(_DECODER)  # type: ignore[arg-type]


def parse(token: str, algorithms: Collection[str] = ("RS256",)) -> CompactJWS:
    """Parse ``token`` strictly, without any cryptography.

    Use :class:`~s2sauth.verify.verifier.Verifier`; this is its first step,
    public for tools that want the syntax verdict alone.

    Args:
        token: a compact JWS, as it came off the wire.
        algorithms: the algorithms the caller accepts (a subset of
            :data:`SUPPORTED_ALGORITHMS`).

    Raises:
        MalformedTokenError: not a well-formed compact JWS with JSON object parts.
        InvalidHeaderError: the header has a member, ``alg``, ``kid`` or ``typ`` refused.
    """
    if not isinstance(token, str):
        raise MalformedTokenError(f"a token must be a str, not {type(token).__name__}")
    if len(token) > MAX_TOKEN_SIZE:
        raise MalformedTokenError(f"the token is larger than {MAX_TOKEN_SIZE} bytes")
    # Cheap screens first; the base64 decoder rejects every other stray character.
    if not token.isascii() or "=" in token or "+" in token or "/" in token:
        _diagnose(token)
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
    except ValueError:
        _diagnose(token)
    if not (header_b64 and payload_b64 and signature_b64):
        _diagnose(token)
    cached = _headers.get(header_b64)
    if cached is not None and cached[0] in algorithms:
        alg, kid = cached
    else:
        alg, kid = _check_header(_json_object(_decode(header_b64, "header"), "header"), algorithms)
        _remember_header(header_b64, alg, kid)
    payload = _json_object(_decode(payload_b64, "payload"), "payload")
    removed = signature_b64 == SIGNATURE_REMOVED
    signature = b"" if removed else _decode(signature_b64, "signature")
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    return CompactJWS(alg, kid, payload, signing_input, signature, removed)


def verify_signature(jws: CompactJWS, key: PublicKey) -> None:
    """Check the signature of ``jws`` with ``key``.

    Args:
        jws: from :func:`parse`, with its signature present.
        key: the published key for ``jws.kid``.

    Raises:
        InvalidHeaderError: the key's type does not suit ``jws.alg``.
        BadSignatureError: the signature does not verify (or was removed).
    """
    if jws.signature_removed:
        raise BadSignatureError("the token has no signature to check")
    try:
        if jws.alg == "RS256":
            if not isinstance(key, rsa.RSAPublicKey):
                raise _key_mismatch(jws)
            key.verify(jws.signature, jws.signing_input, _PKCS1V15, _SHA256)
        elif jws.alg == "ES256":
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise _key_mismatch(jws)
            if len(jws.signature) != 64:
                raise InvalidSignature
            r = int.from_bytes(jws.signature[:32], "big")
            s = int.from_bytes(jws.signature[32:], "big")
            key.verify(encode_dss_signature(r, s), jws.signing_input, _ECDSA_SHA256)
        else:  # parse() admits only supported algorithms
            raise InvalidHeaderError(f"alg {_show(jws.alg)} is not supported")
    except InvalidSignature:
        raise BadSignatureError(
            f"the signature does not verify with the published key {_show(jws.kid)}"
        ) from None


def _key_mismatch(jws: CompactJWS) -> InvalidHeaderError:
    return InvalidHeaderError(
        f"the published key {_show(jws.kid)} is not a key for alg {_show(jws.alg)}"
    )


def _decode(segment: str, part: str) -> bytes:
    remainder = len(segment) % 4
    if remainder == 1:
        raise MalformedTokenError(f"the {part} segment has an impossible base64url length")
    if segment[-1] in _NON_CANONICAL_LAST[remainder]:
        raise MalformedTokenError(f"the {part} segment is not canonical base64url")
    data = segment.encode("ascii").translate(_URLSAFE_TO_STANDARD) + _PADDING[remainder]
    try:
        return _strict_b64decode(data)
    except binascii.Error:
        raise MalformedTokenError(
            f"the {part} segment has characters outside the base64url alphabet"
        ) from None


if sys.version_info >= (3, 11):

    def _strict_b64decode(data: bytes) -> bytes:
        return binascii.a2b_base64(data, strict_mode=True)

else:  # pragma: no cover - Python 3.10 has no strict mode
    _STANDARD_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")

    def _strict_b64decode(data: bytes) -> bytes:
        if not _STANDARD_B64.fullmatch(data):
            raise binascii.Error("not base64")
        return binascii.a2b_base64(data)


def _remember_header(segment: str, alg: str, kid: str) -> None:
    # Google signs with a handful of keys, so a handful of header segments recur in
    # every token; remembering them skips a decode and a JSON parse per token. The
    # cache is bounded by starting over when full, which junk headers can cause but
    # only at the cost of re-parsing.
    if len(_headers) >= _HEADER_CACHE_SIZE:
        _headers.clear()
    _headers[segment] = (alg, kid)


def _json_object(data: bytes, part: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedTokenError(f"the {part} is not UTF-8") from None
    try:
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            # Whitespace around the JSON, a BOM, or an error to report: the slow path.
            if text.startswith("\ufeff"):
                raise MalformedTokenError(f"the {part} starts with a byte order mark")
            value = _DECODER.decode(text)
    except RecursionError:
        raise MalformedTokenError(f"the {part} JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or a duplicate member or NaN
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise MalformedTokenError(f"the {part} is not valid JSON: {detail}") from None
    if type(value) is not dict:
        raise MalformedTokenError(f"the {part} is not a JSON object")
    # Each nested object or array costs at least one bracket, so only a part with
    # many brackets can be too deep, and only that one is walked. The first screen
    # (memchr-fast) spares the counting for the usual flat object.
    if (
        ("[" in text or text.find("{", 1) != -1)
        and text.count("{") + text.count("[") > MAX_JSON_DEPTH
        and _depth(value) > MAX_JSON_DEPTH
    ):
        raise MalformedTokenError(f"the {part} JSON nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _check_header(header: dict[str, Any], algorithms: Collection[str]) -> tuple[str, str]:
    if not _HEADER_MEMBERS.issuperset(header):
        extra = sorted(_show(name) for name in header.keys() - _HEADER_MEMBERS)
        raise InvalidHeaderError(
            f"the header has members {', '.join(extra)}; only alg, kid and typ are accepted "
            "(a token may not name or carry its own key)"
        )
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        if isinstance(alg, str) and alg.lower() == "none":
            raise InvalidHeaderError("unsigned tokens (alg none) are never accepted")
        shown = "missing" if alg is None else _show(alg)
        raise InvalidHeaderError(
            f"alg {shown} is not accepted; this verifier accepts {', '.join(sorted(algorithms))}"
        )
    typ = header.get("typ", "JWT")
    if typ != "JWT":
        raise InvalidHeaderError(f"typ {_show(typ)} is not accepted; an ID token's typ is JWT")
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        shown = "missing" if kid is None else _show(kid)
        raise InvalidHeaderError(
            f"kid {shown} is not a key ID (1-256 printable characters naming a published key)"
        )
    return alg, kid


def _diagnose(token: str) -> NoReturn:
    """Say precisely why ``token`` failed the fast syntax check."""
    if not token:
        raise MalformedTokenError("the token is empty")
    if not token.isascii():
        raise MalformedTokenError("the token contains non-ASCII characters")
    segments = token.split(".")
    if len(segments) != 3:
        raise MalformedTokenError(
            f"a compact JWS has 3 dot-separated segments, this token has {len(segments)}"
        )
    for part, segment in zip(("header", "payload", "signature"), segments, strict=True):
        if not segment:
            raise MalformedTokenError(f"the {part} segment is empty")
        if "=" in segment:
            raise MalformedTokenError(f"the {part} segment is padded; JWS base64url has no '='")
        if not _B64URL_CHARS.fullmatch(segment):
            raise MalformedTokenError(
                f"the {part} segment has characters outside the base64url alphabet"
            )
    raise MalformedTokenError("the token is not a compact JWS")  # pragma: no cover


def _show(value: object) -> str:
    # Claim and header values are attacker-chosen: quote them and keep them short.
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
