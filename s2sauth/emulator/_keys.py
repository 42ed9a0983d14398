"""Signing keys shaped like Google's, and the compact-JWS encoding the emulator mints with."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from .._errors import ConfigurationError

# The subject Google's own v1 certificates carry.
_CERT_COMMON_NAME = "federated-signon.system.gserviceaccount.com"
_CERT_VALIDITY = datetime.timedelta(days=14)


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def generate_private_key(key_size: int) -> rsa.RSAPrivateKey:
    """A fresh RSA key with exponent 65537."""
    try:
        return rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    except ValueError as exc:
        raise ConfigurationError(f"cannot generate an RSA-{key_size} key: {exc}") from exc


@dataclass(frozen=True)
class SigningKey:
    """One key pair with its ``kid``, JWK and self-signed PEM certificate."""

    private_key: rsa.RSAPrivateKey
    kid: str = field(init=False)
    jwk: Mapping[str, str] = field(init=False)
    pem_certificate: str = field(init=False)

    def __post_init__(self) -> None:
        public_key = self.private_key.public_key()
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Google's kids are 40 hex digits; a digest of the key gives the same shape
        # and makes the kid a stable function of the key.
        kid = hashlib.sha1(der, usedforsecurity=False).hexdigest()
        numbers = public_key.public_numbers()
        jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": kid,
            "n": _uint_b64url(numbers.n),
            "e": _uint_b64url(numbers.e),
        }
        object.__setattr__(self, "kid", kid)
        object.__setattr__(self, "jwk", jwk)
        object.__setattr__(self, "pem_certificate", _self_signed_pem(self.private_key))

    @classmethod
    def generate(cls, key_size: int) -> SigningKey:
        """A new key of ``key_size`` bits."""
        return cls(generate_private_key(key_size))


@dataclass(frozen=True)
class ECSigningKey:
    """One P-256 key pair with its ``kid`` and JWK, shaped like IAP's published keys."""

    private_key: ec.EllipticCurvePrivateKey
    kid: str = field(init=False)
    jwk: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        public_key = self.private_key.public_key()
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # IAP's kids are short base64url strings; a digest of the key gives that shape.
        kid = b64url(hashlib.sha256(der).digest()[:6])
        numbers = public_key.public_numbers()
        jwk = {
            "kty": "EC",
            "alg": "ES256",
            "use": "sig",
            "kid": kid,
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }
        object.__setattr__(self, "kid", kid)
        object.__setattr__(self, "jwk", jwk)

    @classmethod
    def generate(cls) -> ECSigningKey:
        """A new P-256 key."""
        return cls(ec.generate_private_key(ec.SECP256R1()))


def _self_signed_pem(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CERT_COMMON_NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + _CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _json_segment(value: Mapping[str, Any] | bytes | str) -> str:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return b64url(value)
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def sign_compact(
    header: Mapping[str, Any] | bytes | str,
    payload: Mapping[str, Any] | bytes | str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> str:
    """``header.payload.signature`` signed RS256 with ``key`` (ES256 for a P-256 key).

    An ES256 signature is written as JWS wants it (RFC 7518 §3.4): ``r`` and ``s``
    as two 32-byte big-endian integers, not DER.

    Mappings are serialised as compact JSON; bytes and strings are taken as the
    exact JSON text to encode, so tests can sign deliberately odd documents.
    """
    signing_input = f"{_json_segment(header)}.{_json_segment(payload)}"
    data = signing_input.encode("ascii")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8  # 32 for P-256; other curves only for forgeries
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"
