"""Tools the security suites share: a token forge, a leak scanner, and the soak harness.

The :class:`Forge` signs arbitrary bytes with the emulator's own private key, so
a crafted token is exactly as trusted as a Google-minted one except for the one
defect under test: when a verifier accepts it, the verifier is at fault, not the
forgery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ROOT = Path(__file__).resolve().parents[2]


def load_soak() -> ModuleType:
    """Import ``benchmarks/soak.py`` (servers, apps and the load driver) by path."""
    name = "s2sauth_benchmarks_soak"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


soak = load_soak()
AUDIENCE: str = soak.AUDIENCE
CALLER: str = soak.CALLER
STRANGER: str = soak.STRANGER

#: Remove a member from a header or claims dict built by :meth:`Forge.header`/:meth:`Forge.claims`.
DELETE = object()


def b64url(data: bytes) -> str:
    """Unpadded base64url, the canonical JWS segment encoding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(segment: str) -> bytes:
    """Decode a (canonical) base64url segment."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def segment(value: Any) -> str:
    """Encode a header or payload: a dict/list/number as compact JSON, str as raw JSON text."""
    if isinstance(value, bytes):
        return b64url(value)
    if isinstance(value, str):
        return b64url(value.encode("utf-8"))
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def raw_json(obj: dict[str, Any], **literals: str) -> str:
    """``obj`` as JSON text with some members' values replaced by raw JSON ``literals``.

    For what ``json.dumps`` will not write, e.g. ``raw_json(claims, exp="NaN")``.
    """
    marked = dict(obj)
    for name in literals:
        marked[name] = f"__raw_{name}__"
    text = json.dumps(marked, separators=(",", ":"))
    for name, literal in literals.items():
        text = text.replace(f'"__raw_{name}__"', literal)
    return text


def sign_bytes(alg: str, key: Any, data: bytes) -> bytes:
    """Sign ``data`` with ``alg`` (RS256/384/512, PS256, HS256/384/512); HMAC keys are bytes."""
    if alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        return hmac.new(key, data, digest).digest()
    hash_alg = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if alg.startswith("PS"):
        pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
        return bytes(key.sign(data, pss, hash_alg))
    return bytes(key.sign(data, padding.PKCS1v15(), hash_alg))


@dataclass
class Forge:
    """Craft tokens signed (or not) by the emulator's key, starting from a genuine token's shape.

    Attributes:
        key: the emulator's RSA private key, the one its JWKS publishes under ``kid``.
        kid: the key ID the emulator publishes.
        good_header: the JOSE header of a genuine token.
        good_claims: the claims of a genuine, current token from ``CALLER`` for ``AUDIENCE``.
        attacker: an unrelated RSA-2048 key.
    """

    key: rsa.RSAPrivateKey
    kid: str
    good_header: dict[str, Any]
    good_claims: dict[str, Any]
    attacker: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    @classmethod
    def from_emulator(cls, emulator: Any) -> Forge:
        """A forge whose genuine shape is a token the emulator minted for ``CALLER``."""
        token = emulator.mint(AUDIENCE, account=CALLER)
        header_seg, payload_seg, _ = token.split(".")
        header = json.loads(unb64url(header_seg))
        return cls(
            key=emulator.private_key,
            kid=header["kid"],
            good_header=header,
            good_claims=json.loads(unb64url(payload_seg)),
        )

    def header(self, **changes: Any) -> dict[str, Any]:
        """The genuine header with ``changes`` (a value of :data:`DELETE` removes the member)."""
        return _changed(self.good_header, changes)

    def claims(self, **changes: Any) -> dict[str, Any]:
        """The genuine claims with ``changes`` (a value of :data:`DELETE` removes the member)."""
        return _changed(self.good_claims, changes)

    def seal(
        self, header_seg: str, payload_seg: str, *, alg: str = "RS256", key: Any = None
    ) -> str:
        """Sign the two given segments exactly as written (canonical or not)."""
        signing_input = f"{header_seg}.{payload_seg}".encode("ascii")
        signature = sign_bytes(alg, self.key if key is None else key, signing_input)
        return f"{header_seg}.{payload_seg}.{b64url(signature)}"

    def sign(
        self, header: Any = None, claims: Any = None, *, alg: str = "RS256", key: Any = None
    ) -> str:
        """A token of ``header`` and ``claims`` (genuine ones when omitted), signed with ``alg``."""
        header = self.good_header if header is None else header
        claims = self.good_claims if claims is None else claims
        return self.seal(segment(header), segment(claims), alg=alg, key=key)

    def unsigned(self, header: Any, claims: Any = None, signature: bytes = b"") -> str:
        """A token with a given (possibly empty) signature that nobody computed."""
        claims = self.good_claims if claims is None else claims
        return f"{segment(header)}.{segment(claims)}.{b64url(signature)}"

    @property
    def good(self) -> str:
        """A genuine token, signed by the emulator's key: every verifier must accept it."""
        return self.sign()


def _changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for name, value in changes.items():
        if value is DELETE:
            result.pop(name, None)
        else:
            result[name] = value
    return result


# --- leak scanning -------------------------------------------------------------------------

#: A window this long of a signature found in any output counts as a leak.
WINDOW = 16


def secrets_of(token: str) -> set[str]:
    """The strings that must never appear in any output.

    The token, its segments, and every :data:`WINDOW`-character window of its signature
    (``SIGNATURE_REMOVED_BY_GOOGLE`` is a public constant, not a secret).
    """
    token = token.strip()
    parts = [part for part in token.split(".") if part != "SIGNATURE_REMOVED_BY_GOOGLE"]
    found = {token, *parts} if "SIGNATURE_REMOVED_BY_GOOGLE" not in token else set(parts)
    if len(parts) >= 3:
        signature = parts[2]
        found.update(signature[i : i + WINDOW] for i in range(len(signature) - WINDOW + 1))
    return {secret for secret in found if len(secret) >= WINDOW}


def find_leaks(text: str, tokens: list[str]) -> list[str]:
    """Which of ``tokens`` leak into ``text`` (described without quoting the secret)."""
    leaks = []
    for number, token in enumerate(tokens):
        hits = [secret for secret in secrets_of(token) if secret in text]
        if hits:
            leaks.append(
                f"token #{number}: {len(hits)} secret substring(s), e.g. at offset "
                f"{text.index(hits[0])} of {len(text)} characters"
            )
    return leaks


# --- HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An HTTP answer as a client saw it."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """Status, headers and body as one text, for leak scanning."""
        head = "\n".join(f"{name}: {value}" for name, value in self.headers.items())
        return f"{self.status}\n{head}\n\n{self.body.decode('utf-8', 'replace')}"


def fetch(
    base_url: str,
    token: str | None = None,
    *,
    path: str = "/",
    headers: dict[str, str] | None = None,
) -> Reply:
    """GET ``path`` with ``Authorization: Bearer token`` (when given) over a fresh connection."""
    host, port = base_url.removeprefix("http://").split(":")
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()
