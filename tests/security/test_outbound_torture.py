"""Outbound torture: threads and tasks hammer IDTokenProvider as tokens expire and refreshes fail.

Two invariants, checked on every single call:

* never an expired token: each returned token's own ``exp`` lies after the
  injected clock's reading taken before the call;
* never more than one fetch in flight per (account, audience): the source
  counts its concurrent entries per key under a lock and records the maximum.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from attack_kit import AUDIENCE, CALLER, STRANGER, b64url, unb64url

from s2sauth._errors import TokenFetchError
from s2sauth._http import HTTPTransport
from s2sauth.emulator import Emulator
from s2sauth.tokens._tokens import IDToken
from s2sauth.tokens.provider import IDTokenProvider

pytestmark = pytest.mark.anyio

LIFETIME = 3600
AUDIENCES = tuple(f"https://callee-{n}.example.run.app" for n in range(3))
ACCOUNTS = (CALLER, STRANGER)
THREADS = 32
TASKS = 200


class TickingClock:
    """A clock that moves ``step`` seconds forward on every reading, from any thread."""

    def __init__(self, start: float, step: float) -> None:
        self._now = start
        self._step = step
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._now += self._step
            return self._now

    def advance(self, seconds: float) -> None:
        """Jump ahead."""
        with self._lock:
            self._now += seconds


class Tracker:
    """Counts fetches in flight per (account, audience), and their maximum, across sources."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: Counter[tuple[str, str]] = Counter()
        self.max_active: Counter[tuple[str, str]] = Counter()
        self.fetches: Counter[tuple[str, str]] = Counter()
        self.refresh_failures = 0
        self.other_failures = 0


class FlakySource:
    """An ID token source for one account that fails on purpose.

    The first refresh-ahead attempt of every token it issued fails (the cached
    token is still good then), and so does every ``fail_every``-th fetch. Each
    fetch holds the key "in flight" for a moment, so overlapping fetches would be
    seen.
    """

    def __init__(
        self, account: str, clock: Callable[[], float], tracker: Tracker, *, fail_every: int = 0
    ) -> None:
        self.account = account
        self.clock = clock
        self.tracker = tracker
        self.fail_every = fail_every
        self.failing = False
        self._issued: dict[str, tuple[float, bool]] = {}  # audience -> (exp, refresh failed yet)
        self._serial = itertools.count()

    def fetch_id_token(self, audience: str) -> IDToken:
        """Mint a token for ``audience`` valid for an hour by the injected clock, or fail."""
        key = (self.account, audience)
        tracker = self.tracker
        with tracker.lock:
            tracker.active[key] += 1
            tracker.max_active[key] = max(tracker.max_active[key], tracker.active[key])
            tracker.fetches[key] += 1
            number = tracker.fetches[key]
        now = self.clock()  # read on entry: under load this thread may run late
        try:
            time.sleep(0.001)  # widen the window in which a second fetch would overlap
            exp, refresh_failed = self._issued.get(audience, (0.0, True))
            if now < exp and not refresh_failed:
                self._issued[audience] = (exp, True)
                with tracker.lock:
                    tracker.refresh_failures += 1
                raise TokenFetchError("injected: background refresh fails", retryable=True)
            if self.failing or (self.fail_every and number % self.fail_every == 0):
                with tracker.lock:
                    tracker.other_failures += 1
                raise TokenFetchError("injected: the metadata server is down", retryable=True)
            iat = int(now)
            claims = {"aud": audience, "email": self.account, "iat": iat, "exp": iat + LIFETIME}
            claims["jti"] = next(self._serial)
            header = b64url(b'{"alg":"RS256","typ":"JWT"}')
            value = f"{header}.{b64url(json.dumps(claims).encode())}.{b64url(b'not-checked')}"
            self._issued[audience] = (float(iat + LIFETIME), False)
            return IDToken(value=value, expires_at=float(iat + LIFETIME))
        finally:
            with tracker.lock:
                tracker.active[key] -= 1


def exp_of(token: str) -> int:
    """The ``exp`` claim of a compact JWT."""
    exp: int = json.loads(unb64url(token.split(".")[1]))["exp"]
    return exp


class Ledger:
    """What the hammering saw: tokens served, expired ones, fetch errors, anything else."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served = 0
        self.expired: list[str] = []
        self.fetch_errors = 0
        self.unexpected: list[BaseException] = []

    def check(self, clock: Callable[[], float], call: Callable[[], str]) -> None:
        """Make one call and record whether its token was expired before it was asked for."""
        before = clock()
        try:
            token = call()
        except TokenFetchError:
            with self.lock:
                self.fetch_errors += 1
            return
        except Exception as exc:  # anything but a fetch error is a bug
            with self.lock:
                self.unexpected.append(exc)
            return
        exp = exp_of(token)
        with self.lock:
            self.served += 1
            if exp <= before:
                self.expired.append(f"exp {exp} <= clock {before:.1f}")

    async def acheck(self, clock: Callable[[], float], call: Callable[[], Any]) -> None:
        """:meth:`check` for a coroutine call."""
        before = clock()
        try:
            token = await call()
        except TokenFetchError:
            with self.lock:
                self.fetch_errors += 1
            return
        except Exception as exc:
            with self.lock:
                self.unexpected.append(exc)
            return
        exp = exp_of(token)
        with self.lock:
            self.served += 1
            if exp <= before:
                self.expired.append(f"exp {exp} <= clock {before:.1f}")


def hammer_threads(
    providers: list[IDTokenProvider],
    clock: Callable[[], float],
    ledger: Ledger,
    calls: int,
    audiences: tuple[str, ...] = AUDIENCES,
) -> list[threading.Thread]:
    """Start :data:`THREADS` threads, each making ``calls`` calls over providers and audiences."""

    def work(n: int) -> None:
        for i in range(calls):
            provider = providers[(n + i) % len(providers)]
            audience = audiences[(n * 7 + i) % len(audiences)]
            ledger.check(clock, lambda: provider.token(audience))  # noqa: B023

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads: list[threading.Thread]) -> None:
    """Wait for every thread."""
    for thread in threads:
        thread.join()


async def hammer_tasks(
    providers: list[IDTokenProvider],
    clock: Callable[[], float],
    ledger: Ledger,
    calls: int,
    audiences: tuple[str, ...] = AUDIENCES,
) -> None:
    """Run :data:`TASKS` tasks, each making ``calls`` async calls over providers and audiences."""

    async def work(n: int) -> None:
        for i in range(calls):
            provider = providers[(n + i) % len(providers)]
            audience = audiences[(n * 5 + i) % len(audiences)]
            await ledger.acheck(clock, lambda: provider.atoken(audience))  # noqa: B023
            await anyio.sleep(0)

    async with anyio.create_task_group() as group:
        for n in range(TASKS):
            group.start_soon(work, n)


async def test_threads_and_tasks_never_get_an_expired_token_or_overlapping_fetches() -> None:
    """32 threads and 200 tasks: never an expired token, never two fetches for one key.

    Over 2 accounts x 3 audiences, while the clock runs through about three token
    lifetimes and refreshes (and some foreground fetches) fail.
    """
    clock = TickingClock(start=1_700_000_000.0, step=0.25)
    tracker = Tracker()
    sources = [FlakySource(account, clock, tracker, fail_every=4) for account in ACCOUNTS]
    # A long refresh-ahead window, so that refreshes start while the token is still good
    # however late the background thread gets to run on a busy interpreter.
    providers = [IDTokenProvider(source, clock=clock, refresh_ahead=1800) for source in sources]
    ledger = Ledger()

    threads = hammer_threads(providers, clock, ledger, calls=400)
    await hammer_tasks(providers, clock, ledger, calls=40)
    await anyio.to_thread.run_sync(join_all, threads)

    assert ledger.unexpected == []
    assert ledger.expired == []
    assert max(tracker.max_active.values()) == 1, dict(tracker.max_active)
    # The run really did cross token lifetimes and see refreshes fail.
    assert min(tracker.fetches.values()) >= 3, dict(tracker.fetches)
    assert tracker.refresh_failures >= 1
    assert ledger.served > ledger.fetch_errors
    assert sum(p.stats.background_refreshes for p in providers) >= 1


async def test_failed_refresh_keeps_serving_then_fails_closed_at_expiry() -> None:
    """Source down while refreshing ahead: cached token served, never past expiry, then renewed.

    In the refresh window everyone gets the cached token; past its usable expiry
    everyone gets TokenFetchError, never the old token; after recovery, a new one.
    """
    clock = TickingClock(start=1_700_000_000.0, step=0.0)
    tracker = Tracker()
    source = FlakySource(CALLER, clock, tracker)
    provider = IDTokenProvider(source, clock=clock)
    first = provider.token(AUDIENCE)

    source.failing = True
    clock.advance(LIFETIME - 200)  # inside the 300 s refresh-ahead window
    ledger = Ledger()
    threads = hammer_threads([provider], clock, ledger, calls=20, audiences=(AUDIENCE,))
    await hammer_tasks([provider], clock, ledger, calls=2, audiences=(AUDIENCE,))
    await anyio.to_thread.run_sync(join_all, threads)
    assert (ledger.served, ledger.fetch_errors, ledger.unexpected) == (
        THREADS * 20 + TASKS * 2,
        0,
        [],
    )
    assert provider.token(AUDIENCE) == first
    assert provider.stats.failures >= 1

    clock.advance(200)  # now at the token's exp: it must never be handed out again
    with pytest.raises(TokenFetchError):
        provider.token(AUDIENCE)
    with pytest.raises(TokenFetchError):
        await provider.atoken(AUDIENCE)

    source.failing = False
    renewed = provider.token(AUDIENCE)
    assert renewed != first
    assert exp_of(renewed) > clock()
    assert max(tracker.max_active.values()) == 1


async def test_cold_start_over_the_emulator_is_one_fetch_per_audience(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """Over the emulator, 32 threads and 200 tasks asking at once cost one fetch per audience."""
    from s2sauth.tokens.sources import MetadataServerSource

    provider = IDTokenProvider(
        MetadataServerSource(CALLER, host=emulator.host, transport=transport)
    )
    before = emulator.counters["identity"]
    ledger = Ledger()
    threads = hammer_threads([provider], time.time, ledger, calls=10)
    await hammer_tasks([provider], time.time, ledger, calls=3)
    await anyio.to_thread.run_sync(join_all, threads)
    assert (ledger.fetch_errors, ledger.unexpected, ledger.expired) == (0, [], [])
    assert emulator.counters["identity"] - before == len(AUDIENCES)
