"""ID tokens (and Google API access tokens) for httpx, sync and async.

::

    from s2sauth.httpx import id_token_async_client

    async with id_token_async_client() as client:   # audience: each URL's origin
        await client.get("https://callee-xyz.a.run.app/orders")

Tokens come from a shared :class:`~s2sauth.tokens.provider.IDTokenProvider`:
the metadata server on Google Cloud, Application Default Credentials elsewhere.

No token goes where it was not issued for, on any hop. httpx follows redirects
inside the client, out of an auth flow's sight, copying every header but
``Authorization`` to the next hop. So:

* :class:`Client` and :class:`AsyncClient` (which :func:`id_token_client` and
  :func:`id_token_async_client` build) follow redirects one hop at a time,
  each through the auth flow, which judges the hop: the token headers stay on
  the same origin and audience, are dropped elsewhere, and a hop to another
  origin listed in ``targets`` gets a token of its own. Any header mode, any
  ``targets``.
* On a client you build yourself (``httpx.Client(auth=IDTokenAuth())``) the
  auth attaches a token only where httpx's own rule keeps it in place: in
  ``Authorization`` alone, with the same token good for the whole origin, and no
  ``http://host`` to ``https://host`` upgrade in reach. Any other configuration
  (``X-Serverless-Authorization``, URL-prefix ``targets``, an audience per path)
  raises :class:`~s2sauth.ConfigurationError` at first use, before anything is
  sent: use :class:`Client`/:class:`AsyncClient` for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator, Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar

try:
    import httpx
    from httpx import USE_CLIENT_DEFAULT
    from httpx._client import UseClientDefault  # the type of USE_CLIENT_DEFAULT
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("s2sauth.httpx needs httpx: pip install 's2sauth[httpx]'") from exc

from ._errors import ConfigurationError
from ._outbound import AccessTokenRules, Audience, HeaderMode, IDTokenRules, Provider, origin
from ._outbound import Rules as _Rules
from .tokens.provider import DEFAULT_SCOPES, default_access_provider, default_provider

__all__ = [
    "AccessTokenAuth",
    "AsyncClient",
    "Client",
    "IDTokenAuth",
    "id_token_async_client",
    "id_token_client",
]

K = TypeVar("K", bound=Hashable)
logger = logging.getLogger("s2sauth")
# Request extension: the httpx.URL the request's token headers were decided for. httpx
# copies extensions into each redirect request, so a hop can tell where it came from.
_ISSUED_FOR = "s2sauth.issued_for"
# Request extension set by Client/AsyncClient: every hop of this request passes
# through the auth flow, which judges it.
_HOPS_JUDGED = "s2sauth.hops_judged"


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

    def _begin(self, request: httpx.Request, *, first: bool) -> K | None:
        url, previous = str(request.url), request.extensions.get(_ISSUED_FOR)
        request.extensions[_ISSUED_FOR] = request.url
        if first and previous is not None and str(previous) != url:
            # A hop of a redirect, sent on by Client/AsyncClient or by hand
            # (client.send(response.next_request)): judged here.
            return self._rules.follow(str(previous), url, request.headers)
        key = self._rules.key_for(url)
        if (
            key is not None
            and not request.extensions.get(_HOPS_JUDGED)
            and not self._rules.safe_unjudged(url)
        ):
            raise ConfigurationError(
                f"{type(self).__name__} with this configuration needs a client that lets it "
                "judge every redirect hop: httpx.Client follows redirects out of its sight and "
                "copies X-Serverless-Authorization (and, on the same origin, Authorization) to "
                "each hop. Use s2sauth.httpx.Client / AsyncClient (or id_token_client / "
                "id_token_async_client) in place of httpx.Client; nothing was sent"
            )
        return key

    def _after(self, response: httpx.Response) -> tuple[K, str] | None:
        # Says which (key, token) a 401 rejected, when one retry of the hop it answered is due.
        final = response.request
        if response.status_code != 401 or not isinstance(final.stream, httpx.ByteStream):
            return None  # not rejected, or a streamed body that cannot be sent twice
        rejected = self._rules.rejected(401, str(final.url), final.headers)
        if rejected is not None:
            logger.debug("%s answered 401: one retry with a new token", origin(str(final.url)))
        return rejected


class IDTokenAuth(_BearerAuth[str]):
    """Attach an ID token to each request: ``httpx.Client(auth=IDTokenAuth())``.

    Works with ``Client`` and ``AsyncClient`` (the async flow never blocks the
    event loop). On a 401 the token is dropped from the cache and the request is
    sent once more with a new one, when its body is in memory. With a header mode
    other than ``"authorization"``, URL-prefix ``targets`` or an audience
    callable, use it on :class:`Client`/:class:`AsyncClient`, which let it judge
    every redirect hop (see the module docstring).

    Args:
        audience: ``None`` for each request URL's origin (what Cloud Run accepts), a
            string, or a callable given the URL. A fixed URL audience sends its token
            only to its own origin unless ``targets`` says otherwise.
        provider: an :class:`~s2sauth.tokens.provider.IDTokenProvider`; the shared
            :func:`~s2sauth.tokens.provider.default_provider` by default.
        header: ``"authorization"``, ``"x-serverless-authorization"`` or ``"both"``.
        targets: origins (``"https://callee-xyz.a.run.app"``) or URL prefixes
            (``"https://api.example.com/v1/"``) that get a token; other requests go
            without one. ``None``: every request gets one (the audience's origin, for
            a fixed audience).

    Raises:
        ConfigurationError: a bad ``audience``, ``header`` or ``targets``, or a custom
            (non-URL) audience without ``targets``; at first use, a configuration
            that a plain ``httpx`` client cannot keep in place (nothing is sent).
        TokenFetchError: (when sending) no token could be had; nothing is sent.

    .. versionchanged:: 0.2
       A fixed audience implies its ``targets``; ``redirect_hook`` is gone: the
       clients of this module judge every hop, and a plain client fails closed.
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

    An access token is good for every Google API the account may use, so it goes
    only to ``https://*.googleapis.com`` unless ``targets`` names other places.

    Args:
        scopes: the OAuth scopes the token is for.
        provider: an :class:`~s2sauth.tokens.provider.AccessTokenProvider`; the shared
            :func:`~s2sauth.tokens.provider.default_access_provider` by default.
        targets: origins, URL prefixes or ``"https://*.domain"`` patterns that get the
            token (for a private Google API endpoint, say).

    Raises:
        ConfigurationError: ``scopes`` is empty, or ``targets`` is malformed.
        TokenFetchError: (when sending) no token could be had; nothing is sent.
    """

    def __init__(
        self,
        scopes: Sequence[str] | str = DEFAULT_SCOPES,
        *,
        provider: Provider[tuple[str, ...]] | None = None,
        targets: Iterable[str] | None = None,
    ) -> None:
        rules = AccessTokenRules(scopes, targets=targets)
        super().__init__(rules, provider if provider is not None else default_access_provider())


class Client(httpx.Client):
    """An ``httpx.Client`` that follows redirects one hop at a time, each through its auth.

    A drop-in for ``httpx.Client``: with :class:`IDTokenAuth` or
    :class:`AccessTokenAuth` as its ``auth``, every hop of a redirect is judged
    before it is sent, in every header mode and with any ``targets``.
    ``history``, ``max_redirects`` and ``follow_redirects`` (per client or per
    request) behave as in httpx.
    """

    def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """Send ``request``, following redirects through the auth flow when asked to."""
        follow = _judged(request, follow_redirects, self.follow_redirects)
        history: list[httpx.Response] = []
        while True:
            response = super().send(request, stream=stream, auth=auth, follow_redirects=False)
            hop = _next_hop(response, history, self.max_redirects) if follow else None
            if hop is None:
                response.history = history
                return response
            response.read()
            request = hop


class AsyncClient(httpx.AsyncClient):
    """:class:`Client` for asyncio and trio: an ``httpx.AsyncClient`` judging every hop."""

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = USE_CLIENT_DEFAULT,
        follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """Send ``request``, following redirects through the auth flow when asked to."""
        follow = _judged(request, follow_redirects, self.follow_redirects)
        history: list[httpx.Response] = []
        while True:
            response = await super().send(request, stream=stream, auth=auth, follow_redirects=False)
            hop = _next_hop(response, history, self.max_redirects) if follow else None
            if hop is None:
                response.history = history
                return response
            await response.aread()
            request = hop


def _judged(
    request: httpx.Request, follow_redirects: bool | UseClientDefault, default: bool
) -> bool:
    # Marks the request as one whose every hop passes through the auth flow (the flow
    # then needs no fallback), and says whether to follow its redirects.
    request.extensions[_HOPS_JUDGED] = True
    return default if isinstance(follow_redirects, UseClientDefault) else follow_redirects


def _next_hop(
    response: httpx.Response, history: list[httpx.Response], max_redirects: int
) -> httpx.Request | None:
    # The redirect to follow, or None when the response is the final one. httpx built
    # next_request (method, body, Host, cookies); the auth flow judges its token headers.
    hop = response.next_request
    if hop is None:
        return None
    response.history = list(history)
    history.append(response)
    if len(history) > max_redirects:
        response.close()
        raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=hop)
    return hop


def id_token_client(
    audience: Audience = None,
    *,
    header: HeaderMode = "authorization",
    targets: Iterable[str] | None = None,
    provider: Provider[str] | None = None,
    **client_kwargs: Any,
) -> Client:
    """A :class:`Client` with :class:`IDTokenAuth`: ID tokens, every redirect hop judged.

    Takes :class:`IDTokenAuth`'s arguments; the rest go to ``httpx.Client``.

    Raises:
        ConfigurationError: as :class:`IDTokenAuth`.
    """
    auth = IDTokenAuth(audience, provider=provider, header=header, targets=targets)
    return Client(auth=auth, **client_kwargs)


def id_token_async_client(
    audience: Audience = None,
    *,
    header: HeaderMode = "authorization",
    targets: Iterable[str] | None = None,
    provider: Provider[str] | None = None,
    **client_kwargs: Any,
) -> AsyncClient:
    """An :class:`AsyncClient` with :class:`IDTokenAuth` (see :func:`id_token_client`).

    Raises:
        ConfigurationError: as :class:`IDTokenAuth`.
    """
    auth = IDTokenAuth(audience, provider=provider, header=header, targets=targets)
    return AsyncClient(auth=auth, **client_kwargs)
