"""ID tokens (and Google API access tokens) for httpx, sync and async.

::

    from s2sauth.httpx import id_token_async_client

    async with id_token_async_client() as client:   # audience: each URL's origin
        await client.get("https://callee-xyz.a.run.app/orders")

Tokens come from a shared :class:`~s2sauth.tokens.provider.IDTokenProvider`:
the metadata server on Google Cloud, Application Default Credentials elsewhere.

No token leaves its origin. httpx follows redirects inside the client, out of
the auth flow's sight, and drops only ``Authorization`` on the way; so
:class:`IDTokenAuth` also has a request event hook that drops both token
headers on a redirect to another origin (and gives a fresh token to an origin
listed in ``targets``). The clients from :func:`id_token_client` and
:func:`id_token_async_client` install it; on a client you build yourself with
``follow_redirects=True``, add ``event_hooks={"request": [auth.redirect_hook]}``
(``auth.aredirect_hook`` for an ``AsyncClient``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator, Hashable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("s2sauth.httpx needs httpx: pip install 's2sauth[httpx]'") from exc

from ._outbound import (
    X_SERVERLESS_AUTHORIZATION,
    AccessTokenRules,
    Audience,
    HeaderMode,
    IDTokenRules,
    Provider,
    origin,
)
from ._outbound import Rules as _Rules
from .tokens.provider import DEFAULT_SCOPES, default_access_provider, default_provider

__all__ = ["AccessTokenAuth", "IDTokenAuth", "id_token_async_client", "id_token_client"]

K = TypeVar("K", bound=Hashable)
logger = logging.getLogger("s2sauth")
# Request extension: the httpx.URL the request's token headers were decided for. httpx
# copies extensions into each redirect request, so a hop can tell where it came from.
_ISSUED_FOR = "s2sauth.issued_for"


class _BearerAuth(httpx.Auth, Generic[K]):
    def __init__(self, rules: _Rules[K], provider: Provider[K]) -> None:
        self._rules = rules
        self._provider = provider

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if (key := self._begin(request, first=True)) is not None:
            self._rules.attach(request.headers, self._provider.token(key))
        response = yield request
        if (failed := self._after(response)) is not None:
            self._provider.invalidate(*failed)
            # Only the hop the 401 answered goes again: the hops before it (a POST
            # answered with a redirect, say) were done already.
            retry = response.request
            if (key := self._begin(retry, first=False)) is not None:
                self._rules.attach(retry.headers, self._provider.token(key))
            yield retry

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if (key := self._begin(request, first=True)) is not None:
            self._rules.attach(request.headers, await self._provider.atoken(key))
        response = yield request
        if (failed := self._after(response)) is not None:
            self._provider.invalidate(*failed)
            retry = response.request  # as in sync_auth_flow: the rejected hop only
            if (key := self._begin(retry, first=False)) is not None:
                self._rules.attach(retry.headers, await self._provider.atoken(key))
            yield retry

    def redirect_hook(self, request: httpx.Request) -> None:
        """Request event hook for a ``Client`` that follows redirects: guard each hop."""
        if (key := self._hop(request)) is not None:
            self._rules.attach(request.headers, self._provider.token(key))

    async def aredirect_hook(self, request: httpx.Request) -> None:
        """Request event hook for an ``AsyncClient`` that follows redirects: guard each hop."""
        if (key := self._hop(request)) is not None:
            self._rules.attach(request.headers, await self._provider.atoken(key))

    def _begin(self, request: httpx.Request, *, first: bool) -> K | None:
        url, previous = str(request.url), request.extensions.get(_ISSUED_FOR)
        request.extensions[_ISSUED_FOR] = request.url
        if first and previous is not None and str(previous) != url:
            # A redirect sent on by hand: client.send(response.next_request).
            return self._rules.follow(str(previous), url, request.headers)
        return self._rules.key_for(url)

    def _hop(self, request: httpx.Request) -> K | None:
        previous = request.extensions.get(_ISSUED_FOR)
        if previous is None or previous is request.url:  # not a redirect: the flow just decided
            return None
        request.extensions[_ISSUED_FOR] = request.url
        return self._rules.follow(str(previous), str(request.url), request.headers)

    def _after(self, response: httpx.Response) -> tuple[K, str] | None:
        # Says which (key, token) a 401 rejected, when one retry of the hop it answered is due.
        if response.history and any(_leaked(hop.request) for hop in (*response.history, response)):
            logger.warning(
                "X-Serverless-Authorization followed a redirect to another origin: use "
                "id_token_client() or add event_hooks={'request': [auth.redirect_hook]}"
            )
        final = response.request
        if response.status_code != 401 or not isinstance(final.stream, httpx.ByteStream):
            return None  # not rejected, or a streamed body that cannot be sent twice
        rejected = self._rules.rejected(401, str(final.url), final.headers)
        if rejected is not None:
            logger.debug("%s answered 401: one retry with a new token", origin(str(final.url)))
        return rejected


def _leaked(request: httpx.Request) -> bool:
    issued_for = request.extensions.get(_ISSUED_FOR)
    if issued_for is None or X_SERVERLESS_AUTHORIZATION not in request.headers:
        return False
    return origin(str(issued_for)) != origin(str(request.url))


class IDTokenAuth(_BearerAuth[str]):
    """Attach an ID token to each request: ``httpx.Client(auth=IDTokenAuth())``.

    Works with ``Client`` and ``AsyncClient`` (the async flow never blocks the
    event loop). On a 401 the token is dropped from the cache and the request is
    sent once more with a new one, when its body is in memory.

    Args:
        audience: ``None`` for each request URL's origin (what Cloud Run accepts), a
            string, or a callable given the URL.
        provider: an :class:`~s2sauth.tokens.provider.IDTokenProvider`; the shared
            :func:`~s2sauth.tokens.provider.default_provider` by default.
        header: ``"authorization"``, ``"x-serverless-authorization"`` or ``"both"``.
        targets: origins (``"https://callee-xyz.a.run.app"``) or URL prefixes
            (``"https://api.example.com/v1/"``) that get a token; other requests go
            without one. ``None``: every request gets one.

    Raises:
        ConfigurationError: a bad ``audience``, ``header`` or ``targets``.
        TokenFetchError: (when sending) no token could be had; nothing is sent.
    """

    def __init__(
        self,
        audience: Audience = None,
        *,
        provider: Provider[str] | None = None,
        header: HeaderMode = "authorization",
        targets: Iterable[str] | None = None,
    ) -> None:
        rules = IDTokenRules(audience, header=header, targets=targets)
        super().__init__(rules, provider if provider is not None else default_provider())


class AccessTokenAuth(_BearerAuth[tuple[str, ...]]):
    """Attach an OAuth access token, for calling Google APIs with the service's identity.

    Args:
        scopes: the OAuth scopes the token is for.
        provider: an :class:`~s2sauth.tokens.provider.AccessTokenProvider`; the shared
            :func:`~s2sauth.tokens.provider.default_access_provider` by default.

    Raises:
        ConfigurationError: ``scopes`` is empty.
        TokenFetchError: (when sending) no token could be had; nothing is sent.
    """

    def __init__(
        self,
        scopes: Sequence[str] | str = DEFAULT_SCOPES,
        *,
        provider: Provider[tuple[str, ...]] | None = None,
    ) -> None:
        rules = AccessTokenRules(scopes)
        super().__init__(rules, provider if provider is not None else default_access_provider())


def id_token_client(
    audience: Audience = None,
    *,
    header: HeaderMode = "authorization",
    targets: Iterable[str] | None = None,
    provider: Provider[str] | None = None,
    **client_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` that sends ID tokens, with the redirect hook installed.

    Takes :class:`IDTokenAuth`'s arguments; the rest go to ``httpx.Client``.

    Raises:
        ConfigurationError: as :class:`IDTokenAuth`.
    """
    auth = IDTokenAuth(audience, provider=provider, header=header, targets=targets)
    hooks = _with_hook(client_kwargs.pop("event_hooks", None), auth.redirect_hook)
    return httpx.Client(auth=auth, event_hooks=hooks, **client_kwargs)


def id_token_async_client(
    audience: Audience = None,
    *,
    header: HeaderMode = "authorization",
    targets: Iterable[str] | None = None,
    provider: Provider[str] | None = None,
    **client_kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that sends ID tokens, with the redirect hook installed.

    Takes :class:`IDTokenAuth`'s arguments; the rest go to ``httpx.AsyncClient``.

    Raises:
        ConfigurationError: as :class:`IDTokenAuth`.
    """
    auth = IDTokenAuth(audience, provider=provider, header=header, targets=targets)
    hooks = _with_hook(client_kwargs.pop("event_hooks", None), auth.aredirect_hook)
    return httpx.AsyncClient(auth=auth, event_hooks=hooks, **client_kwargs)


def _with_hook(event_hooks: Mapping[str, list[Any]] | None, hook: Any) -> dict[str, list[Any]]:
    # Ours runs last, so it sees the headers the user's own hooks left.
    hooks = dict(event_hooks or {})
    hooks["request"] = [*hooks.get("request", ()), hook]
    return hooks
