"""The emulator over real HTTP: metadata protocol, certs, tokens, keys, faults and the CLI."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import google.auth.transport.requests
import google.oauth2.id_token
import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from s2sauth._errors import ConfigurationError
from s2sauth.emulator import Emulator

CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
AUDIENCE = "https://callee-xyz-uc.a.run.app"
FLAVOR = {"Metadata-Flavor": "Google"}
ACCOUNTS = "/computeMetadata/v1/instance/service-accounts"
IDENTITY = f"{ACCOUNTS}/default/identity?audience={AUDIENCE}&format=full"


class Reply:
    """A reply as the tests look at it; header names lower-case."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    emulator: Emulator,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Reply:
    conn = http.client.HTTPConnection(emulator.host, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def metadata(emulator: Emulator, path: str, **kwargs: Any) -> Reply:
    return fetch(emulator, path, FLAVOR, **kwargs)


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(b64decode(header)), json.loads(b64decode(payload))


def jwks_key(jwk: Mapping[str, str]) -> rsa.RSAPublicKey:
    n = int.from_bytes(b64decode(jwk["n"]), "big")
    e = int.from_bytes(b64decode(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def verify_with_jwks(emulator: Emulator, token: str) -> None:
    """Check ``token``'s signature with the published key its kid names (cryptography only)."""
    keys = {jwk["kid"]: jwks_key(jwk) for jwk in fetch(emulator, "/oauth2/v3/certs").json()["keys"]}
    header, _ = decode(token)
    signing_input, _, signature = token.rpartition(".")
    keys[header["kid"]].verify(
        b64decode(signature), signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.fixture
def google_request() -> Iterator[google.auth.transport.requests.Request]:
    """A google-auth transport over a proxy-free requests session, closed afterwards."""
    with requests.Session() as session:
        session.trust_env = False
        yield google.auth.transport.requests.Request(session)


def child_env(emulator: Emulator) -> dict[str, str]:
    """This process's environment, pointed at the emulator, with no ADC or proxies."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.upper()
        not in {
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GCE_METADATA_ROOT",
            "GCE_METADATA_MTLS_MODE",
            "NO_GCE_CHECK",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        }
    }
    env.update(emulator.environ(), NO_PROXY="*")
    return env


# --- the metadata protocol ------------------------------------------------------------


def test_ping_needs_no_flavor(emulator: Emulator) -> None:
    """``/`` answers 200 with ``Metadata-Flavor: Google`` even without the request header."""
    reply = fetch(emulator, "/")
    assert reply.status == 200
    assert reply.headers["metadata-flavor"] == "Google"


def test_metadata_root_lists_directories(emulator: Emulator) -> None:
    """``/computeMetadata/v1/`` lists ``instance/`` and ``project/``."""
    reply = metadata(emulator, "/computeMetadata/v1/")
    assert (reply.status, reply.text) == (200, "instance/\nproject/\n")
    assert reply.headers["metadata-flavor"] == "Google"


@pytest.mark.parametrize(
    "path",
    [
        IDENTITY,
        f"{ACCOUNTS}/default/email",
        f"{ACCOUNTS}/default/token",
        "/computeMetadata/v1/project/project-id",
        "/computeMetadata/v1/",
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Metadata-Flavor": "google-ish"}], ids=["none", "wrong"])
def test_flavor_required(emulator: Emulator, path: str, headers: dict[str, str]) -> None:
    """Without ``Metadata-Flavor: Google`` every metadata path is 403, itself flavoured."""
    reply = fetch(emulator, path, headers)
    assert reply.status == 403
    assert reply.headers["metadata-flavor"] == "Google"
    assert b"eyJ" not in reply.body


@pytest.mark.parametrize("path", ["/", IDENTITY])
def test_x_forwarded_for_refused(emulator: Emulator, path: str) -> None:
    """A request carrying ``X-Forwarded-For`` is refused with 403."""
    reply = fetch(emulator, path, {**FLAVOR, "X-Forwarded-For": "203.0.113.9"})
    assert reply.status == 403
    assert reply.headers["metadata-flavor"] == "Google"


@pytest.mark.parametrize("query", ["", "?format=full", "?audience=&format=full"])
def test_identity_requires_audience(emulator: Emulator, query: str) -> None:
    """An identity request without a non-empty audience is 400."""
    reply = metadata(emulator, f"{ACCOUNTS}/default/identity{query}")
    assert reply.status == 400
    assert reply.headers["metadata-flavor"] == "Google"


def test_identity_rejects_unknown_format(emulator: Emulator) -> None:
    """``format`` other than ``standard`` or ``full`` is 400."""
    reply = metadata(emulator, f"{ACCOUNTS}/default/identity?audience={AUDIENCE}&format=jwt")
    assert reply.status == 400


def test_identity_full_token_is_google_shaped(emulator: Emulator) -> None:
    """``format=full`` gives a raw JWT with exactly Google's header and claims."""
    reply = metadata(emulator, IDENTITY)
    assert reply.status == 200
    assert reply.headers["metadata-flavor"] == "Google"
    assert int(reply.headers["content-length"]) == len(reply.body)
    header, claims = decode(reply.text)
    assert header == {"alg": "RS256", "kid": emulator.kid, "typ": "JWT"}
    subject = emulator.subject(CALLER)
    assert claims == {
        "aud": AUDIENCE,
        "azp": subject,
        "email": CALLER,
        "email_verified": True,
        "exp": claims["iat"] + 3600,
        "iat": claims["iat"],
        "iss": "https://accounts.google.com",
        "sub": subject,
    }
    assert isinstance(claims["iat"], int)


@pytest.mark.parametrize("query", ["&format=standard", "", "&format=standard&licenses=TRUE"])
def test_identity_standard_token_has_no_email(emulator: Emulator, query: str) -> None:
    """``format=standard`` (the default) leaves ``email`` and ``email_verified`` out."""
    reply = metadata(emulator, f"{ACCOUNTS}/default/identity?audience={AUDIENCE}{query}")
    _, claims = decode(reply.text)
    assert "email" not in claims and "email_verified" not in claims
    assert claims["sub"] == emulator.subject(CALLER)


@pytest.mark.parametrize(
    ("account", "email"),
    [("default", CALLER), (CALLER, CALLER), (STRANGER, STRANGER), (STRANGER.upper(), STRANGER)],
)
def test_identity_for_named_account(emulator: Emulator, account: str, email: str) -> None:
    """``default`` is the first account; any served account can be named by email."""
    reply = metadata(emulator, f"{ACCOUNTS}/{account}/identity?audience={AUDIENCE}&format=full")
    _, claims = decode(reply.text)
    assert (claims["email"], claims["sub"]) == (email, emulator.subject(email))


def test_identity_accepts_post(emulator: Emulator) -> None:
    """A POST (google-auth's certificate-bound request) is answered like a GET."""
    reply = metadata(emulator, IDENTITY, method="POST", body=b'{"certificate_chain": ""}')
    assert reply.status == 200
    assert decode(reply.text)[1]["aud"] == AUDIENCE


@pytest.mark.parametrize(
    "path",
    [
        f"{ACCOUNTS}/nobody@demo-project.iam.gserviceaccount.com/identity?audience=x",
        f"{ACCOUNTS}/nobody@demo-project.iam.gserviceaccount.com/email",
        f"{ACCOUNTS}/default/nonsense",
        "/computeMetadata/v1/instance/zone-of-nowhere",
        "/computeMetadata/v2/",
        "/favicon.ico",
    ],
)
def test_unknown_account_or_path_is_404(emulator: Emulator, path: str) -> None:
    """Unknown service accounts and paths are 404, still flavoured."""
    reply = metadata(emulator, path)
    assert reply.status == 404
    assert reply.headers["metadata-flavor"] == "Google"


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_other_methods_not_allowed(emulator: Emulator, method: str) -> None:
    """Methods other than GET (and POST for tokens) are 405 with ``Allow``."""
    reply = metadata(emulator, IDENTITY, method=method)
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, POST"
    assert reply.headers["metadata-flavor"] == "Google"


def test_malformed_request_gets_flavoured_400(emulator: Emulator) -> None:
    """A request line that is not HTTP gets a 400 that still says ``Metadata-Flavor``."""
    host, port = emulator.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"NOT AN HTTP REQUEST AT ALL\r\n\r\n")
        with sock.makefile("rb") as stream:
            raw = stream.read()
    head = raw.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 400")
    assert "metadata-flavor: google" in head


def test_token_endpoint(emulator: Emulator) -> None:
    """``token?scopes=...`` answers an access-token JSON like the real server's."""
    reply = metadata(emulator, f"{ACCOUNTS}/default/token?scopes=a,b")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    data = reply.json()
    assert set(data) == {"access_token", "expires_in", "token_type"}
    assert data["access_token"].startswith("ya29.")
    assert (data["expires_in"], data["token_type"]) == (3599, "Bearer")
    assert metadata(emulator, f"{ACCOUNTS}/default/token").json() != data


@pytest.mark.parametrize(("account", "email"), [("default", CALLER), (STRANGER, STRANGER)])
def test_email_endpoint(emulator: Emulator, account: str, email: str) -> None:
    """``email`` answers the account's email as plain text."""
    reply = metadata(emulator, f"{ACCOUNTS}/{account}/email")
    assert (reply.status, reply.text) == (200, email)


def test_project_ids(emulator: Emulator) -> None:
    """``project/project-id`` and ``project/numeric-project-id`` answer the configured ids."""
    assert metadata(emulator, "/computeMetadata/v1/project/project-id").text == "demo-project"
    numeric = metadata(emulator, "/computeMetadata/v1/project/numeric-project-id").text
    assert numeric == "123456789012"


def test_recursive_service_accounts(emulator: Emulator) -> None:
    """``service-accounts/?recursive=true`` lists default and each email, as JSON."""
    reply = metadata(emulator, f"{ACCOUNTS}/?recursive=true")
    assert reply.headers["content-type"] == "application/json"
    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    caller = {"aliases": ["default"], "email": CALLER, "scopes": scopes}
    assert reply.json() == {
        "default": caller,
        CALLER: caller,
        STRANGER: {"aliases": [], "email": STRANGER, "scopes": scopes},
    }


def test_recursive_one_account_and_project(emulator: Emulator) -> None:
    """One account's directory and the project answer recursively too."""
    account = metadata(emulator, f"{ACCOUNTS}/default/?recursive=true").json()
    assert account["email"] == CALLER and account["aliases"] == ["default"]
    project = metadata(emulator, "/computeMetadata/v1/project/?recursive=true").json()
    assert project == {"numericProjectId": 123456789012, "projectId": "demo-project"}


def test_directory_listings(emulator: Emulator) -> None:
    """Directories without ``recursive`` list their entries, one per line."""
    assert metadata(emulator, f"{ACCOUNTS}/").text == f"default/\n{CALLER}/\n{STRANGER}/\n"
    leaves = metadata(emulator, f"{ACCOUNTS}/default/").text.split()
    assert leaves == ["aliases", "email", "identity", "scopes", "token"]
    assert metadata(emulator, f"{ACCOUNTS}/default/aliases").text == "default\n"


def test_keep_alive_serves_several_requests_per_connection(emulator: Emulator) -> None:
    """HTTP/1.1 keep-alive: three requests over one connection."""
    conn = http.client.HTTPConnection(emulator.host, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", IDENTITY, headers=FLAVOR)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
            assert not response.will_close
    finally:
        conn.close()
    assert emulator.counters["identity"] == 3


def test_server_is_silent(emulator: Emulator, capfd: pytest.CaptureFixture[str]) -> None:
    """Serving (including errors and malformed requests) prints nothing at all."""
    token = metadata(emulator, IDENTITY).text
    metadata(emulator, f"{ACCOUNTS}/default/identity")
    fetch(emulator, IDENTITY)
    metadata(emulator, "/nowhere", method="PATCH")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert token.count(".") == 2


def test_concurrent_requests_are_all_answered(emulator: Emulator) -> None:
    """Sixteen threads asking at once all get tokens, and every request is counted."""
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def ask() -> None:
        barrier.wait()
        for _ in range(5):
            status = metadata(emulator, IDENTITY).status
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 80
    assert emulator.counters["identity"] == 80


# --- certs ----------------------------------------------------------------------------


def test_jwks_endpoint(emulator: Emulator) -> None:
    """``/oauth2/v3/certs`` is a JWKS of RS256 signing keys with Google's caching headers."""
    reply = fetch(emulator, "/oauth2/v3/certs")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.headers["cache-control"] == "public, max-age=3600, must-revalidate, no-transform"
    assert "metadata-flavor" not in reply.headers and "age" not in reply.headers
    (jwk,) = reply.json()["keys"]
    assert set(jwk) == {"kty", "alg", "use", "kid", "n", "e"}
    assert (jwk["kty"], jwk["alg"], jwk["use"], jwk["e"]) == ("RSA", "RS256", "sig", "AQAB")
    assert jwk["kid"] == emulator.kid and len(jwk["kid"]) == 40
    assert jwks_key(jwk).key_size == 2048
    assert reply.json() == emulator.jwks()


def test_pem_certs_endpoint(emulator: Emulator) -> None:
    """``/oauth2/v1/certs`` maps each kid to a self-signed X.509 PEM certificate."""
    reply = fetch(emulator, "/oauth2/v1/certs")
    assert reply.headers["cache-control"] == "public, max-age=3600, must-revalidate, no-transform"
    certs = reply.json()
    assert list(certs) == [emulator.kid]
    certificate = x509.load_pem_x509_certificate(certs[emulator.kid].encode())
    public_numbers = certificate.public_key().public_numbers()  # type: ignore[union-attr]
    assert public_numbers == emulator.private_key.public_key().public_numbers()
    assert certs == emulator.pem_certs()


def test_cache_headers_follow_settings(emulator: Emulator) -> None:
    """``cache_max_age`` and ``certs_age`` change what the certs endpoints send."""
    emulator.cache_max_age = 60
    emulator.certs_age = 15
    reply = fetch(emulator, "/oauth2/v1/certs")
    assert reply.headers["cache-control"] == "public, max-age=60, must-revalidate, no-transform"
    assert reply.headers["age"] == "15"


def test_certs_need_no_flavor_and_ignore_forwarding(emulator: Emulator) -> None:
    """The certs endpoints are public: no ``Metadata-Flavor`` needed, proxies fine."""
    assert fetch(emulator, "/oauth2/v3/certs", {"X-Forwarded-For": "203.0.113.9"}).status == 200


def test_certs_only_answer_get(emulator: Emulator) -> None:
    """A POST to the certs endpoint is 405."""
    assert fetch(emulator, "/oauth2/v3/certs", method="POST", body=b"").status == 405


# --- tokens verify --------------------------------------------------------------------


def test_served_token_verifies_with_jwks_key(emulator: Emulator) -> None:
    """The identity token's signature verifies with the published JWKS key."""
    verify_with_jwks(emulator, metadata(emulator, IDENTITY).text)


def test_google_auth_verifies_with_pem_certs(
    emulator: Emulator, google_request: google.auth.transport.requests.Request
) -> None:
    """Unmodified google-auth verifies an emulator token against the v1 PEM certs."""
    token = metadata(emulator, IDENTITY).text
    claims = google.oauth2.id_token.verify_token(
        token, google_request, audience=AUDIENCE, certs_url=emulator.pem_certs_url
    )
    assert claims["email"] == CALLER


def test_google_auth_verifies_with_jwks(
    emulator: Emulator, google_request: google.auth.transport.requests.Request
) -> None:
    """Unmodified google-auth (with PyJWT) verifies an emulator token against the JWKS."""
    token = emulator.mint(AUDIENCE, account=STRANGER)
    claims = google.oauth2.id_token.verify_token(
        token, google_request, audience=AUDIENCE, certs_url=emulator.jwks_url
    )
    assert claims["email"] == STRANGER


def test_google_auth_fetches_id_token_from_emulator(emulator: Emulator) -> None:
    """Unmodified google-auth ``fetch_id_token`` gets its token from the emulator.

    It runs in a child process because google-auth reads ``GCE_METADATA_HOST``
    once, when ``google.auth.compute_engine`` is first imported.
    """
    script = (
        "import sys, requests, google.auth.transport.requests, google.oauth2.id_token\n"
        "with requests.Session() as session:\n"
        "    request = google.auth.transport.requests.Request(session)\n"
        "    sys.stdout.write(google.oauth2.id_token.fetch_id_token(request, sys.argv[1]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, AUDIENCE],
        env=child_env(emulator),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    header, claims = decode(result.stdout)
    assert header["kid"] == emulator.kid
    assert (claims["aud"], claims["email"]) == (AUDIENCE, CALLER)
    verify_with_jwks(emulator, result.stdout)
    # google-auth pinged "/", read the default account recursively, then asked once.
    counters = emulator.counters
    assert counters["ping"] >= 1
    assert (counters["recursive"], counters["identity"]) == (1, 1)


# --- mint -----------------------------------------------------------------------------


def test_mint_defaults(emulator: Emulator) -> None:
    """``mint`` makes the same shape as the identity endpoint, for any email."""
    header, claims = decode(emulator.mint(AUDIENCE, account="anyone@example.com"))
    assert header == {"alg": "RS256", "kid": emulator.kid, "typ": "JWT"}
    assert claims["email"] == "anyone@example.com"
    assert claims["sub"] == claims["azp"] == emulator.subject("anyone@example.com")
    assert claims["exp"] - claims["iat"] == 3600


def test_mint_standard_and_lifetime(emulator: Emulator) -> None:
    """``full=False`` drops email claims; ``lifetime`` sets ``exp - iat``."""
    _, claims = decode(emulator.mint(AUDIENCE, full=False, lifetime=60))
    assert "email" not in claims and "email_verified" not in claims
    assert claims["exp"] - claims["iat"] == 60


def test_mint_claim_overrides(emulator: Emulator) -> None:
    """``claims`` adds and replaces; ``DELETE`` removes; ``None`` is kept as null."""
    token = emulator.mint(
        AUDIENCE,
        claims={
            "aud": [AUDIENCE, "https://other"],
            "nbf": 5,
            "email_verified": Emulator.DELETE,
            "email": None,
        },
    )
    _, claims = decode(token)
    assert claims["aud"] == [AUDIENCE, "https://other"] and claims["nbf"] == 5
    assert "email_verified" not in claims
    assert claims["email"] is None
    verify_with_jwks(emulator, token)


def test_mint_header_overrides(emulator: Emulator) -> None:
    """``header`` replaces, adds and deletes header members."""
    header, _ = decode(
        emulator.mint(header={"alg": "none", "jku": "https://evil", "typ": Emulator.DELETE})
    )
    assert header == {"alg": "none", "kid": emulator.kid, "jku": "https://evil"}


def test_mint_with_another_key_fails_jwks_verification(emulator: Emulator) -> None:
    """A token signed with a foreign key under the real kid fails verification."""
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = emulator.mint(AUDIENCE, key=foreign)
    assert decode(token)[0]["kid"] == emulator.kid
    with pytest.raises(InvalidSignature):
        verify_with_jwks(emulator, token)


def test_sign_raw_signs_exact_texts(emulator: Emulator) -> None:
    """``sign_raw`` encodes the given JSON texts byte for byte, validly signed."""
    header = f'{{"alg":"RS256","kid":"{emulator.kid}"}}'
    token = emulator.sign_raw(header, '{"aud":1,"aud":2}')
    head, payload, _ = token.split(".")
    assert b64decode(head).decode() == header
    assert b64decode(payload) == b'{"aud":1,"aud":2}'
    assert "=" not in token
    verify_with_jwks(emulator, token)


def test_clock_offset_moves_iat_and_exp(emulator: Emulator) -> None:
    """``clock_offset`` shifts minted and served tokens' ``iat``/``exp``."""
    _, now = decode(emulator.mint())
    emulator.clock_offset = -7200.0
    _, minted = decode(emulator.mint())
    _, served = decode(metadata(emulator, IDENTITY).text)
    for claims in (minted, served):
        # Each mint reads the clock; they may straddle a second boundary.
        assert abs(now["iat"] - 7200 - claims["iat"]) <= 1
        assert claims["exp"] == claims["iat"] + 3600


def test_subject_is_stable_and_google_shaped() -> None:
    """``subject`` is 21 digits, deterministic, case-insensitive and distinct per email."""
    subject = Emulator.subject(CALLER)
    assert len(subject) == 21 and subject.isdigit() and subject.startswith("1")
    assert Emulator.subject(CALLER.upper()) == subject
    assert Emulator.subject(STRANGER) != subject


# --- keys -----------------------------------------------------------------------------


def test_rotate_keeps_old_key_published(emulator: Emulator) -> None:
    """After a rotation, new tokens carry the new kid and the old key stays published."""
    old_kid, old_token = emulator.kid, emulator.mint(AUDIENCE)
    new_kid = emulator.rotate_keys()
    assert new_kid == emulator.kid != old_kid
    assert [jwk["kid"] for jwk in fetch(emulator, "/oauth2/v3/certs").json()["keys"]] == [
        old_kid,
        new_kid,
    ]
    assert set(fetch(emulator, "/oauth2/v1/certs").json()) == {old_kid, new_kid}
    served = metadata(emulator, IDENTITY).text
    assert decode(served)[0]["kid"] == new_kid
    verify_with_jwks(emulator, served)
    verify_with_jwks(emulator, old_token)


def test_retire_key_stops_publishing_it(emulator: Emulator) -> None:
    """``retire_key`` removes a key from both certs endpoints."""
    old_kid = emulator.kid
    new_kid = emulator.rotate_keys()
    emulator.retire_key(old_kid)
    assert emulator.published_kids == (new_kid,)
    assert list(fetch(emulator, "/oauth2/v1/certs").json()) == [new_kid]


def test_rotation_grace_lasts_one_rotation(emulator: Emulator) -> None:
    """A second rotation retires the key from two rotations ago."""
    first = emulator.kid
    second = emulator.rotate_keys()
    third = emulator.rotate_keys()
    assert first not in emulator.published_kids
    assert emulator.published_kids == (second, third)


def test_rotate_without_keeping_old(emulator: Emulator) -> None:
    """``keep_old=False`` publishes only the new key at once."""
    new_kid = emulator.rotate_keys(keep_old=False)
    assert [jwk["kid"] for jwk in emulator.jwks()["keys"]] == [new_kid]


def test_retiring_current_key_leaves_tokens_with_unknown_kid(emulator: Emulator) -> None:
    """Retiring the signing key itself makes new tokens name an unpublished kid."""
    emulator.retire_key(emulator.kid)
    assert fetch(emulator, "/oauth2/v3/certs").json() == {"keys": []}
    assert decode(metadata(emulator, IDENTITY).text)[0]["kid"] == emulator.kid
    emulator.rotate_keys()
    assert emulator.published_kids == (emulator.kid,)


def test_retire_unknown_kid_raises(emulator: Emulator) -> None:
    """Retiring a kid nobody publishes is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="no published key"):
        emulator.retire_key("0" * 40)


# --- faults ---------------------------------------------------------------------------


def test_delay_outlasts_a_short_client_timeout(emulator: Emulator) -> None:
    """With a delay injected, a client that waits less times out; cleared, it is answered."""
    emulator.inject(delay=60)
    with pytest.raises(TimeoutError):
        metadata(emulator, IDENTITY, timeout=0.2)
    assert fetch(emulator, "/oauth2/v3/certs", timeout=10).status == 200
    emulator.clear_faults()
    assert metadata(emulator, IDENTITY).status == 200


def test_certs_delay_leaves_metadata_alone(emulator: Emulator) -> None:
    """A certs fault does not touch metadata replies."""
    emulator.inject("certs", delay=60)
    with pytest.raises(TimeoutError):
        fetch(emulator, "/oauth2/v1/certs", timeout=0.2)
    assert metadata(emulator, IDENTITY).status == 200


def test_statuses_are_consumed_one_per_request(emulator: Emulator) -> None:
    """Queued statuses answer one request each, in order, then service resumes."""
    emulator.inject(statuses=(503, 429))
    emulator.inject(statuses=[500])
    replies = [metadata(emulator, IDENTITY) for _ in range(4)]
    assert [reply.status for reply in replies] == [503, 429, 500, 200]
    assert all(reply.headers["metadata-flavor"] == "Google" for reply in replies)
    assert replies[0].text == "injected fault: HTTP 503\n"


def test_certs_statuses(emulator: Emulator) -> None:
    """Statuses injected on certs answer certs requests only."""
    emulator.inject("certs", statuses=[503])
    assert metadata(emulator, IDENTITY).status == 200
    assert fetch(emulator, "/oauth2/v3/certs").status == 503
    assert fetch(emulator, "/oauth2/v3/certs").status == 200


@pytest.mark.parametrize(
    ("body", "expected", "content_type"),
    [
        ("garbage", b"\x89\xfe<<garbage: neither JSON nor a JWT>>\x00{", "application/text"),
        ("empty", b"", "application/text"),
        ("html", None, "text/html; charset=utf-8"),
    ],
)
def test_body_faults_replace_successful_bodies(
    emulator: Emulator, body: Any, expected: bytes | None, content_type: str
) -> None:
    """``body`` faults replace every 200 body until cleared, but leave errors alone."""
    emulator.inject(body=body)
    reply = metadata(emulator, IDENTITY)
    assert reply.status == 200 and reply.headers["content-type"] == content_type
    assert reply.body == expected if expected is not None else b"<html>" in reply.body
    assert b"eyJ" not in reply.body
    assert metadata(emulator, f"{ACCOUNTS}/default/identity").status == 400
    emulator.clear_faults()
    assert metadata(emulator, IDENTITY).body.count(b".") == 2


@pytest.mark.parametrize("body", ["garbage", "empty", "html"])
def test_certs_body_faults(emulator: Emulator, body: Any) -> None:
    """``body`` faults on certs make the key documents unreadable as JSON."""
    emulator.inject("certs", body=body)
    reply = fetch(emulator, "/oauth2/v3/certs")
    with pytest.raises(ValueError):
        reply.json()


def test_drop_closes_without_reply(emulator: Emulator) -> None:
    """``drop`` closes the next N connections' requests without a reply; all are counted."""
    emulator.inject(drop=1)
    emulator.inject(drop=1)
    for _ in range(2):
        with pytest.raises(http.client.RemoteDisconnected):
            metadata(emulator, IDENTITY)
    assert metadata(emulator, IDENTITY).status == 200
    assert emulator.counters["identity"] == 3


def test_omit_flavor(emulator: Emulator) -> None:
    """``omit_flavor`` leaves ``Metadata-Flavor`` off every metadata reply."""
    emulator.inject(omit_flavor=True)
    assert "metadata-flavor" not in fetch(emulator, "/").headers
    reply = metadata(emulator, IDENTITY)
    assert reply.status == 200 and "metadata-flavor" not in reply.headers
    emulator.inject(omit_flavor=False)  # a later call does not switch it back on
    assert "metadata-flavor" not in fetch(emulator, "/").headers
    emulator.clear_faults("metadata")
    assert fetch(emulator, "/").headers["metadata-flavor"] == "Google"


def test_clear_faults_of_one_target(emulator: Emulator) -> None:
    """``clear_faults(target)`` leaves the other target's faults in place."""
    emulator.inject("metadata", statuses=[503])
    emulator.inject("certs", statuses=[503])
    emulator.clear_faults("certs")
    assert fetch(emulator, "/oauth2/v3/certs").status == 200
    assert metadata(emulator, IDENTITY).status == 503


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": "keys"},
        {"delay": -1},
        {"statuses": [200.5]},
        {"statuses": [True]},
        {"statuses": [99]},
        {"statuses": [600]},
        {"body": "xml"},
        {"drop": -1},
    ],
)
def test_inject_validates(emulator: Emulator, kwargs: dict[str, Any]) -> None:
    """Bad fault arguments are a ConfigurationError, and nothing is injected."""
    with pytest.raises(ConfigurationError):
        emulator.inject(**kwargs)
    assert metadata(emulator, IDENTITY).status == 200


# --- counters ---------------------------------------------------------------------------


def test_counters_name_each_endpoint(emulator: Emulator) -> None:
    """Each request is counted under its endpoint's name; ``reset_counters`` zeroes them."""
    fetch(emulator, "/")
    metadata(emulator, "/computeMetadata/v1/")
    metadata(emulator, IDENTITY)
    fetch(emulator, IDENTITY)  # refused, still counted
    metadata(emulator, f"{ACCOUNTS}/default/token")
    metadata(emulator, f"{ACCOUNTS}/default/email")
    metadata(emulator, "/computeMetadata/v1/project/project-id")
    metadata(emulator, "/computeMetadata/v1/project/numeric-project-id")
    metadata(emulator, f"{ACCOUNTS}/?recursive=true")
    fetch(emulator, "/oauth2/v3/certs")
    fetch(emulator, "/oauth2/v1/certs")
    metadata(emulator, "/nowhere")
    assert emulator.counters == {
        "ping": 2,
        "identity": 2,
        "token": 1,
        "email": 1,
        "project": 2,
        "recursive": 1,
        "jwks": 1,
        "pem_certs": 1,
        "other": 1,
    }
    assert set(emulator.counters) <= set(Emulator.ENDPOINTS)
    emulator.reset_counters()
    assert emulator.counters == {}


# --- lifecycle and configuration ------------------------------------------------------


def test_environ_points_at_the_emulator(emulator: Emulator) -> None:
    """``environ()`` gives the metadata host (twice), the JWKS URL and IAP's keys URL."""
    assert emulator.environ() == {
        "GCE_METADATA_HOST": emulator.host,
        "GCE_METADATA_IP": emulator.host,
        "S2SAUTH_CERTS_URL": f"{emulator.url}/oauth2/v3/certs",
        "S2SAUTH_IAP_KEYS_URL": f"{emulator.url}/iap/verify/public_key-jwk",
    }
    assert emulator.url == f"http://{emulator.host}"
    assert emulator.pem_certs_url == f"{emulator.url}/oauth2/v1/certs"
    assert emulator.default_account == emulator.service_accounts[0] == CALLER


def test_addresses_need_a_started_emulator(emulator_key: rsa.RSAPrivateKey) -> None:
    """Before ``start`` (and after ``stop``) there is no address to give."""
    emulator = Emulator(signing_key=emulator_key)
    with pytest.raises(ConfigurationError, match="not started"):
        emulator.url  # noqa: B018
    with emulator:
        assert emulator.url.startswith("http://127.0.0.1:")
    with pytest.raises(ConfigurationError, match="not started"):
        emulator.environ()


def test_stop_ends_open_connections_and_delays(emulator_key: rsa.RSAPrivateKey) -> None:
    """``stop`` closes idle keep-alive connections and cuts injected delays short."""
    emulator = Emulator(signing_key=emulator_key).start()
    assert emulator.start() is emulator
    idle = http.client.HTTPConnection(emulator.host, timeout=10)
    idle.request("GET", "/")
    idle.getresponse().read()
    emulator.inject(delay=600)
    waiting = http.client.HTTPConnection(emulator.host, timeout=30)
    waiting.request("GET", "/")  # the server now sits in a 600 s delay
    try:
        emulator.stop()
        emulator.stop()
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            waiting.getresponse()
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            idle.request("GET", "/")
            idle.getresponse()
    finally:
        idle.close()
        waiting.close()


def test_port_in_use_is_a_configuration_error(emulator: Emulator) -> None:
    """Listening on a taken port fails with an actionable ConfigurationError."""
    port = int(emulator.host.rsplit(":", 1)[1])
    with pytest.raises(ConfigurationError, match="cannot listen"):
        Emulator(port=port, signing_key=emulator.private_key).start()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"service_accounts": ()},
        {"service_accounts": ("not-an-email",)},
        {"service_accounts": ("a@x.com", "A@x.com")},
        {"port": 70000},
        {"numeric_project_id": "demo"},
        {"cache_max_age": -1},
        {"key_size": 512},
    ],
)
def test_constructor_validates(kwargs: dict[str, Any]) -> None:
    """Bad constructor arguments are a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        Emulator(**kwargs)


def test_single_account_string(emulator_key: rsa.RSAPrivateKey) -> None:
    """One email given as a plain string is one account, not its characters."""
    assert Emulator(STRANGER, signing_key=emulator_key).service_accounts == (STRANGER,)


# --- the CLI --------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_prints_environment_and_stops_on_signal(signum: int) -> None:
    """``s2sauth emulator --port 0`` prints what to export, serves, and exits 0 on a signal."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "s2sauth", "emulator", "--port", "0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline().rstrip("\n") for _ in range(6)]
            exports = dict(
                line.removeprefix("export ").split("=", 1)
                for line in lines
                if line.startswith("export ")
            )
            host = exports["GCE_METADATA_HOST"]
            assert exports["GCE_METADATA_IP"] == host
            assert exports["S2SAUTH_CERTS_URL"] == f"http://{host}/oauth2/v3/certs"
            assert exports["S2SAUTH_IAP_KEYS_URL"] == f"http://{host}/iap/verify/public_key-jwk"
            assert lines[4] == f"# PEM certs: http://{host}/oauth2/v1/certs"
            assert lines[5] == f"# accounts: {CALLER}, {STRANGER}"
            conn = http.client.HTTPConnection(host, timeout=10)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                assert response.status == 200
                assert response.getheader("Metadata-Flavor") == "Google"
                response.read()
            finally:
                conn.close()
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


# -- one metadata server per identity -------------------------------------------------------


def _email_at(host: str, account: str = "default") -> str:
    """What ``service-accounts/ACCOUNT/email`` answers at the metadata server ``host``."""
    return metadata_at(host, f"/computeMetadata/v1/instance/service-accounts/{account}/email")


def test_each_account_has_a_metadata_server_where_it_is_default(emulator: Emulator) -> None:
    """host_for(email) serves the same instance with email as 'default'; the first's is host."""
    assert emulator.host_for(CALLER) == emulator.host
    own = emulator.host_for(STRANGER.upper())
    assert own != emulator.host and own == emulator.host_for(STRANGER)
    assert (_email_at(emulator.host), _email_at(own)) == (CALLER, STRANGER)
    assert _email_at(own, CALLER) == CALLER  # every account is still reachable by email
    recursive = json.loads(
        metadata_at(own, "/computeMetadata/v1/instance/service-accounts/?recursive=true")
    )
    assert recursive["default"]["email"] == STRANGER
    assert recursive[STRANGER]["aliases"] == ["default"] and recursive[CALLER]["aliases"] == []


def metadata_at(host: str, path: str) -> str:
    """The body of GET ``path`` (with Metadata-Flavor) at the metadata server ``host``."""
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request("GET", path, headers=dict(FLAVOR))
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_environ_for_an_account_shares_the_keys(emulator: Emulator) -> None:
    """environ(account) points the metadata variables at its server and the keys at the one set."""
    own = emulator.environ(STRANGER)
    assert own["GCE_METADATA_HOST"] == own["GCE_METADATA_IP"] == emulator.host_for(STRANGER)
    assert own["S2SAUTH_CERTS_URL"] == emulator.environ()["S2SAUTH_CERTS_URL"]


def test_host_for_an_unknown_account_or_a_stopped_emulator(emulator_key: rsa.RSAPrivateKey) -> None:
    """Only the emulator's own accounts get a server, and only while it runs; stop ends them."""
    em = Emulator((CALLER, STRANGER), signing_key=emulator_key)
    with pytest.raises(ConfigurationError, match="not started"):
        em.host_for(STRANGER)
    with em:
        with pytest.raises(ConfigurationError, match="not one of the emulator's service accounts"):
            em.host_for("nobody@p.iam.gserviceaccount.com")
        own = em.host_for(STRANGER)
    with pytest.raises(OSError):
        _email_at(own)


@pytest.mark.parametrize("exp", [0, -45], ids=["epoch", "45 s ago"])
def test_a_minted_exp_in_the_past_is_an_expired_token(emulator: Emulator, exp: int) -> None:
    """mint(claims={"exp": ...}) alone moves iat back too, so the token is expired, not invalid."""
    from s2sauth import ExpiredTokenError, Verifier

    when = exp if exp == 0 else int(time.time()) + exp
    token = emulator.mint("https://svc", claims={"exp": when})
    assert decode(token)[1]["iat"] == max(0, when - 3600)
    verifier = Verifier("https://svc", allowed_callers=[CALLER], certs_url=emulator.jwks_url)
    with pytest.raises(ExpiredTokenError):
        verifier.verify(token)
