"""Edge paths of the inbound core no other test reaches: key hygiene corners, degraded
key sets, cache corners of the verifier, reprs and equality of policies, token location
when both headers were stripped, and WSGI paths outside latin-1."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support import Clock, b64int, self_signed_pem, wait_for

from s2sauth._errors import (
    ImmatureTokenError,
    InvalidHeaderError,
    KeyFetchError,
    SignatureRemovedError,
    UnknownKeyError,
)
from s2sauth._http import HTTPRequest, HTTPResponse, HTTPTransport, TransportError
from s2sauth.emulator import Emulator
from s2sauth.verify import jws
from s2sauth.verify.http import Gate, denial, find_token
from s2sauth.verify.keys import KeySet, parse_key_set
from s2sauth.verify.policy import CallerPolicy, RoutePolicy, Rule
from s2sauth.verify.verifier import Verifier
from s2sauth.wsgi import IDTokenMiddleware

_PROJECT_ROOT = Path(__file__).resolve().parent.parent

URL = "https://keys.example/oauth2/v3/certs"
AUDIENCE = "https://svc-abc-uc.a.run.app"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
SA = "caller@proj-one.iam.gserviceaccount.com"
OPS = "ops@proj-one.iam.gserviceaccount.com"


class Endpoint:
    """A fake keys endpoint: serves a JSON document with max-age=300 and counts requests."""

    def __init__(self, document: Any) -> None:
        self.document = document
        self.status = 200
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        with self._lock:
            self.calls += 1
        body = json.dumps(self.document).encode()
        return HTTPResponse(self.status, {"cache-control": "max-age=300"}, body)


def rsa_jwk(key: rsa.RSAPrivateKey, kid: Any = "k1") -> dict[str, Any]:
    """The public JWK of ``key``; ``kid=None`` leaves the kid out."""
    numbers = key.public_key().public_numbers()
    entry = {"kty": "RSA", "n": b64int(numbers.n), "e": b64int(numbers.e), "alg": "RS256"}
    return entry if kid is None else {**entry, "kid": kid}


def skipped(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The "key ... not used: reason" lines logged, as "kid: reason"."""
    lines = []
    for record in caplog.records:
        message = record.getMessage()
        if " not used: " in message and record.levelno == logging.WARNING:
            lines.append(message.split(": key ", 1)[1].replace(" not used", ""))
    return lines


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


# -- keys: hygiene of individual entries ----------------------------------------------------


def test_jwks_entries_without_a_string_kid_are_skipped(
    emulator_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """JWKS keys with no kid, an empty kid or a non-string kid are skipped, logged with why."""
    document = {
        "keys": [
            rsa_jwk(emulator_key, None),
            rsa_jwk(emulator_key, ""),
            rsa_jwk(emulator_key, 7),
            rsa_jwk(emulator_key, "ok"),
        ]
    }
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        keys = parse_key_set(json.dumps(document).encode(), source="the test JWKS")
    assert list(keys) == ["ok"]
    assert skipped(caplog) == ["None: it has no kid", "'': it has no kid", "7: it has no kid"]
    assert all(r.getMessage().startswith("the test JWKS: ") for r in caplog.records)


def test_pem_entry_with_an_empty_kid_is_skipped(
    emulator_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A PEM map entry under an empty key ID is skipped as having no kid."""
    pem = self_signed_pem(emulator_key)
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        keys = parse_key_set(json.dumps({"": pem, "ok": pem}).encode())
    assert list(keys) == ["ok"]
    assert skipped(caplog) == ["'': it has no kid"]


def test_jwk_with_a_repeated_member_is_skipped(
    emulator_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A JWK naming a member twice (which n counts?) is skipped; other keys still serve."""
    good = rsa_jwk(emulator_key, "ok")
    other_n = good["n"][:-4] + "AAAB"  # another modulus of the same length
    twice = f'{{"kty":"RSA","kid":"dup","n":"{good["n"]}","n":"{other_n}","e":"AQAB"}}'
    body = f'{{"keys":[{twice},{json.dumps(good)}]}}'.encode()
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        keys = parse_key_set(body)
    assert list(keys) == ["ok"]
    assert skipped(caplog) == ["'dup': member(s) n appear twice"]


def test_jwk_with_an_impossible_base64_length_is_skipped(
    emulator_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A modulus whose base64url length cannot be decoded is skipped as not base64url."""
    document = {"keys": [{**rsa_jwk(emulator_key, "bad"), "n": "AAAAA"}, rsa_jwk(emulator_key)]}
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        keys = parse_key_set(json.dumps(document).encode())
    assert list(keys) == ["k1"]
    assert skipped(caplog) == ["'bad': its n is not base64url"]


def test_pem_certificates_with_unusable_keys_are_skipped(
    emulator_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A P-384 certificate, or a P-256 one while only RS256 is configured, is skipped."""
    document = {
        "p384": self_signed_pem(ec.generate_private_key(ec.SECP384R1())),
        "p256": self_signed_pem(ec.generate_private_key(ec.SECP256R1())),
        "rsa": self_signed_pem(emulator_key),
    }
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        keys = parse_key_set(json.dumps(document).encode(), ("RS256",))
    assert list(keys) == ["rsa"]
    assert skipped(caplog) == [
        "'p384': its certificate holds neither an RSA nor a P-256 key",
        "'p256': it is a key for ES256, which is not configured",
    ]
    with pytest.raises(KeyFetchError, match="no usable verification key"):
        parse_key_set(json.dumps({"p384": document["p384"]}).encode(), ("RS256", "ES256"))


def test_a_single_algorithm_string_is_one_algorithm(emulator_key: rsa.RSAPrivateKey) -> None:
    """algorithms="ES256" means ES256 (not its letters): only the P-256 key is used."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    document = {"rsa": self_signed_pem(emulator_key), "ec": self_signed_pem(ec_key)}
    keys = KeySet(URL, transport=Endpoint(document), algorithms="ES256")
    assert keys.algorithms == frozenset({"ES256"})
    assert keys.get("ec").public_numbers() == ec_key.public_key().public_numbers()
    assert keys.kids == ("ec",)
    assert list(parse_key_set(json.dumps(document).encode(), "RS256")) == ["rsa"]


# -- keys: fetching --------------------------------------------------------------------------


def test_degraded_key_set_does_not_refetch_within_the_backoff(
    emulator_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    """Once a refresh of expired keys failed, lookups within failure_backoff serve the stale
    keys without another fetch."""
    endpoint = Endpoint({"keys": [rsa_jwk(emulator_key)]})
    keys = KeySet(URL, transport=endpoint, clock=clock, failure_backoff=5)
    keys.refresh()
    endpoint.status = 503
    clock.advance(301)
    stale = keys.get("k1")  # the refresh fails (two attempts): degraded from now on
    assert endpoint.calls == 3
    for _ in range(20):
        clock.advance(0.2)
        assert keys.get("k1") is stale
    assert endpoint.calls == 3
    assert keys.stats.stale and keys.stats.failures == 1


def test_kid_stored_by_a_concurrent_fetch_needs_no_refetch(
    emulator_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    """A kid a concurrent fetch stored just before planning needs no fetch, nor the cooldown."""
    endpoint = Endpoint({"keys": [rsa_jwk(emulator_key)]})
    keys = KeySet(URL, transport=endpoint, clock=clock)
    keys.refresh()
    # get() looks in the cache, then plans a fetch under the lock; the kid appears in a fresh
    # set between the two only when another thread's fetch lands in that instant, a race no
    # test can time, so the planning step is asked directly.
    assert keys._plan("k1", clock()) is None
    assert endpoint.calls == 1
    with pytest.raises(UnknownKeyError):
        keys.get("k2")
    assert endpoint.calls == 2  # the unknown-kid refetch was still available


@pytest.mark.slow
def test_lookup_gives_up_on_a_fetch_that_hangs(clock: Clock) -> None:
    """A fetch stuck in a transport that ignores its timeout fails the lookup closed (503)
    after timeout plus the queue slack, instead of hanging the request."""
    release = threading.Event()

    def hanging(request: HTTPRequest) -> HTTPResponse:
        release.wait(30)
        raise TransportError("released by the test")

    keys = KeySet(URL, transport=hanging, clock=clock, timeout=0.01, queue_slack=0.05)
    try:
        with pytest.raises(KeyFetchError, match="took too long") as caught:
            keys.get("k1")
    finally:
        release.set()
    assert caught.value.status_code == 503
    assert "no verification keys could be fetched" in caught.value.message
    wait_for(lambda: keys.stats.failures == 1)  # the stuck fetch ends, recorded as a failure


@pytest.mark.slow
@pytest.mark.anyio
async def test_async_lookup_gives_up_on_a_fetch_that_hangs(clock: Clock) -> None:
    """aget fails closed like get when a fetch hangs: no asyncio or trio task waits forever."""
    release = threading.Event()

    def hanging(request: HTTPRequest) -> HTTPResponse:
        release.wait(30)
        raise TransportError("released by the test")

    keys = KeySet(URL, transport=hanging, clock=clock, timeout=0.01, queue_slack=0.05)
    try:
        with pytest.raises(KeyFetchError, match="took too long") as caught:
            await keys.aget("k1")
    finally:
        release.set()
    assert caught.value.status_code == 503
    wait_for(lambda: keys.stats.failures == 1)


def test_cached_token_is_checked_again_once_its_key_is_retired(emulator: Emulator) -> None:
    """A verified token is not served from the cache after its key left the published set."""
    clock = Clock(time.time())
    keys = KeySet(emulator.jwks_url, clock=clock)
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=keys, clock=clock)
    token = emulator.mint(AUDIENCE, account=CALLER)
    verifier.verify(token)
    emulator.rotate_keys(keep_old=False)
    keys.refresh()
    with pytest.raises(UnknownKeyError):
        verifier.verify(token)
    assert verifier.stats.cache_hits == 0
    keys.close()


def test_cached_token_fails_closed_with_the_keys(emulator: Emulator) -> None:
    """Stale keys still back a cached token within their grace; past it, 503 like any token."""
    emulator.cache_max_age = 600  # the keys expire well before the token
    clock = Clock(time.time())
    keys = KeySet(emulator.jwks_url, clock=clock, stale_grace=120)
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=keys, clock=clock)
    token = emulator.mint(AUDIENCE, account=CALLER)
    verifier.verify(token)
    emulator.inject("certs", statuses=[503] * 100)
    expired_by = (keys.expires_at or 0) - clock()
    clock.advance(expired_by + 60)
    assert verifier.verify(token).email == CALLER
    clock.advance(61)
    with pytest.raises(KeyFetchError):
        verifier.verify(token)
    keys.close()


def test_a_clock_stepped_back_does_not_stretch_the_failure_backoff(emulator: Emulator) -> None:
    """After a failed fetch, a wall clock stepped back an hour does not hold off the next one."""
    clock = Clock(time.time())
    keys = KeySet(emulator.jwks_url, clock=clock, failure_backoff=5)
    emulator.inject("certs", drop=2)
    with pytest.raises(KeyFetchError):
        keys.get(emulator.kid)
    emulator.clear_faults("certs")
    clock.advance(-3600)
    assert keys.get(emulator.kid) is not None
    keys.close()


def test_a_clock_stepped_back_does_not_stretch_the_unknown_kid_cooldown(
    emulator: Emulator,
) -> None:
    """After a clock step back, a newly published kid is fetched once the cooldown is over."""
    clock = Clock(time.time())
    keys = KeySet(emulator.jwks_url, clock=clock, unknown_kid_cooldown=30)
    keys.get(emulator.kid)
    with pytest.raises(UnknownKeyError):
        keys.get("not-published")  # spends the refetch of this cooldown
    clock.advance(-3600)
    new_kid = emulator.rotate_keys()
    clock.advance(31)
    assert keys.get(new_kid) is not None
    keys.close()


def test_stale_keys_are_judged_when_the_wait_ends(emulator: Emulator) -> None:
    """A fetch that fails after using up the last of the stale grace gets a 503, not old keys."""
    clock = Clock(time.time())
    pooled = HTTPTransport()
    down: list[bool] = []

    def transport(request: HTTPRequest) -> HTTPResponse:
        if down:
            clock.advance(4)  # each failing attempt takes four seconds
            raise TransportError("connection refused")
        return pooled(request)

    keys = KeySet(emulator.jwks_url, clock=clock, transport=transport, stale_grace=100)
    keys.get(emulator.kid)
    down.append(True)
    clock.advance((keys.expires_at or 0) - clock() + 99)  # one second of grace left
    with pytest.raises(KeyFetchError):
        keys.get(emulator.kid)
    pooled.close()


def test_a_fetch_that_cannot_start_a_worker_leaves_no_stuck_claim(emulator: Emulator) -> None:
    """When no worker thread can start ("can't start new thread"), that lookup fails and the
    next one fetches as usual: the claim on the fetch is released (a fresh interpreter, so
    the worker pool has no thread yet)."""
    script = textwrap.dedent(
        f"""
        import threading
        from s2sauth.verify.keys import KeySet
        real_start = threading.Thread.start
        failed = []
        def start(self):
            if not failed and self.name.startswith("s2sauth"):
                failed.append(self.name)
                raise RuntimeError("can't start new thread")
            return real_start(self)
        threading.Thread.start = start
        keys = KeySet({emulator.jwks_url!r}, timeout=5, queue_slack=600)
        try:
            keys.get({emulator.kid!r})
        except RuntimeError as exc:
            print("first:", exc)
        keys.get({emulator.kid!r})
        print("second: fetched", keys.stats.fetches)
        """
    )
    # Before the fix the dropped work item ran later, freed the second call's claim and
    # left its future unresolved: the second lookup waited timeout + slack (here 605 s,
    # so it shows as this run's timeout) and two fetches ran.
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=_PROJECT_ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the second lookup waited for a fetch whose future was never resolved")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == "first: can't start new thread"
    assert second == "second: fetched 1"


# -- jws -------------------------------------------------------------------------------------


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


# -- verifier --------------------------------------------------------------------------------


def test_cached_token_is_refused_when_the_clock_steps_back(
    emulator: Emulator, make_verifier: Callable[..., Verifier], real_clock: Clock
) -> None:
    """A cached token is refused as not yet valid when the clock steps back past its iat, and
    dropped from the cache: the next check verifies it in full."""
    verifier = make_verifier()
    token = emulator.mint(AUDIENCE)
    verifier.verify(token)
    real_clock.advance(-600)
    with pytest.raises(ImmatureTokenError, match="not valid yet"):
        verifier.verify(token)
    assert verifier.stats.rejected_by_reason == {"not_yet_valid": 1}
    real_clock.advance(600)
    assert verifier.verify(token).email == CALLER
    assert (verifier.stats.cache_hits, verifier.stats.verified) == (0, 2)
    assert verifier.verify(token).email == CALLER
    assert verifier.stats.cache_hits == 1
    assert emulator.counters["jwks"] == 1


def test_verifier_repr_names_audiences_and_keys_only() -> None:
    """The repr lists the sorted audiences and the key set, nothing else."""
    verifier = Verifier(["https://b.example", "https://a.example"], allowed_callers=[SA])
    assert repr(verifier) == (
        "Verifier(audience=['https://a.example', 'https://b.example'], "
        "keyset=KeySet('http://127.0.0.1:9/oauth2/v3/certs'))"
    )


def test_closing_a_verifier_leaves_a_shared_key_set_open(
    emulator: Emulator, real_clock: Clock
) -> None:
    """A verifier closes only a key set it made: one passed in may serve other verifiers."""
    closed: list[KeySet] = []

    class Recording(KeySet):
        def close(self) -> None:
            closed.append(self)
            super().close()

    shared = Recording(emulator.jwks_url, clock=real_clock)
    with Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=shared, clock=real_clock) as one:
        one.verify(emulator.mint(AUDIENCE))
    one.close()
    assert closed == []
    other = Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=shared, clock=real_clock)
    assert other.verify(emulator.mint(AUDIENCE, claims={"n": 1})).email == CALLER
    shared.close()
    assert closed == [shared]


def test_plain_http_keys_url_off_loopback_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """A plain-http keys URL off loopback logs one WARNING (keys could be substituted)."""
    url = f"http://keys-{uuid.uuid4().hex}.example/certs"
    with caplog.at_level(logging.INFO, logger="s2sauth"):
        Verifier(AUDIENCE, allowed_callers=[SA], certs_url=url)
        Verifier(AUDIENCE, allowed_callers=[SA], certs_url=url)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert url in warnings[0] and "plain http" in warnings[0] and "use https" in warnings[0]


# -- policy ----------------------------------------------------------------------------------


def test_caller_policy_equality_and_hash() -> None:
    """Policies with the same entries are equal and hash alike; a plain list is not a policy."""
    policy = CallerPolicy([SA])
    assert policy == CallerPolicy([f" {SA.upper()} "])
    assert hash(policy) == hash(CallerPolicy([SA.upper()]))
    assert len({policy, CallerPolicy([SA]), CallerPolicy([OPS])}) == 2
    assert policy != [SA]
    assert policy.__eq__([SA]) is NotImplemented


def test_rule_and_route_policy_reprs() -> None:
    """Rules and route policies show their normalised paths, allow-lists, methods and exempts."""
    rule = Rule("/admin//", [OPS], methods=["get"])
    assert repr(rule) == f"Rule('/admin', CallerPolicy(['{OPS}']), methods=['GET', 'HEAD'])"
    any_method = Rule("/data", [SA])
    assert repr(any_method) == f"Rule('/data', CallerPolicy(['{SA}']))"
    routes = RoutePolicy([SA], rules=[any_method, rule], exempt=["/public/", "/healthz"])
    assert repr(routes) == (
        f"RoutePolicy(CallerPolicy(['{SA}']), rules=[{rule!r}, {any_method!r}], "
        "exempt=['/healthz', '/public/'])"
    )
    assert repr(RoutePolicy(None)) == "RoutePolicy(None, rules=[], exempt=[])"


# -- token location and adapters -------------------------------------------------------------


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
