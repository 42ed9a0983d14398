"""The token cache both providers share: refresh-ahead, single flight, counters.

Each cached token is in one of three states, by the injected clock:

* FRESH (``now < refresh_at``): served from the cache.
* STALE (``refresh_at <= now < usable_until``): still served, and exactly one
  background refresh starts. If that refresh fails the cached token keeps
  being served (with a WARNING) until it stops being usable.
* EXPIRED, or missing: fetched in the foreground, exactly once however many
  threads and tasks ask together (:class:`~s2sauth._flight.SingleFlight`),
  with the cache checked again inside the flight.

``usable_until`` stops short of the real expiry by a safety margin, so a token
is never sent that could expire while the request is in flight.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields, replace
from typing import Generic, Protocol, TypeVar

from .. import _otel
from .._flight import TOKENS, SingleFlight

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger("s2sauth")

#: Seconds before its expiry at which a cached token is no longer handed out.
EXPIRY_MARGIN = 10.0
#: Least seconds between two background refreshes of one token after one failed.
RETRY_SPACING = 5.0

# Tokens for this many audiences (or scope sets) are kept; callers that derive the
# audience from each request's URL must not be able to grow the cache without bound.
_MAX_ENTRIES = 1024


class _Token(Protocol):
    @property
    def value(self) -> str: ...

    @property
    def expires_at(self) -> float: ...


@dataclass(frozen=True)
class ProviderStats:
    """A snapshot of a provider's counters (``dataclasses.asdict`` gives a dict).

    Attributes:
        fetches: calls to the source (foreground and background).
        cache_hits: tokens served from the cache.
        background_refreshes: refresh-ahead fetches started in the background.
        failures: source calls that raised.
    """

    fetches: int = 0
    cache_hits: int = 0
    background_refreshes: int = 0
    failures: int = 0


@dataclass(frozen=True)
class _Entry:
    value: str = field(repr=False)
    expires_at: float
    refresh_at: float
    usable_until: float


class TokenCache(Generic[K]):
    """Cached tokens per key, fetched through ``fetch``; the engine of both providers.

    Args:
        fetch: mints a new token for a key (the source's fetch method).
        describe: names a key for log lines, e.g. ``"ID token for 'https://x'"``.
        refresh_ahead: seconds before expiry at which a background refresh starts.
        clock: the time now, in seconds since the epoch.
    """

    def __init__(
        self,
        fetch: Callable[[K], _Token],
        describe: Callable[[K], str],
        *,
        refresh_ahead: float,
        clock: Callable[[], float],
    ) -> None:
        self._source_fetch = fetch
        self._describe = describe
        self._refresh_ahead = refresh_ahead
        self._clock = clock
        self._lock = threading.Lock()
        # The least recently used key goes first past _MAX_ENTRIES: an OrderedDict under
        # our lock, the same LRU as the verifier's token cache (see verify/verifier.py).
        self._entries: OrderedDict[K, _Entry] = OrderedDict()
        self._flight: SingleFlight[K, _Entry] = SingleFlight(pool_name=TOKENS)
        self._counts = {counter.name: 0 for counter in fields(ProviderStats)}

    @property
    def stats(self) -> ProviderStats:
        """A snapshot of the counters."""
        with self._lock:
            return ProviderStats(**self._counts)

    def get(self, key: K) -> str:
        """The token for ``key``: cached, or fetched on this thread (single flight)."""
        value = self._cached(key)
        if value is not None:
            return value
        return self._flight.do(key, lambda: self._fetch_unless_usable(key)).value

    async def aget(self, key: K) -> str:
        """Like :meth:`get`; a fetch runs in a worker thread, never on the event loop."""
        value = self._cached(key)
        if value is not None:
            return value
        entry = await self._flight.ado(key, lambda: self._fetch_unless_usable(key))
        return entry.value

    def get_future(self, key: K) -> concurrent.futures.Future[str]:
        """Like :meth:`get`, never blocking: done now on a cache hit, else when the fetch ends."""
        result: concurrent.futures.Future[str] = concurrent.futures.Future()
        result.set_running_or_notify_cancel()  # no holder can cancel it under the fetch
        value = self._cached(key)
        if value is not None:
            result.set_result(value)
            return result
        flight = self._flight.submit(key, lambda: self._fetch_unless_usable(key))
        flight.add_done_callback(functools.partial(_resolve, result))
        return result

    def invalidate(self, key: K, token: str | None = None) -> None:
        """Forget the token for ``key``, but only if it is still ``token`` (when given)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (token is None or entry.value == token):
                del self._entries[key]
                dropped = True
            else:
                dropped = False
        if dropped:
            logger.debug("s2sauth: dropped the cached %s", self._describe(key))

    def _cached(self, key: K) -> str | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now >= entry.usable_until:
                return None
            self._entries.move_to_end(key)
            self._counts["cache_hits"] += 1
        _otel.cache_hit()
        if now >= entry.refresh_at and self._flight.start(key, lambda: self._refresh(key)):
            with self._lock:
                self._counts["background_refreshes"] += 1
            logger.debug(
                "s2sauth: %s expires in %.0fs; refreshing in the background",
                self._describe(key),
                entry.expires_at - now,
            )
        elif logger.isEnabledFor(logging.DEBUG):  # the hot path: build no message unread
            logger.debug("s2sauth: %s served from the cache", self._describe(key))
        return entry.value

    def _usable(self, key: K, until: Callable[[_Entry], float]) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and self._clock() < until(entry):
            return entry
        return None

    def _fetch_unless_usable(self, key: K) -> _Entry:
        # Double-checked: the flight we waited to own may have been preceded by
        # another that already stored a good token.
        entry = self._usable(key, lambda e: e.usable_until)
        return entry if entry is not None else self._fetch(key)

    def _refresh(self, key: K) -> _Entry:
        entry = self._usable(key, lambda e: e.refresh_at)
        if entry is not None:
            return entry
        try:
            return self._fetch(key)
        except Exception as exc:
            self._hold_off(key, entry_was=self._usable(key, lambda e: e.usable_until))
            logger.warning(
                "s2sauth: background refresh of the %s failed; the cached token is served "
                "until it expires: %s",
                self._describe(key),
                exc,
            )
            raise

    def _hold_off(self, key: K, entry_was: _Entry | None) -> None:
        # A failed refresh is not tried again on the next request: the next background
        # attempt waits half the time the cached token has left (the metadata server is
        # never called per request, AIP-4110), at least RETRY_SPACING seconds.
        if entry_was is None:
            return
        now = self._clock()
        wait = max(RETRY_SPACING, (entry_was.usable_until - now) / 2)
        later = replace(entry_was, refresh_at=now + wait)
        with self._lock:
            if self._entries.get(key) is entry_was:
                self._entries[key] = later

    @_otel.traced("s2sauth.token.fetch", "token")
    def _fetch(self, key: K) -> _Entry:
        with self._lock:
            self._counts["fetches"] += 1
        try:
            token = self._source_fetch(key)
        except BaseException:
            with self._lock:
                self._counts["failures"] += 1
            raise
        now = self._clock()
        lifetime = max(0.0, token.expires_at - now)
        # Short-lived tokens refresh after half their life at the latest, so a
        # refresh window longer than the token's life cannot refresh on every call.
        entry = _Entry(
            value=token.value,
            expires_at=token.expires_at,
            refresh_at=max(now + lifetime / 2, token.expires_at - self._refresh_ahead),
            usable_until=token.expires_at - min(EXPIRY_MARGIN, lifetime / 2),
        )
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            if len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)
        if now >= entry.usable_until:
            logger.warning(
                "s2sauth: the new %s is already expired by the local clock (exp %.0f, now "
                "%.0f); is the system clock right?",
                self._describe(key),
                token.expires_at,
                now,
            )
        else:
            logger.debug(
                "s2sauth: fetched a new %s, valid for %.0fs", self._describe(key), lifetime
            )
        return entry


def _resolve(
    result: concurrent.futures.Future[str], flight: concurrent.futures.Future[_Entry]
) -> None:
    exc = flight.exception()
    if exc is None:
        result.set_result(flight.result().value)
    else:
        result.set_exception(exc)
