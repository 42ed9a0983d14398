"""Identity-Aware Proxy assertions: the verifier, its hostile-token suite, and one app that
takes services (ID tokens) on some paths and people (IAP) on others, under real servers."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import flask
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_inbound_adapters import uvicorn_server, waitress_server

from s2sauth import (
    AudienceMismatchError,
    BadSignatureError,
    CallerNotAllowedError,
    ConfigurationError,
    ExpiredTokenError,
    InvalidClaimsError,
    InvalidHeaderError,
    InvalidTokenError,
    IssuerMismatchError,
    SignatureRemovedError,
    UnknownKeyError,
    Verifier,
)
from s2sauth._http import HTTPRequest, HTTPResponse, HTTPTransport
from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
from s2sauth.emulator import Emulator
from s2sauth.flask import require_id_token
from s2sauth.iap import IAP_HEADER, IAPVerifier, PeoplePolicy
from s2sauth.verify.http import Gate
from s2sauth.verify.keys import KeySet
from s2sauth.verify.policy import Rule
from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

IAP_AUDIENCE = "/projects/123456789012/global/backendServices/4567890123"
APP_ENGINE_AUDIENCE = "/projects/123456789012/apps/demo-project"
AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
ALICE = "alice@example.com"
# P-256's group order: s and n - s both verify (ECDSA malleability).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The emulator: service accounts for ID tokens, and IAP's key for assertions."""
    with Emulator((CALLER, STRANGER), signing_key=emulator_key) as running:
        yield running


@pytest.fixture(scope="module")
def transport() -> Iterator[HTTPTransport]:
    """One key-fetch transport for the module."""
    pool = HTTPTransport()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def iap(emulator: Emulator, transport: HTTPTransport) -> IAPVerifier:
    """An IAP verifier for the backend service, allowing alice and the example.org domain."""
    return IAPVerifier(
        IAP_AUDIENCE,
        allowed_users=[ALICE],
        allowed_domains=["example.org"],
        keys_url=emulator.iap_jwks_url,
        transport=transport,
    )


@pytest.fixture(scope="module")
def services(emulator: Emulator, transport: HTTPTransport) -> Verifier:
    """An ID-token verifier allowing the caller service account."""
    return Verifier(
        AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url, transport=transport
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
    )


def resign(token: str, signature: bytes) -> str:
    return f"{token.rpartition('.')[0]}.{b64(signature)}"


# --- the verifier ---------------------------------------------------------------------------


def test_a_genuine_assertion_names_the_person(emulator: Emulator, iap: IAPVerifier) -> None:
    """An emulator-minted IAP assertion verifies to a person with IAP's email, sub and hd."""
    token = emulator.mint_iap(IAP_AUDIENCE, email="bob@example.org", hd="example.org")
    caller = iap.verify(token)
    assert caller.kind == "person"
    assert caller.email == "bob@example.org"
    assert caller.subject.startswith("accounts.google.com:")
    assert caller.audience == IAP_AUDIENCE
    assert caller.claims["hd"] == "example.org"


def test_the_emulator_assertion_has_iaps_shape(emulator: Emulator) -> None:
    """The header is ES256 with a kid; iss is IAP's; the signature is 64 raw bytes."""
    token = emulator.mint_iap(IAP_AUDIENCE, email=ALICE)
    header, claims = segments(token)
    assert header == {"alg": "ES256", "kid": emulator.iap_kid, "typ": "JWT"}
    assert claims["iss"] == "https://cloud.google.com/iap"
    assert claims["exp"] - claims["iat"] == 600
    assert "hd" not in claims and "email_verified" not in claims
    signature = base64.urlsafe_b64decode(token.rpartition(".")[2] + "==")
    assert len(signature) == 64
    keys = httpx.get(emulator.iap_jwks_url).json()["keys"]
    assert [(k["kty"], k["crv"], k["alg"], k["kid"]) for k in keys] == [
        ("EC", "P-256", "ES256", emulator.iap_kid)
    ]


def test_app_engine_audience_form(emulator: Emulator, transport: HTTPTransport) -> None:
    """The App Engine form ``/projects/NUMBER/apps/PROJECT_ID`` is an audience too."""
    verifier = IAPVerifier(APP_ENGINE_AUDIENCE, keys_url=emulator.iap_jwks_url, transport=transport)
    assert verifier.verify(emulator.mint_iap(APP_ENGINE_AUDIENCE)).email == "user@example.com"


@pytest.mark.parametrize(
    "audience",
    ["https://svc.example", "projects/1/apps/x", "/projects/abc/apps/x", "/projects/1/"],
)
def test_audience_must_be_iaps_form(audience: str) -> None:
    """A URL or a malformed ``/projects/...`` string is a configuration error, not a silent 401."""
    with pytest.raises(ConfigurationError, match="/projects/NUMBER"):
        IAPVerifier(audience, allowed_users=[ALICE])


@pytest.mark.parametrize(
    ("users", "domains"),
    [([], []), (["not an email"], None), (None, ["*.example.com"]), (None, ["example"])],
)
def test_people_policy_refuses_bad_entries(users: Any, domains: Any) -> None:
    """An empty or malformed allow-list of people fails at construction."""
    with pytest.raises(ConfigurationError):
        IAPVerifier(IAP_AUDIENCE, allowed_users=users, allowed_domains=domains)


def test_no_allow_list_warns(caplog: pytest.LogCaptureFixture) -> None:
    """Without allowed_users or allowed_domains, the verifier says anyone IAP admits gets in."""
    with caplog.at_level("WARNING", logger="s2sauth"):
        IAPVerifier(IAP_AUDIENCE, keys_url="http://127.0.0.1:9/keys")
    assert "IAPVerifier" in caplog.text and "allowed_users" in caplog.text


def test_allow_lists(emulator: Emulator, iap: IAPVerifier) -> None:
    """Users match by email (any case); domains only by the signed hd, never the email's domain."""
    assert iap.verify(emulator.mint_iap(IAP_AUDIENCE, email="Alice@Example.com")).kind == "person"
    assert iap.verify(emulator.mint_iap(IAP_AUDIENCE, email="x@a.com", hd="example.org"))
    with pytest.raises(CallerNotAllowedError):
        iap.verify(emulator.mint_iap(IAP_AUDIENCE, email="eve@example.org"))  # no hd
    with pytest.raises(CallerNotAllowedError):
        iap.verify(emulator.mint_iap(IAP_AUDIENCE, email="eve@example.org", hd="example.net"))
    with pytest.raises(CallerNotAllowedError):
        iap.verify(emulator.mint_iap(IAP_AUDIENCE, email="eve@x.com", hd="EXAMPLE.ORG.evil"))


def now() -> int:
    return int(time.time())


HOSTILE: list[Any] = [
    pytest.param(
        lambda em: em.mint_iap(
            IAP_AUDIENCE, email=ALICE, claims={"iss": "https://accounts.google.com"}
        ),
        IssuerMismatchError,
        id="wrong issuer",
    ),
    pytest.param(
        lambda em: em.mint_iap("/projects/1/global/backendServices/2", email=ALICE),
        AudienceMismatchError,
        id="wrong audience",
    ),
    pytest.param(
        lambda em: em.mint_iap(
            IAP_AUDIENCE, email=ALICE, claims={"iat": now() - 1300, "exp": now() - 700}
        ),
        ExpiredTokenError,
        id="expired",
    ),
    pytest.param(
        lambda em: em.mint_iap(IAP_AUDIENCE, email=ALICE, lifetime=3600),
        InvalidClaimsError,
        id="lives an hour (IAP's live ten minutes)",
    ),
    pytest.param(
        lambda em: em.mint_iap(IAP_AUDIENCE, email=ALICE, claims={"email": Emulator.DELETE}),
        InvalidClaimsError,
        id="no email",
    ),
    pytest.param(
        lambda em: em.mint_iap(IAP_AUDIENCE, email=ALICE, claims={"hd": ["example.org"]}),
        InvalidClaimsError,
        id="hd not a string",
    ),
    pytest.param(
        lambda em: em.mint_iap(IAP_AUDIENCE, email=ALICE, header={"kid": Emulator.DELETE}),
        InvalidHeaderError,
        id="missing kid",
    ),
    pytest.param(
        lambda em: em.mint_iap(IAP_AUDIENCE, email=ALICE, header={"kid": "nope"}),
        UnknownKeyError,
        id="unknown kid",
    ),
    pytest.param(
        lambda em: em.mint_iap(IAP_AUDIENCE, email=ALICE, header={"jku": "https://evil"}),
        InvalidHeaderError,
        id="jku header",
    ),
    pytest.param(
        lambda em: em.mint_iap(IAP_AUDIENCE, email=ALICE, header={"alg": "none"}),
        InvalidHeaderError,
        id="alg none",
    ),
    pytest.param(
        # Alg confusion: RS256 over the same claims, with the emulator's own (published) RSA key.
        lambda em: em.mint_iap(
            IAP_AUDIENCE, email=ALICE, header={"alg": "RS256"}, key=em.private_key
        ),
        InvalidHeaderError,
        id="alg RS256 (confusion)",
    ),
    pytest.param(
        lambda em: em.mint_iap(IAP_AUDIENCE, email=ALICE, header={"alg": "ES384"}),
        InvalidHeaderError,
        id="alg ES384",
    ),
    pytest.param(
        lambda em: em.mint_iap(
            IAP_AUDIENCE, email=ALICE, key=ec.generate_private_key(ec.SECP256R1())
        ),
        BadSignatureError,
        id="another P-256 key",
    ),
    pytest.param(
        lambda em: (
            em.mint_iap(IAP_AUDIENCE, email=ALICE, claims={"iss": "x"}).rpartition(".")[0]
            + ".SIGNATURE_REMOVED_BY_GOOGLE"
        ),
        SignatureRemovedError,
        id="signature removed",
    ),
    pytest.param(
        lambda em: em.mint(AUDIENCE, account=CALLER),
        InvalidHeaderError,
        id="an ID token (wrong kind)",
    ),
]


@pytest.mark.parametrize(("make", "error"), HOSTILE)
def test_hostile_assertions(
    emulator: Emulator, iap: IAPVerifier, make: Callable[[Emulator], str], error: type
) -> None:
    """Each hostile assertion is refused for its own reason."""
    with pytest.raises(error):
        iap.verify(make(emulator))


def test_der_encoded_signature_is_refused(emulator: Emulator, iap: IAPVerifier) -> None:
    """A genuine signature re-encoded as DER (what many libraries emit) is not the JWS form."""
    token = emulator.mint_iap(IAP_AUDIENCE, email=ALICE, claims={"jti": "der"})
    signing_input = token.rpartition(".")[0].encode()
    der = emulator.iap_private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(BadSignatureError):
        iap.verify(resign(token, der))
    r, s = decode_dss_signature(der)
    assert iap.verify(resign(token, r.to_bytes(32, "big") + s.to_bytes(32, "big"))).email == ALICE


@pytest.mark.parametrize(
    ("r", "s"), [(0, 1), (1, 0), (0, 0), (P256_ORDER, 1), (1, P256_ORDER)], ids=str
)
def test_out_of_range_signature_values_are_refused(
    emulator: Emulator, iap: IAPVerifier, r: int, s: int
) -> None:
    """r and s must lie in [1, n-1]: zero or the group order never verify."""
    token = emulator.mint_iap(IAP_AUDIENCE, email=ALICE)
    with pytest.raises(BadSignatureError):
        iap.verify(resign(token, r.to_bytes(32, "big") + s.to_bytes(32, "big")))


def test_high_s_signature_is_accepted(emulator: Emulator, iap: IAPVerifier) -> None:
    """Decision: the malleated twin (r, n - s) is accepted; it names the same person and expiry."""
    token = emulator.mint_iap(IAP_AUDIENCE, email=ALICE, claims={"jti": "high-s"})
    raw = base64.urlsafe_b64decode(token.rpartition(".")[2] + "==")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    twin = resign(token, r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big"))
    assert iap.verify(twin) == iap.verify(token)


def test_a_wrong_curve_signature_is_refused(emulator: Emulator, iap: IAPVerifier) -> None:
    """A P-384 signature (96 bytes) under the published kid is refused."""
    token = emulator.mint_iap(
        IAP_AUDIENCE, email=ALICE, key=ec.generate_private_key(ec.SECP384R1())
    )
    with pytest.raises(BadSignatureError):
        iap.verify(token)


def test_an_iap_assertion_is_refused_by_the_id_token_verifier(
    emulator: Emulator, services: Verifier
) -> None:
    """The other way round: ES256 is not an ID token's algorithm."""
    with pytest.raises(InvalidHeaderError):
        services.verify(emulator.mint_iap(AUDIENCE, email=ALICE))


def _jwk(key: Any, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    return {
        "kty": "EC",
        "crv": {256: "P-256", 384: "P-384"}[key.curve.key_size],
        "x": b64(numbers.x.to_bytes(size, "big")),
        "y": b64(numbers.y.to_bytes(size, "big")),
        **extra,
    }


def test_key_hygiene_of_iaps_key_set() -> None:
    """Only P-256 keys for ES256 with a unique kid serve; RSA, P-384, enc and twins are skipped."""
    good = ec.generate_private_key(ec.SECP256R1())
    twin = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_numbers = rsa_key.public_key().public_numbers()
    document = {
        "keys": [
            _jwk(good, kid="good", alg="ES256", use="sig"),
            _jwk(ec.generate_private_key(ec.SECP384R1()), kid="p384"),
            _jwk(good, kid="enc", use="enc"),
            _jwk(good, kid="rs", alg="RS256"),
            _jwk(twin, kid="twin"),
            _jwk(good, kid="twin"),
            {"kty": "RSA", "kid": "rsa", "n": b64(rsa_numbers.n.to_bytes(256, "big")), "e": "AQAB"},
            _jwk(good),
        ]
    }

    def serve(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(
            200, {"content-type": "application/json"}, json.dumps(document).encode()
        )

    keyset = KeySet("https://iap.example/keys", transport=serve, algorithms=("ES256",))
    keyset.refresh()
    assert keyset.kids == ("good",)
    point = good.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert (
        keyset.get("good").public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        == point
    )


# --- one app, two kinds of caller -----------------------------------------------------------


ACCEPT = {"/admin": "person", "/tasks": "service"}


def starlette_app(services: Verifier, iap: IAPVerifier) -> Any:
    async def whoami(request: Request) -> JSONResponse:
        caller = request.state.caller
        return JSONResponse({"kind": caller.kind, "email": caller.email})

    routes = [Route(path, whoami) for path in ("/", "/admin", "/tasks")]
    return ASGIMiddleware(Starlette(routes=routes), verifier=services, iap=iap, accept=ACCEPT)


def wsgi_app(services: Verifier, iap: IAPVerifier) -> Any:
    def whoami(environ: Any, start_response: Any) -> list[bytes]:
        caller = environ["s2sauth.caller"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"kind": caller.kind, "email": caller.email}).encode()]

    return WSGIMiddleware(whoami, verifier=services, iap=iap, accept=ACCEPT)


def flask_app(services: Verifier, iap: IAPVerifier) -> Any:
    app = flask.Flask("iap")

    def show() -> Any:
        return {"kind": flask.g.caller.kind, "email": flask.g.caller.email}

    app.add_url_rule("/", "either", require_id_token(verifier=services, iap=iap)(show))
    app.add_url_rule("/admin", "admin", require_id_token(verifier=iap)(show))
    app.add_url_rule("/tasks", "tasks", require_id_token(verifier=services)(show))
    return app


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((starlette_app, uvicorn_server), id="asgi"),
        pytest.param((wsgi_app, waitress_server), id="wsgi"),
        pytest.param((flask_app, waitress_server), id="flask"),
    ],
)
def server(request: pytest.FixtureRequest, services: Verifier, iap: IAPVerifier) -> Iterator[str]:
    """The app of this parameter, served for real on loopback."""
    make, serve = request.param
    with serve(make(services, iap)) as url:
        yield url


def call(url: str, path: str, **headers: str) -> httpx.Response:
    return httpx.get(url + path, headers=headers)


def test_people_and_services_each_where_they_belong(server: str, emulator: Emulator) -> None:
    """A person gets in on /admin and /, a service on /tasks and /; each is told which it is."""
    person = {IAP_HEADER: emulator.mint_iap(IAP_AUDIENCE, email=ALICE)}
    service = {"Authorization": "Bearer " + emulator.mint(AUDIENCE, account=CALLER)}
    for path, headers, kind in [
        ("/admin", person, "person"),
        ("/", person, "person"),
        ("/tasks", service, "service"),
        ("/", service, "service"),
    ]:
        response = call(server, path, **headers)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["kind"] == kind


def test_wrong_kind_for_the_path_is_401(server: str, emulator: Emulator) -> None:
    """A service token on a people-only path, or an IAP assertion on a service path, is a 401."""
    person = {IAP_HEADER: emulator.mint_iap(IAP_AUDIENCE, email=ALICE)}
    service = {"Authorization": "Bearer " + emulator.mint(AUDIENCE, account=CALLER)}
    for path, headers in [("/admin", service), ("/tasks", person)]:
        response = call(server, path, **headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith('Bearer realm="s2sauth"')


def test_assertion_in_the_wrong_header_is_a_clean_401(server: str, emulator: Emulator) -> None:
    """An IAP assertion sent as a Bearer token, or an ID token in IAP's header, is a 401."""
    assertion = emulator.mint_iap(IAP_AUDIENCE, email=ALICE)
    id_token = emulator.mint(AUDIENCE, account=CALLER)
    for path, headers in [
        ("/", {"Authorization": "Bearer " + assertion}),
        ("/admin", {IAP_HEADER: id_token}),
        ("/admin", {IAP_HEADER: "Bearer " + assertion}),
        ("/admin", {IAP_HEADER: "junk"}),
    ]:
        response = call(server, path, **headers)
        assert response.status_code == 401, (path, response.text)
        assert assertion not in response.text and id_token not in response.text


def test_people_not_allowed_get_403(server: str, emulator: Emulator) -> None:
    """A person outside the users and domains gets 403; a domain member gets in."""
    outsider = emulator.mint_iap(IAP_AUDIENCE, email="eve@example.net", hd="example.net")
    assert call(server, "/admin", **{IAP_HEADER: outsider}).status_code == 403
    member = emulator.mint_iap(IAP_AUDIENCE, email="carol@example.org", hd="example.org")
    assert call(server, "/admin", **{IAP_HEADER: member}).json()["email"] == "carol@example.org"


def test_no_token_on_a_people_path_is_401(server: str) -> None:
    """No assertion at all: 401 without an error code (the client did not try)."""
    response = call(server, "/admin")
    assert response.status_code == 401
    assert "error=" not in response.headers["www-authenticate"]


# --- the gate's configuration ----------------------------------------------------------------


def test_gate_configuration_errors(services: Verifier, iap: IAPVerifier) -> None:
    """Kinds without a verifier for them, or verifiers swapped, are configuration errors."""
    with pytest.raises(ConfigurationError, match="needs an IAPVerifier"):
        Gate(services, accept="person")
    with pytest.raises(ConfigurationError, match="needs an ID-token Verifier"):
        Gate(iap, accept={"/tasks": "service"})
    with pytest.raises(ConfigurationError):
        Gate(iap, iap=iap)
    with pytest.raises(ConfigurationError):
        Gate(services, iap=services)
    with pytest.raises(ConfigurationError, match="accept takes"):
        Gate(services, iap=iap, accept={"/x": "robot"})  # type: ignore[dict-item]


def test_gate_kinds_by_longest_prefix(services: Verifier, iap: IAPVerifier) -> None:
    """Kinds match on segment boundaries, the longest prefix winning; None reads as '/'."""
    gate = Gate(services, iap=iap, accept={"/admin": "person", "/admin/api": "service"})
    assert gate.kind("/admin") == "person"
    assert gate.kind("/admin/users") == "person"
    assert gate.kind("/admin/api/x") == "service"
    assert gate.kind("/administrator") == "either"
    assert gate.kind(None) == "either"
    assert Gate(iap).kind("/anything") == "person"
    assert Gate(services).kind("/anything") == "service"


def test_a_route_rule_can_narrow_the_people(
    emulator: Emulator, services: Verifier, iap: IAPVerifier
) -> None:
    """A Rule holding a PeoplePolicy narrows who may use a path; others keep the IAP allow-list."""
    gate = Gate(
        services,
        iap=iap,
        rules=[Rule("/billing", PeoplePolicy(users=["finance@example.org"]))],
    )
    alice = [emulator.mint_iap(IAP_AUDIENCE, email=ALICE)]
    finance = [emulator.mint_iap(IAP_AUDIENCE, email="finance@example.org", hd="example.org")]
    policy = gate.route("GET", "/billing")
    assert policy is not None and policy != "exempt"
    with pytest.raises(CallerNotAllowedError):
        gate.authenticate((), policy=policy, assertion=alice, path="/billing")  # type: ignore[arg-type]
    assert gate.authenticate((), policy=policy, assertion=finance, path="/billing")  # type: ignore[arg-type]
    default = gate.route("GET", "/")
    assert gate.authenticate((), policy=default, assertion=alice, path="/")  # type: ignore[arg-type]


def test_gate_reuse_of_a_person_respects_the_kind(
    emulator: Emulator, services: Verifier, iap: IAPVerifier
) -> None:
    """authorize() of a person verified earlier refuses it where only services are taken."""
    person = iap.verify(emulator.mint_iap(IAP_AUDIENCE, email=ALICE))
    assert Gate(services, iap=iap).authorize(person, None, path="/") is person
    with pytest.raises(InvalidTokenError):
        Gate(services).authorize(person, None)
    with pytest.raises(InvalidTokenError):
        Gate(services, iap=iap, accept={"/tasks": "service"}).authorize(person, None, path="/tasks")
