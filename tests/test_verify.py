"""Verifier end to end: the emulator's keys over real HTTP on loopback (s2sauth.verify.verifier)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support import Clock

from s2sauth._errors import (
    AudienceMismatchError,
    BadSignatureError,
    CallerNotAllowedError,
    ConfigurationError,
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidClaimsError,
    InvalidHeaderError,
    InvalidTokenError,
    IssuerMismatchError,
    KeyFetchError,
    MalformedTokenError,
    MissingTokenError,
    S2SAuthError,
    SignatureRemovedError,
    UnknownKeyError,
)
from s2sauth._http import HTTPTransport
from s2sauth.emulator import Emulator
from s2sauth.verify.keys import KeySet
from s2sauth.verify.policy import CallerPolicy
from s2sauth.verify.verifier import GOOGLE_CERTS_URL, GOOGLE_ISSUERS, Verifier

AUDIENCE = "https://svc-abc-uc.a.run.app"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
OTHER = "other@demo-project.iam.gserviceaccount.com"


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    """The session's RSA-2048 key, shared by every emulator."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def emulator(signing_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """A running emulator with two service accounts."""
    with Emulator(service_accounts=(CALLER, OTHER), signing_key=signing_key) as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    """A fresh injected clock, starting at the real time (the emulator mints at it)."""
    return Clock(time.time())


@pytest.fixture
def make_verifier(emulator: Emulator, clock: Clock) -> Iterator[Callable[..., Verifier]]:
    """Build verifiers against the emulator's JWKS; their connections close at teardown."""
    made: list[Verifier] = []

    def make(**options: Any) -> Verifier:
        options.setdefault("allowed_callers", [CALLER])
        if "keyset" not in options:
            options.setdefault("certs_url", emulator.jwks_url)
        options.setdefault("clock", clock)
        verifier = Verifier(options.pop("audience", AUDIENCE), **options)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


def strip_signature(token: str) -> str:
    return token.rsplit(".", 1)[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"


def test_valid_token_yields_the_caller(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """A genuine token for the audience from an allowed caller yields its Caller."""
    verifier = make_verifier()
    caller = verifier.verify(emulator.mint(AUDIENCE, account=CALLER))
    assert caller.email == CALLER
    assert caller.subject == Emulator.subject(CALLER)
    assert caller.audience == AUDIENCE
    assert (caller.expires_at - caller.issued_at).total_seconds() == 3600
    assert caller.claims["iss"] == "https://accounts.google.com"
    assert emulator.counters["jwks"] == 1


def test_constructor_does_no_io(emulator: Emulator, make_verifier: Callable[..., Verifier]) -> None:
    """Building a verifier fetches nothing."""
    make_verifier()
    assert emulator.counters["jwks"] == 0


def test_pem_certs_endpoint_works_too(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """The v1 PEM certificate map verifies tokens like the JWKS."""
    verifier = make_verifier(certs_url=emulator.pem_certs_url)
    assert verifier.verify(emulator.mint(AUDIENCE)).email == CALLER
    assert emulator.counters["pem_certs"] == 1


def test_several_audiences(emulator: Emulator, make_verifier: Callable[..., Verifier]) -> None:
    """A verifier configured with several audiences accepts each of them."""
    verifier = make_verifier(audience=[AUDIENCE, "https://svc.example.com"])
    verifier.verify(emulator.mint(AUDIENCE))
    verifier.verify(emulator.mint("https://svc.example.com"))
    with pytest.raises(AudienceMismatchError):
        verifier.verify(emulator.mint("https://svc.example.org"))


def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


REJECTIONS = [
    pytest.param(lambda em: em.mint("https://elsewhere"), AudienceMismatchError, id="wrong aud"),
    pytest.param(
        lambda em: em.mint(AUDIENCE, claims={"iss": "https://evil.example"}),
        IssuerMismatchError,
        id="wrong iss",
    ),
    pytest.param(
        lambda em: em.mint(AUDIENCE, claims={"iat": 1_000_000, "exp": 1_003_600}),
        ExpiredTokenError,
        id="expired",
    ),
    pytest.param(
        lambda em: em.mint(AUDIENCE, claims={"nbf": int(time.time()) + 600}),
        ImmatureTokenError,
        id="not yet valid",
    ),
    pytest.param(lambda em: em.mint(AUDIENCE, lifetime=7200), InvalidClaimsError, id="2 h life"),
    pytest.param(
        lambda em: em.mint(AUDIENCE, claims={"exp": float(time.time() + 60)}),
        InvalidClaimsError,
        id="float exp",
    ),
    pytest.param(lambda em: em.mint(AUDIENCE, key=_other_key()), BadSignatureError, id="other key"),
    pytest.param(lambda em: em.mint(AUDIENCE, header={"kid": "nope"}), UnknownKeyError, id="kid"),
    pytest.param(
        lambda em: em.mint(AUDIENCE, header={"kid": em.DELETE}), InvalidHeaderError, id="no kid"
    ),
    pytest.param(
        lambda em: em.mint(AUDIENCE, header={"jku": "http://127.0.0.1:1/keys"}),
        InvalidHeaderError,
        id="jku",
    ),
    pytest.param(
        lambda em: em.mint(AUDIENCE, header={"alg": "none"}), InvalidHeaderError, id="none"
    ),
    pytest.param(
        lambda em: em.sign_raw(f'{{"alg":"RS256","kid":"{em.kid}"}}', '{"aud":1,"aud":2}'),
        MalformedTokenError,
        id="duplicate claim",
    ),
    pytest.param(lambda em: strip_signature(em.mint(AUDIENCE)), SignatureRemovedError, id="strip"),
    pytest.param(lambda em: "not-a-token", MalformedTokenError, id="garbage"),
    pytest.param(lambda em: "", MissingTokenError, id="empty"),
    pytest.param(lambda em: em.mint(AUDIENCE, account=OTHER), CallerNotAllowedError, id="other SA"),
    pytest.param(lambda em: em.mint(AUDIENCE, full=False), CallerNotAllowedError, id="no email"),
    pytest.param(
        lambda em: em.mint(AUDIENCE, claims={"email_verified": False}),
        CallerNotAllowedError,
        id="email not verified",
    ),
]


@pytest.mark.parametrize(("make_token", "error"), REJECTIONS)
def test_rejections_end_to_end(
    emulator: Emulator,
    make_verifier: Callable[..., Verifier],
    make_token: Callable[[Emulator], str],
    error: type[S2SAuthError],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each reason to refuse a token is reported as its own error, counted and logged safely."""
    verifier = make_verifier()
    token = make_token(emulator)
    with caplog.at_level(logging.DEBUG, logger="s2sauth"):
        with pytest.raises(error) as caught:
            verifier.verify(token)
    assert verifier.stats.rejected_by_reason == {caught.value.reason: 1}
    assert verifier.stats.verified == (1 if error is CallerNotAllowedError else 0)
    rejections = [r for r in caplog.records if caught.value.reason in r.getMessage()]
    assert rejections and all(r.levelno == logging.INFO for r in rejections)
    signature = token.rsplit(".", 1)[-1]
    if len(signature) > 100:
        assert all(signature not in r.getMessage() for r in caplog.records)
        assert signature not in str(caught.value)


def test_no_email_caller_is_allowed_by_unique_id(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """A token without a verified email still matches an allow-list entry by unique ID."""
    verifier = make_verifier(allowed_callers=[Emulator.subject(CALLER)])
    caller = verifier.verify(emulator.mint(AUDIENCE, full=False))
    assert caller.email is None
    assert caller.subject == Emulator.subject(CALLER)


def test_rotated_key_is_accepted_after_one_refetch(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """After a key rotation, a token with the new kid verifies without a restart."""
    verifier = make_verifier()
    verifier.verify(emulator.mint(AUDIENCE))
    emulator.rotate_keys()
    verifier.verify(emulator.mint(AUDIENCE))
    assert emulator.counters["jwks"] == 2
    assert verifier.stats.key_fetches == 2


def test_retired_key_is_refused(emulator: Emulator, make_verifier: Callable[..., Verifier]) -> None:
    """A token signed with a key no longer published is refused."""
    old_kid, old_key = emulator.kid, emulator.private_key
    emulator.rotate_keys()
    emulator.retire_key(old_kid)
    token = emulator.mint(AUDIENCE, key=old_key, header={"kid": old_kid})
    with pytest.raises(UnknownKeyError):
        make_verifier().verify(token)


def test_verified_token_cache_hits_and_rechecks_expiry(
    emulator: Emulator, make_verifier: Callable[..., Verifier], clock: Clock
) -> None:
    """A repeated token is answered from the cache, and its expiry is re-checked on every hit."""
    verifier = make_verifier()
    token = emulator.mint(AUDIENCE)
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    assert verifier.verify(token) is first
    assert (verifier.stats.cache_hits, verifier.stats.verified) == (2, 3)
    clock.advance(3600 + 29)
    assert verifier.verify(token) is first  # expired, but inside the leeway
    clock.advance(1)
    with pytest.raises(ExpiredTokenError):
        verifier.verify(token)
    assert verifier.stats.rejected_by_reason == {"expired": 1}
    with pytest.raises(ExpiredTokenError):
        verifier.verify(token)
    assert verifier.stats.cache_hits == 3


def test_cache_never_skips_the_policy(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """The caller policy is applied on every call, cached token or not."""
    verifier = make_verifier(allowed_callers=None)
    token = emulator.mint(AUDIENCE, account=OTHER)
    assert verifier.verify(token).email == OTHER
    with pytest.raises(CallerNotAllowedError):
        verifier.verify(token, allowed_callers=[CALLER])
    assert verifier.verify(token, allowed_callers=CallerPolicy([OTHER])).email == OTHER
    assert verifier.stats.cache_hits == 2


def test_cache_size_zero_disables_the_cache(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """With cache_size=0 every call verifies the signature again."""
    verifier = make_verifier(cache_size=0)
    token = emulator.mint(AUDIENCE)
    verifier.verify(token)
    verifier.verify(token)
    assert (verifier.stats.cache_hits, verifier.stats.verified) == (0, 2)


def test_cache_is_bounded_least_recently_used_first(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """A full cache forgets the token used least recently."""
    verifier = make_verifier(cache_size=2)
    one, two, three = (emulator.mint(AUDIENCE, claims={"n": n}) for n in (1, 2, 3))
    verifier.verify(one)
    verifier.verify(two)
    verifier.verify(one)  # hit: `one` is now the most recently used
    verifier.verify(three)  # evicts `two`
    assert verifier.stats.cache_hits == 1
    verifier.verify(one)
    assert verifier.stats.cache_hits == 2
    verifier.verify(two)
    assert verifier.stats.cache_hits == 2


def test_authenticate_skips_the_policy(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """authenticate checks the token only; adapters apply route policies themselves."""
    verifier = make_verifier()
    assert verifier.policy == CallerPolicy([CALLER])
    assert verifier.authenticate(emulator.mint(AUDIENCE, account=OTHER)).email == OTHER
    with pytest.raises(AudienceMismatchError):
        verifier.authenticate(emulator.mint("https://elsewhere"))


def test_authorize_counts_and_logs_a_refusal_once(
    emulator: Emulator, make_verifier: Callable[..., Verifier], caplog: pytest.LogCaptureFixture
) -> None:
    """authorize applies a policy (the verifier's by default) and counts and logs a 403 once."""
    verifier = make_verifier()
    other = verifier.authenticate(emulator.mint(AUDIENCE, account=OTHER))
    assert verifier.authorize(other, [OTHER]) is other
    assert verifier.authorize(other, CallerPolicy([OTHER])) is other
    with caplog.at_level(logging.DEBUG, logger="s2sauth"):
        with pytest.raises(CallerNotAllowedError):
            verifier.authorize(other)
    assert verifier.stats.rejected_by_reason == {"caller_not_allowed": 1}
    assert [(r.levelno, "caller_not_allowed" in r.getMessage()) for r in caplog.records] == [
        (logging.INFO, True)
    ]
    anyone = make_verifier(allowed_callers=None)
    assert anyone.authorize(other) is other
    assert anyone.stats.rejected_by_reason == {}


def test_verifier_is_a_context_manager(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """`with Verifier(...) as v` yields the verifier and closes it on the way out, even on error."""
    closed: list[Verifier] = []

    class Recording(Verifier):
        def close(self) -> None:
            closed.append(self)
            super().close()

    with Recording(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url) as verifier:
        assert isinstance(verifier, Recording)
        assert verifier.verify(emulator.mint(AUDIENCE)).email == CALLER
        assert closed == []
    assert closed == [verifier]
    with pytest.raises(ExpiredTokenError):
        with Recording(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url) as second:
            second.verify(emulator.mint(AUDIENCE, claims={"exp": 1, "iat": 0}))
    assert closed == [verifier, second]
    assert verifier.verify(emulator.mint(AUDIENCE)).email == CALLER  # still usable after close
    verifier.close()


def test_keys_endpoint_down_at_start_fails_closed(
    emulator: Emulator, make_verifier: Callable[..., Verifier], clock: Clock
) -> None:
    """With the keys endpoint down and no keys yet, tokens get KeyFetchError (503), not access."""
    verifier = make_verifier()
    token = emulator.mint(AUDIENCE)
    emulator.inject("certs", statuses=(503, 503))
    with pytest.raises(KeyFetchError) as caught:
        verifier.verify(token)
    assert caught.value.status_code == 503
    assert verifier.stats.rejected_by_reason == {"keys_unavailable": 1}
    with pytest.raises(KeyFetchError):
        verifier.verify(token)  # within the failure backoff: no new fetch
    assert emulator.counters["jwks"] == 2
    clock.advance(5)
    assert verifier.verify(token).email == CALLER


@pytest.mark.parametrize("body", ["garbage", "empty", "html"])
def test_keys_endpoint_junk_fails_closed(
    emulator: Emulator, make_verifier: Callable[..., Verifier], body: Any
) -> None:
    """A keys endpoint answering junk with 200 is a KeyFetchError, not an open door."""
    emulator.inject("certs", body=body)
    with pytest.raises(KeyFetchError, match="key set"):
        make_verifier().verify(emulator.mint(AUDIENCE))


def test_stale_keys_keep_working_after_start(
    signing_key: rsa.RSAPrivateKey, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Once keys were fetched, an outage of the endpoint is bridged by the stale keys."""
    with Emulator(CALLER, signing_key=signing_key, cache_max_age=60) as emulator:
        keyset = KeySet(emulator.jwks_url, clock=clock, stale_grace=3600)
        verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], clock=clock, keyset=keyset)
        verifier.verify(emulator.mint(AUDIENCE))
        emulator.inject("certs", drop=1000)
        clock.advance(120)
        emulator.clock_offset = 120
        with caplog.at_level(logging.WARNING, logger="s2sauth"):
            assert verifier.verify(emulator.mint(AUDIENCE)).email == CALLER
        assert any("expired at" in r.getMessage() for r in caplog.records)
        clock.advance(3600)
        emulator.clock_offset = 3720
        with pytest.raises(KeyFetchError):
            verifier.verify(emulator.mint(AUDIENCE))
        keyset.close()


def test_stripped_signature_needs_the_iam_opt_in(
    emulator: Emulator, make_verifier: Callable[..., Verifier], clock: Clock
) -> None:
    """Opted in, a stripped token is accepted without keys; claims and policy still apply."""
    verifier = make_verifier(trust_cloud_run_iam=True)
    assert verifier.verify(strip_signature(emulator.mint(AUDIENCE))).email == CALLER
    assert emulator.counters["jwks"] == 0
    with pytest.raises(CallerNotAllowedError):
        verifier.verify(strip_signature(emulator.mint(AUDIENCE, account=OTHER)))
    with pytest.raises(AudienceMismatchError):
        verifier.verify(strip_signature(emulator.mint("https://elsewhere")))
    with pytest.raises(InvalidHeaderError):
        verifier.verify(strip_signature(emulator.mint(AUDIENCE, header={"alg": "HS256"})))
    clock.advance(7200)
    with pytest.raises(ExpiredTokenError):
        verifier.verify(strip_signature(emulator.mint(AUDIENCE)))
    emulator.clock_offset = 7200
    assert verifier.verify(emulator.mint(AUDIENCE)).email == CALLER


def test_allow_anyone_warns_unless_iam_enforces(
    make_verifier: Callable[..., Verifier], caplog: pytest.LogCaptureFixture
) -> None:
    """allowed_callers=None logs a WARNING, except with trust_cloud_run_iam."""
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        make_verifier(allowed_callers=None, trust_cloud_run_iam=True)
        assert not caplog.records
        verifier = make_verifier(allowed_callers=None)
    assert verifier.policy is None
    assert any("any caller" in r.getMessage() for r in caplog.records)


def test_compute_default_service_account_warns(
    make_verifier: Callable[..., Verifier], caplog: pytest.LogCaptureFixture
) -> None:
    """An allow-list naming a Compute Engine default service account logs a WARNING."""
    email = "1029384756-compute@developer.gserviceaccount.com"
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        make_verifier(allowed_callers=[CALLER, email])
    assert any("Compute Engine default" in r.getMessage() for r in caplog.records)


def test_certs_url_from_the_environment(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without certs_url, S2SAUTH_CERTS_URL is used (logged at INFO), else Google's."""
    # A URL no earlier test used (a later emulator may get an earlier one's port): the
    # INFO line is logged once per URL and process.
    url = f"{emulator.jwks_url}?test={uuid.uuid4().hex}"
    monkeypatch.setenv("S2SAUTH_CERTS_URL", url)
    with caplog.at_level(logging.INFO, logger="s2sauth"):
        verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], clock=clock)
    assert verifier.keyset.certs_url == url
    assert any("S2SAUTH_CERTS_URL" in r.getMessage() for r in caplog.records)
    assert verifier.verify(emulator.mint(AUDIENCE)).email == CALLER
    verifier.close()
    monkeypatch.delenv("S2SAUTH_CERTS_URL")
    assert Verifier(AUDIENCE, allowed_callers=[CALLER]).keyset.certs_url == GOOGLE_CERTS_URL


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"audience": ""}, id="empty audience"),
        pytest.param({"audience": []}, id="no audience"),
        pytest.param({"audience": [AUDIENCE, ""]}, id="one empty audience"),
        pytest.param({"leeway": -1}, id="negative leeway"),
        pytest.param({"leeway": 61}, id="leeway above 60"),
        pytest.param({"leeway": "30"}, id="string leeway"),
        pytest.param({"leeway": True}, id="boolean leeway"),
        pytest.param({"algorithms": ["HS256"]}, id="HMAC"),
        pytest.param({"algorithms": ["none"]}, id="alg none"),
        pytest.param({"algorithms": []}, id="no algorithm"),
        pytest.param({"allowed_callers": ["*"]}, id="star"),
        pytest.param({"allowed_callers": ["*@gmail.com"]}, id="gmail wildcard"),
        pytest.param({"allowed_callers": []}, id="empty allow-list"),
        pytest.param({"issuers": []}, id="no issuer"),
        pytest.param({"issuers": ["https://accounts.google.com", " "]}, id="blank issuer"),
        pytest.param({"cache_size": -1}, id="negative cache"),
        pytest.param({"cache_size": 1.5}, id="fractional cache"),
        pytest.param({"certs_url": "ftp://keys.example/certs"}, id="ftp certs_url"),
        pytest.param(
            {"keyset": KeySet("https://keys.example/certs"), "certs_url": "https://x/certs"},
            id="keyset and certs_url",
        ),
        pytest.param(
            {"keyset": KeySet("https://keys.example/certs"), "algorithms": ["RS256", "ES256"]},
            id="keyset without ES256 keys",
        ),
    ],
)
def test_configuration_errors(options: dict[str, Any]) -> None:
    """Bad configuration is refused at construction with a ConfigurationError."""
    options.setdefault("allowed_callers", [CALLER])
    with pytest.raises(ConfigurationError):
        Verifier(options.pop("audience", AUDIENCE), **options)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Google's keys URL and issuers are the defaults; the leeway boundaries are accepted."""
    monkeypatch.delenv("S2SAUTH_CERTS_URL")
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], leeway=60)
    assert verifier.keyset.certs_url == GOOGLE_CERTS_URL
    assert GOOGLE_ISSUERS == ("https://accounts.google.com", "accounts.google.com")
    assert verifier.audiences == {AUDIENCE}
    Verifier(AUDIENCE, allowed_callers=[CALLER], leeway=0)


def test_threads_verifying_one_new_token(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """Many threads verifying at once share one key fetch and all succeed."""
    verifier = make_verifier()
    token = emulator.mint(AUDIENCE)
    start = threading.Barrier(32)
    results: list[str | None] = []

    def verify() -> None:
        start.wait()
        results.append(verifier.verify(token).email)

    threads = [threading.Thread(target=verify) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [CALLER] * 32
    assert emulator.counters["jwks"] == 1
    assert verifier.stats.verified == 32


@pytest.mark.anyio
async def test_averify(emulator: Emulator, make_verifier: Callable[..., Verifier]) -> None:
    """averify fetches keys off the event loop and applies the policy (asyncio and trio)."""
    verifier = make_verifier()
    token = emulator.mint(AUDIENCE)
    assert (await verifier.averify(token)).email == CALLER
    assert (await verifier.averify(token)).email == CALLER
    assert verifier.stats.cache_hits == 1
    with pytest.raises(CallerNotAllowedError):
        await verifier.averify(emulator.mint(AUDIENCE, account=OTHER))
    assert (await verifier.aauthenticate(emulator.mint(AUDIENCE, account=OTHER))).email == OTHER
    with pytest.raises(InvalidTokenError):
        await verifier.aauthenticate(emulator.mint("https://elsewhere"))
    assert emulator.counters["jwks"] == 1


@pytest.mark.anyio
async def test_averify_fails_closed(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """averify with the keys endpoint down raises KeyFetchError."""
    emulator.inject("certs", statuses=(500, 500))
    with pytest.raises(KeyFetchError):
        await make_verifier().averify(emulator.mint(AUDIENCE))


def test_transport_may_be_injected(
    emulator: Emulator, make_verifier: Callable[..., Verifier]
) -> None:
    """An injected transport performs the key fetch."""
    transport = HTTPTransport()
    calls: list[str] = []

    def counting(request: Any) -> Any:
        calls.append(request.url)
        return transport(request)

    verifier = make_verifier(transport=counting)
    verifier.verify(emulator.mint(AUDIENCE))
    assert calls == [emulator.jwks_url]
    transport.close()


# -- helpers of the tests below ------------------------------------------------------------


SA = "caller@proj-one.iam.gserviceaccount.com"


# -- verifier ------------------------------------------------------------------------------


def test_cached_token_is_refused_when_the_clock_steps_back(
    emulator: Emulator, make_verifier: Callable[..., Verifier], clock: Clock
) -> None:
    """A cached token is refused as not yet valid when the clock steps back past its iat, and
    dropped from the cache: the next check verifies it in full."""
    verifier = make_verifier()
    token = emulator.mint(AUDIENCE)
    verifier.verify(token)
    clock.advance(-600)
    with pytest.raises(ImmatureTokenError, match="not valid yet"):
        verifier.verify(token)
    assert verifier.stats.rejected_by_reason == {"not_yet_valid": 1}
    clock.advance(600)
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


def test_closing_a_verifier_leaves_a_shared_key_set_open(emulator: Emulator, clock: Clock) -> None:
    """A verifier closes only a key set it made: one passed in may serve other verifiers."""
    closed: list[KeySet] = []

    class Recording(KeySet):
        def close(self) -> None:
            closed.append(self)
            super().close()

    shared = Recording(emulator.jwks_url, clock=clock)
    with Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=shared, clock=clock) as one:
        one.verify(emulator.mint(AUDIENCE))
    one.close()
    assert closed == []
    other = Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=shared, clock=clock)
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
