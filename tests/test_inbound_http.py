"""Unit tests of s2sauth.verify.http: token location, bearer parsing, policy, denials."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import pytest
from support import Clock

from s2sauth._errors import (
    AudienceMismatchError,
    BadSignatureError,
    CallerNotAllowedError,
    ConfigurationError,
    ExpiredTokenError,
    InvalidTokenError,
    KeyFetchError,
    MalformedTokenError,
    MissingTokenError,
    S2SAuthError,
    SignatureRemovedError,
)
from s2sauth.emulator import Emulator
from s2sauth.verify.caller import Caller
from s2sauth.verify.http import (
    EXEMPT,
    SIGNATURE_REMOVED,
    Gate,
    denial,
    find_token,
    parse_bearer,
)
from s2sauth.verify.policy import CallerPolicy, Rule
from s2sauth.verify.verifier import Verifier
from s2sauth.wsgi import IDTokenMiddleware

CALLER = "caller@demo-project.iam.gserviceaccount.com"
OPS = "ops@demo-project.iam.gserviceaccount.com"
TOKEN = "aGVhZGVy.cGF5bG9hZA.c2lnbmF0dXJl"
OTHER = "b3RoZXI.cGF5bG9hZA.c2lnbmF0dXJl"
STRIPPED = f"aGVhZGVy.cGF5bG9hZA.{SIGNATURE_REMOVED}"
STRIPPED_OTHER = f"b3RoZXI.cGF5bG9hZA.{SIGNATURE_REMOVED}"
SECRET = "c2VjcmV0.c2VjcmV0.c2VjcmV0"


def make_caller(email: str) -> Caller:
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    claims = {"email": email, "sub": "1" * 21}
    return Caller(email, "1" * 21, "https://svc.example", now, now, claims)


class FakeVerifier:
    """Answers from a table: token -> Caller or exception; records what it was asked."""

    def __init__(
        self, table: Mapping[str, Caller | Exception], policy: CallerPolicy | None = None
    ) -> None:
        self.table = table
        self.policy = policy
        self.seen: list[str] = []
        self.authorized: list[tuple[Caller, CallerPolicy | None]] = []
        self.rejected: list[str] = []

    def record_rejection(self, exc: S2SAuthError) -> None:
        self.rejected.append(exc.reason)

    def authorize(self, caller: Caller, allowed_callers: CallerPolicy | None = None) -> Caller:
        self.authorized.append((caller, allowed_callers))
        policy = self.policy if allowed_callers is None else allowed_callers
        if policy is not None:
            policy.check(caller)
        return caller

    def authenticate(self, token: str) -> Caller:
        self.seen.append(token)
        outcome = self.table.get(token, BadSignatureError("the signature does not verify"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def aauthenticate(self, token: str) -> Caller:
        return self.authenticate(token)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(f"Bearer {TOKEN}", TOKEN, id="plain"),
        pytest.param(f"bearer {TOKEN}", TOKEN, id="lower-case scheme"),
        pytest.param(f"BeArEr {TOKEN}", TOKEN, id="mixed-case scheme"),
        pytest.param(f"  Bearer    {TOKEN}  ", TOKEN, id="extra spaces"),
        pytest.param("Bearer abc+/=", "abc+/=", id="token68 characters"),
        pytest.param('Bearer "a\x00', '"a\x00', id="other syntax is the verifier's"),
    ],
)
def test_parse_bearer_accepts(value: str, expected: str) -> None:
    """A Bearer value is read with werkzeug's scheme/first-space semantics."""
    assert parse_bearer(value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param("", MissingTokenError, id="empty"),
        pytest.param("   ", MissingTokenError, id="blank"),
        pytest.param("Basic dXNlcjpwYXNz", MissingTokenError, id="other scheme"),
        pytest.param(TOKEN, MissingTokenError, id="token without scheme"),
        pytest.param(f"Bearer\t{TOKEN}", MissingTokenError, id="tab is not the separator"),
        pytest.param("Bearer", MalformedTokenError, id="scheme only"),
        pytest.param("Bearer   ", MalformedTokenError, id="scheme and spaces"),
        pytest.param(f"Bearer {TOKEN} {TOKEN}", MalformedTokenError, id="two tokens"),
        pytest.param(f"Bearer {TOKEN}, Bearer {OTHER}", MalformedTokenError, id="joined headers"),
        pytest.param("Bearer tök.én.x", MalformedTokenError, id="non-ascii"),
        pytest.param("Bearer a\xffb", MalformedTokenError, id="latin-1"),
    ],
)
def test_parse_bearer_rejects(value: str, error: type[InvalidTokenError]) -> None:
    """No Bearer scheme is a missing token; a junk Bearer value is malformed."""
    with pytest.raises(error) as caught:
        parse_bearer(value)
    assert type(caught.value) is error


@pytest.mark.parametrize(
    ("authorization", "serverless", "expected"),
    [
        pytest.param([f"Bearer {TOKEN}"], [], TOKEN, id="authorization only"),
        pytest.param([], [f"Bearer {TOKEN}"], TOKEN, id="serverless only"),
        pytest.param([f"Bearer {OTHER}"], [f"Bearer {TOKEN}"], TOKEN, id="intact serverless wins"),
        pytest.param(["Basic eA=="], [f"Bearer {TOKEN}"], TOKEN, id="app's own basic auth"),
        pytest.param(
            [f"Bearer {OTHER}"], [f"Bearer {STRIPPED}"], OTHER, id="stripped: intact auth wins"
        ),
        pytest.param([], [f"Bearer {STRIPPED}"], STRIPPED, id="stripped alone"),
        pytest.param(["Basic eA=="], [f"Bearer {STRIPPED}"], STRIPPED, id="stripped, basic auth"),
        pytest.param(["Bearer"], [f"Bearer {STRIPPED}"], STRIPPED, id="stripped, junk auth"),
        pytest.param(
            [f"Bearer {STRIPPED}"], [f"Bearer {STRIPPED_OTHER}"], STRIPPED_OTHER, id="both stripped"
        ),
        pytest.param([f"Bearer {TOKEN}"], [" "], TOKEN, id="blank serverless is absent"),
        pytest.param([f"Bearer {STRIPPED}"], [], STRIPPED, id="stripped authorization"),
    ],
)
def test_find_token(authorization: list[str], serverless: list[str], expected: str) -> None:
    """X-Serverless-Authorization when intact, else Authorization, as DESIGN.md says."""
    assert find_token(authorization, serverless) == expected


@pytest.mark.parametrize(
    ("authorization", "serverless", "error"),
    [
        pytest.param([], [], MissingTokenError, id="no headers"),
        pytest.param(["Basic eA=="], [], MissingTokenError, id="basic only"),
        pytest.param([f"Bearer {TOKEN}"] * 2, [], MalformedTokenError, id="two authorization"),
        pytest.param([], [f"Bearer {TOKEN}"] * 2, MalformedTokenError, id="two serverless"),
        pytest.param(
            [f"Bearer {TOKEN}"], ["Basic eA=="], MalformedTokenError, id="serverless basic"
        ),
        pytest.param([], ["Bearer a b"], MalformedTokenError, id="serverless junk"),
    ],
)
def test_find_token_rejects(
    authorization: list[str], serverless: list[str], error: type[InvalidTokenError]
) -> None:
    """Absent tokens are missing; repeated or junk headers are malformed (ambiguous)."""
    with pytest.raises(error) as caught:
        find_token(authorization, serverless)
    assert type(caught.value) is error


def test_missing_token_challenge_has_no_error_code() -> None:
    """RFC 6750 §3.1: a request without a token gets a bare challenge."""
    answer = denial(MissingTokenError("no token"))
    headers = dict(answer.headers)
    assert answer.status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="s2sauth"'
    assert answer.payload == {
        "error": "unauthorized",
        "reason": "missing_token",
        "detail": "no bearer token in the request",
    }


def test_invalid_token_challenge() -> None:
    """An invalid token gets error="invalid_token" and a short description."""
    answer = denial(ExpiredTokenError("exp is 3600 s in the past"), realm="svc")
    assert answer.status_line == "401 Unauthorized"
    assert dict(answer.headers)["WWW-Authenticate"] == (
        'Bearer realm="svc", error="invalid_token", error_description="the token has expired"'
    )
    assert answer.payload["reason"] == "expired"


def test_forbidden_challenge() -> None:
    """A caller not allowed gets 403 and error="insufficient_scope"."""
    answer = denial(CallerNotAllowedError("not allowed", email=CALLER))
    assert answer.status_line == "403 Forbidden"
    assert 'error="insufficient_scope"' in dict(answer.headers)["WWW-Authenticate"]
    assert answer.payload["error"] == "insufficient_scope"


def test_keys_unavailable_is_503_with_retry_after() -> None:
    """No keys: 503 with Retry-After and no challenge."""
    answer = denial(KeyFetchError("keys endpoint down", retry_after=7))
    headers = dict(answer.headers)
    assert answer.status_line == "503 Service Unavailable"
    assert headers["Retry-After"] == "7"
    assert "WWW-Authenticate" not in headers
    assert answer.payload["reason"] == "keys_unavailable"


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(ConfigurationError("oops"), id="configuration error"),
        pytest.param(S2SAuthError("base"), id="base error"),
    ],
)
def test_other_errors_count_as_invalid_token(exc: S2SAuthError) -> None:
    """Anything but the three inbound outcomes is answered as an invalid token, never 500."""
    answer = denial(exc)
    assert answer.status == 401
    assert answer.payload["error"] == "invalid_token"


def test_unknown_reason_gets_generic_description() -> None:
    """A subclass with a reason this module does not know still gets a safe description."""

    class Custom(InvalidTokenError):
        reason = "custom"

    assert denial(Custom("x")).payload["detail"] == "the token is not acceptable"


def test_denial_is_json_with_safe_headers() -> None:
    """Bodies are short JSON, uncached, and never hold the error's message."""
    answer = denial(AudienceMismatchError(f"audience mismatch near {SECRET}"))
    headers = dict(answer.headers)
    assert json.loads(answer.body) == answer.payload
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Length"] == str(len(answer.body))
    assert SECRET not in answer.body.decode() + repr(answer.headers)


def test_realm_is_quote_escaped() -> None:
    """Quotes and backslashes in the realm are escaped inside the quoted-string."""
    answer = denial(MissingTokenError("x"), realm='a"b\\c')
    assert dict(answer.headers)["WWW-Authenticate"] == 'Bearer realm="a\\"b\\\\c"'


@pytest.mark.parametrize("realm", ["", "a\r\nX-Evil: 1", "ré"])
def test_gate_rejects_unprintable_realm(realm: str) -> None:
    """A realm that cannot stand in a header is a configuration error."""
    with pytest.raises(ConfigurationError):
        Gate(FakeVerifier({}), realm=realm)  # type: ignore[arg-type]


def gate(table: Mapping[str, Caller | Exception], **options: object) -> Gate:
    return Gate(FakeVerifier(table, CallerPolicy([CALLER, OPS])), **options)  # type: ignore[arg-type]


def test_gate_authenticates_and_applies_policy() -> None:
    """A verified caller on the allow-list comes back; others raise 403."""
    g = gate({TOKEN: make_caller(CALLER), OTHER: make_caller("x@y.iam.gserviceaccount.com")})
    assert g.authenticate([f"Bearer {TOKEN}"], policy=g.default).email == CALLER
    with pytest.raises(CallerNotAllowedError):
        g.authenticate([f"Bearer {OTHER}"], policy=g.default)
    assert g.authenticate([f"Bearer {OTHER}"], policy=None).email == "x@y.iam.gserviceaccount.com"


@pytest.mark.parametrize("allowed", [[OPS], CallerPolicy([OPS])], ids=["list", "policy"])
def test_gate_allowed_callers_replace_the_verifier_policy(allowed: object) -> None:
    """allowed_callers given to the gate replace the verifier's allow-list."""
    g = gate({TOKEN: make_caller(CALLER)}, allowed_callers=allowed)
    assert g.default == CallerPolicy([OPS])
    with pytest.raises(CallerNotAllowedError):
        g.authenticate([f"Bearer {TOKEN}"], policy=g.default)


def test_gate_routes() -> None:
    """Exempt prefixes, per-route rules and the default policy resolve per request."""
    g = gate({}, exempt=["/healthz"], rules=[Rule("/admin", [OPS])])
    assert g.route("GET", "/healthz") is EXEMPT
    admin = g.route("POST", "/admin/users")
    assert isinstance(admin, CallerPolicy)
    assert admin.allows(make_caller(OPS)) and not admin.allows(make_caller(CALLER))
    assert g.route("GET", "/hello") is g.default


def test_gate_authorize_applies_policy_to_a_known_caller() -> None:
    """authorize checks a caller verified earlier against a policy."""
    g = gate({})
    assert g.authorize(make_caller(CALLER), g.default).email == CALLER
    assert g.authorize(make_caller("x@y.z"), None).email == "x@y.z"
    with pytest.raises(CallerNotAllowedError):
        g.authorize(make_caller("x@y.z"), g.default)


def test_gate_hands_the_chosen_token_to_the_verifier() -> None:
    """The verifier sees the X-Serverless-Authorization token when that one is intact."""
    verifier = FakeVerifier({TOKEN: make_caller(CALLER)})
    g = Gate(verifier)  # type: ignore[arg-type]
    g.authenticate([f"Bearer {OTHER}"], [f"Bearer {TOKEN}"], policy=None)
    assert verifier.seen == [TOKEN]


def test_unexpected_exception_is_an_invalid_token(caplog: pytest.LogCaptureFixture) -> None:
    """A crash inside verification is a counted 401, logged at WARNING without token or message."""
    verifier = FakeVerifier({SECRET: RuntimeError(f"boom {SECRET}")})
    g = Gate(verifier)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="s2sauth"):
        with pytest.raises(InvalidTokenError) as caught:
            g.authenticate([f"Bearer {SECRET}"], policy=g.default)
    assert type(caught.value) is InvalidTokenError
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert verifier.rejected == ["invalid_token"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "RuntimeError" in caplog.text
    assert SECRET not in caplog.text


def test_header_refusals_are_recorded_by_the_verifier(caplog: pytest.LogCaptureFixture) -> None:
    """Refusals decided on the headers go to the verifier, which counts and logs every refusal."""
    verifier = FakeVerifier({SECRET: ExpiredTokenError("expired"), TOKEN: make_caller("x@y.z")})
    g = Gate(verifier, allowed_callers=[OPS])  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="s2sauth"):
        for headers in ([f"Bearer {SECRET}"], [], ["Bearer ~~ ~~"], [f"Bearer {TOKEN}"]):
            with pytest.raises(S2SAuthError):
                g.authenticate(headers, policy=g.default)
    # The token and policy refusals are the verifier's own; the gate records only these.
    assert verifier.rejected == ["missing_token", "malformed"]
    assert caplog.records == []


def test_gate_hands_the_policy_to_the_verifier() -> None:
    """The verifier applies a route's policy (so it counts and logs a 403); None skips it."""
    verifier = FakeVerifier({TOKEN: make_caller("x@y.z")}, CallerPolicy([CALLER]))
    g = Gate(verifier, allowed_callers=[OPS])  # type: ignore[arg-type]
    with pytest.raises(CallerNotAllowedError):
        g.authenticate([f"Bearer {TOKEN}"], policy=g.default)
    assert verifier.authorized == [(make_caller("x@y.z"), g.default)]
    assert g.authorize(make_caller("x@y.z"), None).email == "x@y.z"
    assert len(verifier.authorized) == 1


class TestAsync:
    """The async path behaves as the sync one, under asyncio and trio."""

    pytestmark = pytest.mark.anyio

    async def test_aauthenticate(self) -> None:
        """A verified, allowed caller comes back; the policy and errors apply as in sync."""
        g = gate({TOKEN: make_caller(CALLER), OTHER: KeyFetchError("down", retry_after=5)})
        caller = await g.aauthenticate([], [f"Bearer {TOKEN}"], policy=g.default)
        assert caller.email == CALLER
        with pytest.raises(CallerNotAllowedError):
            await g.aauthenticate([f"Bearer {TOKEN}"], policy=CallerPolicy([OPS]))
        with pytest.raises(KeyFetchError):
            await g.aauthenticate([f"Bearer {OTHER}"], policy=None)
        with pytest.raises(MissingTokenError):
            await g.aauthenticate([], policy=None)

    async def test_aauthenticate_unexpected_exception(self) -> None:
        """A crash inside async verification is a plain invalid token too."""
        g = gate({TOKEN: ValueError("bad")})
        with pytest.raises(InvalidTokenError) as caught:
            await g.aauthenticate([f"Bearer {TOKEN}"], policy=None)
        assert type(caught.value) is InvalidTokenError


# -- helpers of the tests below ------------------------------------------------------------


AUDIENCE = "https://svc-abc-uc.a.run.app"


STRANGER = "stranger@other-project.iam.gserviceaccount.com"


SA = "caller@proj-one.iam.gserviceaccount.com"


def strip_signature(token: str) -> str:
    return token.rsplit(".", 1)[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"


@pytest.fixture
def clock() -> Clock:
    """A fresh injected clock at T0."""
    return Clock()


@pytest.fixture
def real_clock() -> Clock:
    """An injected clock starting at the real time (the emulator mints real-time tokens)."""
    return Clock(time.time())


@pytest.fixture
def make_verifier(emulator: Emulator, real_clock: Clock) -> Iterator[Callable[..., Verifier]]:
    """Build verifiers against the emulator's JWKS; their connections close at teardown."""
    made: list[Verifier] = []

    def make(**options: Any) -> Verifier:
        options.setdefault("allowed_callers", [CALLER])
        options.setdefault("certs_url", emulator.jwks_url)
        options.setdefault("clock", real_clock)
        verifier = Verifier(AUDIENCE, **options)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


# -- token location and adapters -----------------------------------------------------------


def test_both_headers_stripped_takes_the_serverless_token(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """With both headers' signatures removed, the X-Serverless-Authorization token is the one
    verified: accepted only under trust_cloud_run_iam, else a 401 signature_removed."""
    serverless = strip_signature(emulator.mint(AUDIENCE, account=CALLER))
    authorization = strip_signature(emulator.mint(AUDIENCE, account=STRANGER))
    assert find_token([f"Bearer {authorization}"], [f"Bearer {serverless}"]) == serverless
    trusting = Gate(make_verifier(trust_cloud_run_iam=True))
    caller = trusting.authenticate(
        [f"Bearer {authorization}"], [f"Bearer {serverless}"], policy=trusting.default
    )
    assert caller.email == CALLER
    assert emulator.counters["jwks"] == 0
    strict = Gate(make_verifier())
    with pytest.raises(SignatureRemovedError) as caught:
        strict.authenticate(
            [f"Bearer {authorization}"], [f"Bearer {serverless}"], policy=strict.default
        )
    answer = denial(caught.value)
    assert (answer.status, answer.payload["reason"]) == (401, "signature_removed")


def test_wsgi_path_outside_latin_1_is_routed_as_given() -> None:
    """A PATH_INFO that is not latin-1 (a non-PEP 3333 server) is routed as it stands:
    exempt when listed, else refused with a 401, never a 500."""
    reached: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        reached.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = IDTokenMiddleware(
        app, verifier=Verifier(AUDIENCE, allowed_callers=[SA]), exempt=["/健康"]
    )
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)

    assert middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/健康"}, start_response) == [b"ok"]
    body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/秘密"}, start_response)
    assert statuses == ["200 OK", "401 Unauthorized"]
    assert reached == ["/健康"]
    assert json.loads(b"".join(body))["reason"] == "missing_token"
