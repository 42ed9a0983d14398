"""Fault injection with the emulator's hooks, on both sides.

Outbound (metadata server): slow, 5xx, 429/408, garbage, HTML, empty, dropped
connections, no ``Metadata-Flavor``, unknown account, and an outage during
refresh-ahead. Inbound (keys endpoint): slow, 5xx, garbage, dropped
connections, on a cold start and with keys cached, and keys rotated mid-run.

Each case checks the specified outcome (retry, serve the cached token or keys,
fail closed with 503, a clear error) and counts attempts through the emulator's
counters. Where a fault is a hang, the test also bounds the wait: it must end
within the configured deadline plus a generous two seconds (a bound on hanging,
not a performance figure).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from attack_kit import AUDIENCE, CALLER, Forge, fetch, soak

from s2sauth._errors import KeyFetchError, TokenFetchError, UnknownKeyError
from s2sauth._http import HTTPTransport
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import IDTokenProvider
from s2sauth.tokens.sources import MetadataServerSource
from s2sauth.verify.keys import KeySet
from s2sauth.verify.verifier import Verifier

#: Allowed on top of a configured deadline before a fault counts as a hang.
SLACK = 2.0
TIMEOUT = 0.3
DEADLINE = 1.5


class OffsetClock:
    """Real time plus an offset the test moves forward (support.Clock stands still: these
    tests run against the emulator and real deadlines)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


_TRANSPORT = HTTPTransport()


@pytest.fixture(autouse=True)
def _no_faults_left(emulator: Emulator) -> Iterator[None]:
    """Each test starts and ends with a well-behaved emulator and no idle connections."""
    emulator.clear_faults()
    yield
    emulator.clear_faults()
    _TRANSPORT.close()


def _bounded(limit: float, call: Callable[[], Any]) -> BaseException:
    """Run ``call``, which must raise; return the exception, checking it came within ``limit``."""
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < limit, f"took {elapsed:.1f}s, bound {limit:.1f}s"
    return raised.value


# --- outbound: the metadata server ---------------------------------------------------------


def _source(emulator: Emulator, account: str = CALLER) -> MetadataServerSource:
    return MetadataServerSource(
        account, host=emulator.host, transport=_TRANSPORT, timeout=TIMEOUT, deadline=DEADLINE
    )


def _identity_calls(emulator: Emulator, call: Callable[[], Any]) -> int:
    before = emulator.counters["identity"]
    call()
    return int(emulator.counters["identity"] - before)


def test_metadata_slow_is_retried_then_fails_within_the_deadline(emulator: Emulator) -> None:
    """Replies slower than the attempt timeout: retried, then TokenFetchError by the deadline."""
    emulator.inject("metadata", delay=DEADLINE + 1)
    source = _source(emulator)
    before = emulator.counters["identity"]
    error = _bounded(DEADLINE + SLACK, lambda: IDTokenProvider(source).token(AUDIENCE))
    assert isinstance(error, TokenFetchError) and error.retryable
    assert emulator.counters["identity"] - before >= 2  # it did retry


@pytest.mark.parametrize("statuses", [[500, 503, 502], [429], [408, 504]], ids=str)
def test_metadata_transient_errors_are_retried(emulator: Emulator, statuses: list[int]) -> None:
    """408, 429 and 5xx answers are retried; the token arrives after them."""
    emulator.inject("metadata", statuses=statuses)
    provider = IDTokenProvider(_source(emulator))
    calls = _identity_calls(emulator, lambda: provider.token(AUDIENCE))
    assert calls == len(statuses) + 1
    assert provider.stats.fetches == 1


def test_metadata_persistent_5xx_fails_within_the_deadline(emulator: Emulator) -> None:
    """A metadata server answering 503 forever: TokenFetchError with the status, retryable."""
    emulator.inject("metadata", statuses=[503] * 1000)
    error = _bounded(DEADLINE + SLACK, lambda: IDTokenProvider(_source(emulator)).token(AUDIENCE))
    assert isinstance(error, TokenFetchError)
    assert (error.status, error.retryable) == (503, True)


def test_metadata_unknown_account_fails_at_once(emulator: Emulator) -> None:
    """A 404 (no such service account) is not retried: one request, the server's reason."""
    provider = IDTokenProvider(_source(emulator, "nobody@demo-project.iam.gserviceaccount.com"))
    before = emulator.counters["identity"]
    with pytest.raises(TokenFetchError) as failed:
        provider.token(AUDIENCE)
    assert emulator.counters["identity"] - before == 1
    assert (failed.value.status, failed.value.retryable) == (404, False)
    assert "service account" in failed.value.message


@pytest.mark.parametrize("body", ["garbage", "html", "empty"])
def test_metadata_non_token_body_is_a_clear_error(
    emulator: Emulator, body: Literal["garbage", "html", "empty"]
) -> None:
    """A 200 whose body is not a JWT (garbage, portal page, nothing) is an error, not a token."""
    emulator.inject("metadata", body=body)
    error = _bounded(DEADLINE + SLACK, lambda: IDTokenProvider(_source(emulator)).token(AUDIENCE))
    assert isinstance(error, TokenFetchError)
    assert "JWT" in error.message


def test_metadata_dropped_connections_are_retried(emulator: Emulator) -> None:
    """Connections closed without a reply are retried."""
    emulator.inject("metadata", drop=2)
    provider = IDTokenProvider(_source(emulator))
    assert _identity_calls(emulator, lambda: provider.token(AUDIENCE)) == 3


def test_metadata_dropping_every_connection_fails_within_the_deadline(emulator: Emulator) -> None:
    """A server that drops every connection: TokenFetchError(retryable) before the deadline."""
    emulator.inject("metadata", drop=10_000)
    error = _bounded(DEADLINE + SLACK, lambda: IDTokenProvider(_source(emulator)).token(AUDIENCE))
    assert isinstance(error, TokenFetchError) and error.retryable


def test_metadata_reply_without_flavor_is_refused(emulator: Emulator) -> None:
    """A reply without ``Metadata-Flavor: Google`` is refused at once, naming the header."""
    emulator.inject("metadata", omit_flavor=True)
    provider = IDTokenProvider(_source(emulator))
    before = emulator.counters["identity"]
    with pytest.raises(TokenFetchError) as failed:
        provider.token(AUDIENCE)
    assert emulator.counters["identity"] - before == 1
    assert "Metadata-Flavor" in failed.value.message


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` (an event count) until true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_metadata_outage_during_refresh_ahead_serves_the_cached_token(emulator: Emulator) -> None:
    """Metadata down while refreshing ahead: cached token served, then an error, then recovery.

    In the refresh window the cached token is served; past its expiry, TokenFetchError;
    after recovery, a new token.
    """
    clock = OffsetClock()
    provider = IDTokenProvider(_source(emulator), clock=clock)
    token = provider.token(AUDIENCE)
    emulator.inject("metadata", statuses=[500] * 10_000)
    clock.offset = 3600 - 120  # inside the 300 s refresh-ahead window
    assert provider.token(AUDIENCE) == token
    _wait_for(lambda: provider.stats.failures >= 1)
    assert provider.token(AUDIENCE) == token
    clock.offset = 3600 + 1
    error = _bounded(DEADLINE + SLACK, lambda: provider.token(AUDIENCE))
    assert isinstance(error, TokenFetchError)
    emulator.clear_faults()
    emulator.clock_offset = clock.offset
    try:
        assert provider.token(AUDIENCE) != token
    finally:
        emulator.clock_offset = 0.0


# --- inbound: the keys endpoint --------------------------------------------------------------


def _verifier(emulator: Emulator, clock: OffsetClock, **keyset_options: Any) -> Verifier:
    options = {"timeout": 0.5, "failure_backoff": 5.0, **keyset_options}
    keyset = KeySet(emulator.jwks_url, clock=clock, transport=_TRANSPORT, **options)
    return Verifier(AUDIENCE, allowed_callers=[CALLER], clock=clock, keyset=keyset)


def _token_at(emulator: Emulator, clock: OffsetClock, *, lifetime: int = 3600) -> str:
    now = int(clock())
    return emulator.mint(AUDIENCE, account=CALLER, claims={"iat": now, "exp": now + lifetime})


def _jwks_calls(emulator: Emulator, call: Callable[[], Any]) -> int:
    before = emulator.counters["jwks"]
    call()
    return int(emulator.counters["jwks"] - before)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"statuses": [503] * 10}, id="5xx"),
        pytest.param({"body": "garbage"}, id="garbage"),
        pytest.param({"body": "html"}, id="html"),
        pytest.param({"body": "empty"}, id="empty"),
        pytest.param({"drop": 10}, id="dropped"),
        pytest.param({"delay": 2.0}, id="slow"),
    ],
)
def test_keys_fault_on_cold_start_fails_closed(emulator: Emulator, fault: dict[str, Any]) -> None:
    """Keys endpoint faulty on a cold start: fail closed with 503, then recover.

    KeyFetchError (503) within the fetch timeout, no new attempt inside the failure
    backoff, and served once the endpoint answers again.
    """
    clock = OffsetClock()
    verifier = _verifier(emulator, clock)
    token = _token_at(emulator, clock)
    emulator.inject("certs", **fault)
    error = _bounded(0.5 + SLACK, lambda: verifier.verify(token))
    assert isinstance(error, KeyFetchError)
    assert (error.status_code, error.retry_after) == (503, 5)
    # Inside the backoff, the next request is refused without hammering the endpoint.
    assert _jwks_calls(emulator, lambda: pytest.raises(KeyFetchError, verifier.verify, token)) == 0
    emulator.clear_faults()
    clock.offset += 6
    assert verifier.verify(token).email == CALLER


def test_keys_retried_once_after_a_transient_failure(emulator: Emulator) -> None:
    """One 503 or one dropped connection costs a second attempt inside the same fetch."""
    clock = OffsetClock()
    emulator.inject("certs", statuses=[503])
    verifier = _verifier(emulator, clock)
    assert _jwks_calls(emulator, lambda: verifier.verify(_token_at(emulator, clock))) == 2
    emulator.inject("certs", drop=1)
    verifier = _verifier(emulator, clock)
    assert _jwks_calls(emulator, lambda: verifier.verify(_token_at(emulator, clock))) == 2


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"statuses": [500] * 10_000}, id="5xx"),
        pytest.param({"body": "garbage"}, id="garbage"),
        pytest.param({"drop": 10_000}, id="dropped"),
        pytest.param({"delay": 2.0}, id="slow"),
    ],
)
def test_keys_outage_with_cached_keys_serves_them_then_fails_closed(
    emulator: Emulator, fault: dict[str, Any]
) -> None:
    """Keys endpoint faulty with keys cached: stale keys serve within the grace, then 503.

    Past the keys' expiry the cached keys keep serving, each wait bounded by the fetch
    timeout; past the grace, KeyFetchError; after recovery, served again.
    """
    clock = OffsetClock()
    verifier = _verifier(emulator, clock, stale_grace=3600.0)
    assert verifier.verify(_token_at(emulator, clock)).email == CALLER
    emulator.inject("certs", **fault)

    clock.offset += emulator.cache_max_age + 10  # the cached keys have expired
    emulator.clock_offset = clock.offset
    try:
        attempts = emulator.counters["jwks"]
        started = time.monotonic()
        assert verifier.verify(_token_at(emulator, clock)).email == CALLER
        assert time.monotonic() - started < 0.5 + SLACK
        assert emulator.counters["jwks"] > attempts  # it did try to refresh
        assert verifier.keyset.stats.stale

        clock.offset += 3600 + 10  # beyond the grace
        emulator.clock_offset = clock.offset
        error = _bounded(0.5 + SLACK, lambda: verifier.verify(_token_at(emulator, clock)))
        assert isinstance(error, KeyFetchError)

        emulator.clear_faults()
        clock.offset += 6  # past the failure backoff
        assert verifier.verify(_token_at(emulator, clock)).email == CALLER
    finally:
        emulator.clock_offset = 0.0


def test_keys_rotated_mid_run_new_kid_accepted_after_one_refetch(emulator: Emulator) -> None:
    """After a key rotation the new kid is accepted after one refetch; the old kid still works."""
    clock = OffsetClock()
    verifier = _verifier(emulator, clock)
    old = _token_at(emulator, clock)
    assert verifier.verify(old).email == CALLER
    emulator.rotate_keys(keep_old=True)
    try:
        new = _token_at(emulator, clock, lifetime=3599)
        assert _jwks_calls(emulator, lambda: verifier.verify(new)) == 1
        assert verifier.verify(new).email == CALLER
        assert verifier.verify(old).email == CALLER
    finally:
        emulator.rotate_keys(keep_old=False)


def test_keys_rotated_under_concurrent_load_no_valid_token_is_refused(emulator: Emulator) -> None:
    """16 threads verify a just-rotated kid at once: one refetch, and all 16 are accepted.

    None may be refused while the kid-miss refetch is in flight.
    """
    clock = OffsetClock()
    verifier = _verifier(emulator, clock)
    assert verifier.verify(_token_at(emulator, clock)).email == CALLER
    emulator.rotate_keys(keep_old=True)
    try:
        new = _token_at(emulator, clock, lifetime=3599)
        outcomes: list[str | None] = []  # the caller's email, or the exception's name
        lock = threading.Lock()
        barrier = threading.Barrier(16)

        def verify_new() -> None:
            barrier.wait()
            try:
                outcome = verifier.verify(new).email
            except Exception as exc:  # recorded, so the assertion below names it
                outcome = type(exc).__name__
            with lock:
                outcomes.append(outcome)

        def run() -> None:
            threads = [threading.Thread(target=verify_new) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        assert _jwks_calls(emulator, run) == 1
        assert outcomes == [CALLER] * 16
    finally:
        emulator.rotate_keys(keep_old=False)


def test_unknown_kid_flood_costs_no_fetch_inside_the_cooldown(
    emulator: Emulator, forge: Forge
) -> None:
    """50 unknown kids cost one refetch per 30 s cooldown, and each is UnknownKeyError."""
    clock = OffsetClock()
    verifier = _verifier(emulator, clock)
    assert verifier.verify(_token_at(emulator, clock)).email == CALLER
    strangers = [forge.sign(forge.header(kid=f"random-{n}"), key=forge.attacker) for n in range(50)]

    def flood() -> None:
        for token in strangers:
            with pytest.raises(UnknownKeyError):
                verifier.verify(token)

    assert _jwks_calls(emulator, flood) == 1
    assert _jwks_calls(emulator, flood) == 0
    clock.offset += 31  # past the 30 s cooldown
    assert _jwks_calls(emulator, flood) == 1


def test_middlewares_fail_closed_with_503_then_recover(emulator: Emulator) -> None:
    """Under uvicorn and waitress: no keys means 503 + Retry-After; once keys come, 200."""
    from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
    from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

    clock = OffsetClock()
    verifier = _verifier(emulator, clock, failure_backoff=0.0)
    token = _token_at(emulator, clock)
    emulator.inject("certs", statuses=[500] * 10_000)
    asgi = ASGIMiddleware(soak.asgi_app, verifier=verifier)
    wsgi = WSGIMiddleware(soak.wsgi_app, verifier=verifier)
    with soak.serve_asgi(asgi) as asgi_url, soak.serve_wsgi(wsgi) as wsgi_url:
        for url in (asgi_url, wsgi_url):
            for _ in range(3):
                reply = fetch(url, token)
                assert reply.status == 503
                assert int(reply.headers["retry-after"]) >= 1
        emulator.clear_faults()
        assert {fetch(url, token).status for url in (asgi_url, wsgi_url)} == {200}
