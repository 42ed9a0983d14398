"""Token providers: what adapters and users ask for a token.

A provider wraps one source (see :mod:`s2sauth.tokens.sources`) with a cache
per audience (or scope set), refresh-ahead in the background, and single
flight across threads and asyncio/trio tasks, so a busy service asks its
metadata server about once an hour per audience::

    provider = IDTokenProvider()
    headers = {"Authorization": f"Bearer {provider.token('https://callee-xyz.a.run.app')}"}

After a 401 from the callee, drop the token that failed and ask again, once::

    provider.invalidate(audience, token)
    token = provider.token(audience)
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from .._check import non_empty_string, non_empty_strings
from .._errors import ConfigurationError
from ._cache import ProviderStats, TokenCache
from ._tokens import AccessTokenSource, IDTokenSource
from .sources import DefaultSource

__all__ = [
    "DEFAULT_SCOPES",
    "AccessTokenProvider",
    "IDTokenProvider",
    "ProviderStats",
    "default_access_provider",
    "default_provider",
]

#: The scopes an access token gets when none are named.
DEFAULT_SCOPES: tuple[str, ...] = ("https://www.googleapis.com/auth/cloud-platform",)


def _check_refresh_ahead(refresh_ahead: float) -> float:
    if not isinstance(refresh_ahead, (int, float)) or refresh_ahead < 0:
        raise ConfigurationError("refresh_ahead must be a non-negative number of seconds")
    return float(refresh_ahead)


def _audience(audience: str) -> str:
    return non_empty_string("audience", audience, example="https://callee-xyz.a.run.app")


def _scopes(scopes: Sequence[str] | str) -> tuple[str, ...]:
    return tuple(sorted(set(non_empty_strings("scopes", scopes))))


class IDTokenProvider:
    """ID tokens per audience: cached, refreshed ahead of expiry, fetched once.

    Use one per process (see :func:`default_provider`) or per service account.
    ``token()`` is safe to call from any number of threads, ``atoken()`` from
    any number of asyncio or trio tasks; when the token is missing or expired
    exactly one fetch runs and everyone gets its result. Inside the last
    ``refresh_ahead`` seconds the cached token is still returned while one
    background refresh runs; if that fails the cached token keeps being served
    (a WARNING is logged on logger ``"s2sauth"``) until it is about to expire.

    Args:
        source: where tokens come from; a :class:`~s2sauth.tokens.sources.DefaultSource`
            (metadata server, else Application Default Credentials) if omitted.
        refresh_ahead: seconds before expiry at which to refresh in the background.
        clock: the time now, in seconds since the epoch (tests inject their own).

    Raises:
        ConfigurationError: ``refresh_ahead`` is negative.
    """

    def __init__(
        self,
        source: IDTokenSource | None = None,
        *,
        refresh_ahead: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source: IDTokenSource = source if source is not None else DefaultSource()
        self._cache: TokenCache[str] = TokenCache(
            self.source.fetch_id_token,
            lambda audience: f"ID token for audience {audience!r}",
            refresh_ahead=_check_refresh_ahead(refresh_ahead),
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"IDTokenProvider(source={self.source!r})"

    def token(self, audience: str) -> str:
        """An ID token for ``audience``, from the cache when it is good.

        Args:
            audience: the callee's audience, e.g. its origin ``https://callee-xyz.a.run.app``.

        Raises:
            ConfigurationError: ``audience`` is not a non-empty string.
            TokenFetchError: no cached token is usable and none could be fetched.
        """
        return self._cache.get(_audience(audience))

    async def atoken(self, audience: str) -> str:
        """Like :meth:`token`, for asyncio and trio: the event loop never blocks.

        Raises:
            ConfigurationError: ``audience`` is not a non-empty string.
            TokenFetchError: no cached token is usable and none could be fetched.
        """
        return await self._cache.aget(_audience(audience))

    def token_future(self, audience: str) -> concurrent.futures.Future[str]:
        """Like :meth:`token`, for callback-driven code: a future, and this call never blocks.

        Use it where a thread must not wait, such as a gRPC metadata plugin. The
        future is already done when the cache has a good token; otherwise it is
        done when the fetch (started now in a worker thread, or already running
        for another caller) ends, with the token or the fetch's
        :class:`~s2sauth.TokenFetchError`. It cannot be cancelled.

        Raises:
            ConfigurationError: ``audience`` is not a non-empty string.
        """
        return self._cache.get_future(_audience(audience))

    def warm(self, audiences: Iterable[str]) -> None:
        """Fetch a token for each of ``audiences`` now, so that the first calls pay no fetch.

        Use it at startup for the services this one is known to call.

        Raises:
            ConfigurationError: an audience is not a non-empty string.
            TokenFetchError: a token could not be fetched.

        .. versionadded:: 0.2
        """
        for audience in audiences:
            self.token(audience)

    async def awarm(self, audiences: Iterable[str]) -> None:
        """Like :meth:`warm`, for asyncio and trio."""
        for audience in audiences:
            await self.atoken(audience)

    def invalidate(self, audience: str, token: str | None = None) -> None:
        """Drop the cached token for ``audience`` so the next call fetches a new one.

        Call it when the callee answered 401, then :meth:`token` once more.
        When ``token`` is given, the cached token is dropped only if it is still
        that one, so many requests failing with the same token cause one refetch.
        """
        self._cache.invalidate(_audience(audience), token)

    @property
    def stats(self) -> ProviderStats:
        """Counters so far: ``fetches``, ``cache_hits``, ``background_refreshes``, ``failures``."""
        return self._cache.stats


class AccessTokenProvider:
    """OAuth access tokens per scope set, for calling Google APIs; cached like ID tokens.

    The same cache, refresh-ahead and single flight as :class:`IDTokenProvider`;
    scopes are a set (order and duplicates do not matter).

    Args:
        source: where tokens come from; a :class:`~s2sauth.tokens.sources.DefaultSource`
            if omitted.
        refresh_ahead: seconds before expiry at which to refresh in the background.
        clock: the time now, in seconds since the epoch.

    Raises:
        ConfigurationError: ``refresh_ahead`` is negative.
    """

    def __init__(
        self,
        source: AccessTokenSource | None = None,
        *,
        refresh_ahead: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source: AccessTokenSource = source if source is not None else DefaultSource()
        self._cache: TokenCache[tuple[str, ...]] = TokenCache(
            self.source.fetch_access_token,
            lambda scopes: f"access token for scopes {', '.join(scopes)}",
            refresh_ahead=_check_refresh_ahead(refresh_ahead),
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"AccessTokenProvider(source={self.source!r})"

    def token(self, scopes: Sequence[str] | str = DEFAULT_SCOPES) -> str:
        """An access token for ``scopes``, from the cache when it is good.

        Raises:
            ConfigurationError: ``scopes`` is empty or holds a non-string.
            TokenFetchError: no cached token is usable and none could be fetched.
        """
        return self._cache.get(_scopes(scopes))

    async def atoken(self, scopes: Sequence[str] | str = DEFAULT_SCOPES) -> str:
        """Like :meth:`token`, for asyncio and trio: the event loop never blocks.

        Raises:
            ConfigurationError: ``scopes`` is empty or holds a non-string.
            TokenFetchError: no cached token is usable and none could be fetched.
        """
        return await self._cache.aget(_scopes(scopes))

    def invalidate(self, scopes: Sequence[str] | str, token: str | None = None) -> None:
        """Drop the cached token for ``scopes`` (only if it is still ``token``, when given)."""
        self._cache.invalidate(_scopes(scopes), token)

    @property
    def stats(self) -> ProviderStats:
        """Counters so far: ``fetches``, ``cache_hits``, ``background_refreshes``, ``failures``."""
        return self._cache.stats


_defaults_lock = threading.Lock()
_default_source: DefaultSource | None = None
_default_provider: IDTokenProvider | None = None
_default_access_provider: AccessTokenProvider | None = None


def _shared_source() -> DefaultSource:
    global _default_source
    if _default_source is None:
        _default_source = DefaultSource()
    return _default_source


def default_provider() -> IDTokenProvider:
    """The process-wide :class:`IDTokenProvider`, created on first use.

    Adapters use it when given no provider, so every client in the process
    shares one token cache. Thread-safe.
    """
    global _default_provider
    with _defaults_lock:
        if _default_provider is None:
            _default_provider = IDTokenProvider(_shared_source())
        return _default_provider


def default_access_provider() -> AccessTokenProvider:
    """The process-wide :class:`AccessTokenProvider`, created on first use; thread-safe.

    It shares its :class:`~s2sauth.tokens.sources.DefaultSource` with
    :func:`default_provider`, so the metadata server is probed once per process.
    """
    global _default_access_provider
    with _defaults_lock:
        if _default_access_provider is None:
            _default_access_provider = AccessTokenProvider(_shared_source())
        return _default_access_provider
