"""aiohttp, both directions: ID tokens on a ``ClientSession``, verified callers on a web app.

Client (aiohttp 3.12+ client middlewares)::

    from s2sauth.aiohttp import IDTokenMiddleware

    async with aiohttp.ClientSession(middlewares=[IDTokenMiddleware()]) as session:
        await session.get("https://callee-xyz.a.run.app/orders")  # audience: the URL's origin

Server::

    from s2sauth.aiohttp import id_token_middleware

    app = web.Application(middlewares=[id_token_middleware(verifier=verifier, exempt=["/healthz"])])
    # in a handler: request["caller"] is the verified s2sauth.Caller

The decisions live in the shared cores: which token a URL gets and what a redirect
does to it in :class:`~s2sauth._outbound.IDTokenRules`, every inbound answer in
:class:`~s2sauth.verify.http.Gate`. This module only translates.

Redirects: aiohttp follows them inside ``ClientSession`` and builds each hop afresh
from the caller's headers, dropping only ``Authorization`` on a new origin; a client
middleware sees every hop, but is not told that a request is one. The middleware
therefore remembers, per task, where its last response redirected to: the request
that arrives next for that URL is judged as a hop of the same chain (kept on its
origin, reissued for another target, stripped otherwise), whether aiohttp follows it
or the caller does by hand with ``allow_redirects=False``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

try:
    from aiohttp import ClientRequest, ClientResponse, payload
    from multidict import CIMultiDict
    from yarl import URL
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("s2sauth.aiohttp needs aiohttp: pip install 's2sauth[aiohttp]'") from exc

from ._cloudrun import X_SERVERLESS_AUTHORIZATION
from ._errors import S2SAuthError
from ._outbound import (
    AccessTokenRules,
    Audience,
    HeaderMode,
    IDTokenRules,
    Provider,
    Redirect,
    origin,
)
from ._outbound import Rules as _Rules
from .tokens.provider import DEFAULT_SCOPES, default_access_provider, default_provider
from .verify.http import DEFAULT_REALM, EXEMPT, IAP_HEADER, Gate, Kind
from .verify.policy import Rule

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import ClientHandlerType, web
    from aiohttp.typedefs import Handler, Middleware

    from .verify.verifier import Verifier

__all__ = ["CALLER_KEY", "AccessTokenMiddleware", "IDTokenMiddleware", "id_token_middleware"]

K = TypeVar("K", bound=Hashable)
logger = logging.getLogger("s2sauth")

#: The request key holding the verified :class:`~s2sauth.Caller`: ``request["caller"]``.
CALLER_KEY = "caller"
_REDIRECTS = frozenset((301, 302, 303, 307, 308))


@dataclass(frozen=True, slots=True)
class _Hop(Generic[K]):
    request: int  # id() of the request this middleware last sent in this task
    url: str  # and its URL
    key: K | None  # the token it carried
    clean: bool  # whether its own token headers were removed first (a hop judged elsewhere)
    next: str | None  # where a request continuing the chain goes, if anywhere


class _Headers(MutableMapping[str, str]):
    """aiohttp's multidict headers as a plain mapping: removing a name removes every copy."""

    __slots__ = ("_headers",)

    def __init__(self, headers: CIMultiDict[str]) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        return self._headers[name]

    def __setitem__(self, name: str, value: str) -> None:
        self._headers[name] = value  # replaces every copy

    def __delitem__(self, name: str) -> None:
        del self._headers[name]  # removes every copy

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)


class _BearerMiddleware(Generic[K]):
    def __init__(self, rules: _Rules[K], provider: Provider[K]) -> None:
        self._rules = rules
        self._provider = provider
        # One per middleware, so that two sessions (or two middlewares) never mix chains;
        # a context per task, so that concurrent requests never do either.
        self._last: ContextVar[_Hop[K] | None] = ContextVar("s2sauth_aiohttp_hop", default=None)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Send ``request`` with the token it may carry; retry once on a 401 to a fresh token."""
        url = str(request.url)
        key, clean = self._judge(request, url)
        headers = _Headers(request.headers)
        if clean:
            # aiohttp rebuilds each hop from the caller's headers: what a hop to elsewhere
            # must not carry comes back on every later hop, and goes again each time.
            self._rules.strip(headers)
        if key is not None:
            self._rules.attach(headers, await self._provider.atoken(key))
        # Should this hop fail and be sent again (aiohttp retries a dropped keep-alive
        # connection), the repeat continues the chain with the same decision.
        self._last.set(_Hop(id(request), url, key, clean, url))
        response = await handler(request)
        if response.status == 401 and key is not None and _replayable(request):
            rejected = self._rules.rejected(401, url, headers)
            if rejected is not None:
                logger.debug("%s answered 401: one retry with a new token", origin(url))
                self._provider.invalidate(*rejected)
                response.release()
                self._rules.attach(headers, await self._provider.atoken(key))
                response = await handler(request)
        self._last.set(_Hop(id(request), url, key, clean, _location(request, response)))
        return response

    def _judge(self, request: ClientRequest, url: str) -> tuple[K | None, bool]:
        # (the key to attach a token for, whether to remove both token headers first)
        last = self._last.get()
        if last is None:
            return self._rules.key_for(url), False
        if last.request == id(request) and last.url == url:
            return last.key, last.clean  # the same hop sent again, by a middleware outside
        if last.next is None or not _same_resource(last.next, url):
            return self._rules.key_for(url), False
        action = self._rules.redirect(last.url, url)
        if action is Redirect.KEEP:
            return last.key, last.clean
        return (self._rules.key_for(url) if action is Redirect.REISSUE else None), True


def _location(request: ClientRequest, response: ClientResponse) -> str | None:
    if response.status not in _REDIRECTS:
        return None
    location = response.headers.get("Location") or response.headers.get("URI")
    if not location:
        return None
    try:
        return str(request.url.join(URL(location)))
    except ValueError:
        return None  # aiohttp refuses to follow it too


def _same_resource(expected: str, url: str) -> bool:
    # The origin and the decoded path: aiohttp may requote a Location, or add a query.
    if origin(expected) != origin(url):
        return False
    try:
        return URL(expected).path == URL(url).path
    except ValueError:
        return False


def _replayable(request: ClientRequest) -> bool:
    body = request.body
    # A streamed body is consumed by the first attempt; bytes and files can go again.
    return not isinstance(body, payload.Payload) or not getattr(body, "consumed", True)


class IDTokenMiddleware(_BearerMiddleware[str]):
    """Attach an ID token to each request of a ``ClientSession``.

    Use it as ``aiohttp.ClientSession(middlewares=[IDTokenMiddleware()])`` (or per
    request, ``session.get(url, middlewares=[...])``). The token fetch never blocks
    the event loop, concurrent requests share one fetch, and tokens are cached per
    audience. On a 401 the token is dropped from the cache and the request sent once
    more with a new one, unless its body was a stream already consumed. Any
    ``Authorization`` or ``X-Serverless-Authorization`` the request already carries
    (session defaults, ``auth=``, headers copied from an incoming request) is
    replaced by the adapter's, or removed where no token may go.

    Every redirect hop is judged again: the token stays on its origin (and prefix,
    with ``targets``), a hop to another origin listed in ``targets`` gets a token of
    its own, and any other hop leaves with neither token header, in every header mode.

    Args:
        audience: ``None`` for each request URL's origin (what Cloud Run accepts), a
            string, or a callable given the URL.
        header: ``"authorization"``, ``"x-serverless-authorization"`` or ``"both"``.
        targets: origins (``"https://callee-xyz.a.run.app"``) or URL prefixes
            (``"https://api.example.com/v1/"``) that get a token; other requests go
            without one. ``None``: every request gets one (but no redirect elsewhere).
        provider: an :class:`~s2sauth.tokens.provider.IDTokenProvider`; the shared
            :func:`~s2sauth.tokens.provider.default_provider` by default.

    Raises:
        ConfigurationError: a bad ``audience``, ``header`` or ``targets``.
        TokenFetchError: (when sending) no token could be had; nothing is sent.
    """

    def __init__(
        self,
        audience: Audience = None,
        *,
        header: HeaderMode = "authorization",
        targets: Iterable[str] | None = None,
        provider: Provider[str] | None = None,
    ) -> None:
        rules = IDTokenRules(audience, header=header, targets=targets)
        super().__init__(rules, provider if provider is not None else default_provider())


class AccessTokenMiddleware(_BearerMiddleware[tuple[str, ...]]):
    """Attach an OAuth access token, for calling Google APIs with the service's identity.

    An access token is good for every Google API the account may use, so it goes only
    to Google API hosts (``https://*.googleapis.com``) unless ``targets`` says otherwise.

    Args:
        scopes: the OAuth scopes the token is for.
        provider: an :class:`~s2sauth.tokens.provider.AccessTokenProvider`; the shared
            :func:`~s2sauth.tokens.provider.default_access_provider` by default.
        targets: origins, URL prefixes or ``https://*.domain`` patterns that get a token.

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


# -- server ----------------------------------------------------------------------------------

ErrorHandler = Callable[["web.Request", S2SAuthError], Awaitable["web.StreamResponse"]]


def id_token_middleware(
    *,
    verifier: Verifier,
    exempt: Iterable[str] = (),
    rules: Sequence[Rule] = (),
    realm: str = DEFAULT_REALM,
    on_error: ErrorHandler | None = None,
    iap: Verifier | None = None,
    accept: Kind | Mapping[str, Kind] | None = None,
) -> Middleware:
    """An aiohttp web middleware that lets a request in only with a verified ID token.

    Use it as ``web.Application(middlewares=[id_token_middleware(verifier=...)])``.
    The verified :class:`~s2sauth.Caller` is at ``request["caller"]``. Rejections get
    the answers of every other s2sauth adapter: 401 with ``WWW-Authenticate``, 403, or
    503 with ``Retry-After``, each with a short JSON body. Verification never blocks
    the event loop: key fetches run off it, and what runs on it is a cache look-up or
    one RS256 signature check (tens of microseconds).

    Rules and exempt paths are matched on the path inside the application the
    middleware is installed on: on a sub-application added with
    ``app.add_subapp("/api", sub)``, ``exempt=["/healthz"]`` means ``/api/healthz``,
    as the sub-application's own routes are written.

    Threat model: whoever can reach the service can send any headers. Only a token
    signed by Google's published keys, for this service's audience, from an allowed
    caller gets through; the token is never logged or echoed. Unmatched paths are
    checked too, so a caller without a token cannot tell which routes exist. Put it
    first in ``middlewares``, so no other middleware acts on an unauthenticated request.

    .. versionadded:: 0.1

    Args:
        verifier: checks tokens; its allow-list is the default policy.
        exempt: paths served without a token (e.g. ``["/healthz"]``): exact paths, or
            everything under an entry ending in ``/``.
        rules: per-route allow-lists (:class:`~s2sauth.verify.policy.Rule`).
        realm: the realm named in ``WWW-Authenticate``.
        on_error: ``async (request, error) -> response`` answering a rejection instead
            of the standard response.
        iap: an :class:`~s2sauth.iap.IAPVerifier`, to let in people signed in by
            Identity-Aware Proxy too (see :class:`~s2sauth.verify.http.Gate`).
        accept: which kind of caller each path takes: ``"service"``, ``"person"``
            or ``"either"``, for every path or as ``{path prefix: kind}``.

    Raises:
        ConfigurationError: invalid rules, exempt paths or realm.
    """
    from aiohttp import web
    from multidict import istr

    gate = Gate(verifier, exempt=exempt, rules=rules, realm=realm, iap=iap, accept=accept)
    # istr names: multidict looks them up without folding their case on every request.
    AUTHORIZATION, SERVERLESS = istr("Authorization"), istr(X_SERVERLESS_AUTHORIZATION)
    prefixes: dict[int, str] = {}

    @web.middleware
    async def s2sauth_id_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = _app_path(request, prefixes)
        policy = gate.route(request.method, path)
        if policy is EXEMPT:
            return await handler(request)
        headers = request.headers
        authorization = headers.getall(AUTHORIZATION, ())
        serverless = headers.getall(SERVERLESS, ())
        caller = gate.recall(authorization, serverless, policy)
        if caller is None:
            # The query and full path only matter to push audiences: not read otherwise.
            query, url_path = (request.query_string, request.path) if gate.needs_url else ("", None)
            try:
                caller = await gate.aauthenticate(
                    authorization,
                    serverless,
                    policy=policy,
                    assertion=headers.getall(IAP_HEADER, ()) if gate.iap else (),
                    path=path,
                    query=query,
                    url_path=url_path,
                    method=request.method,
                )
            except S2SAuthError as exc:
                if on_error is not None:
                    return await on_error(request, exc)
                denial = gate.deny(exc)
                kept = [(name, value) for name, value in denial.headers if name != "Content-Length"]
                return web.Response(status=denial.status, body=denial.body, headers=kept)
        _store_caller(request, caller)
        return await handler(request)

    return s2sauth_id_token


def _app_path(request: web.Request, prefixes: dict[int, str]) -> str:
    # The path inside the (sub-)application the middleware belongs to: aiohttp runs an
    # app's middlewares with match_info.current_app set to that app.
    path = request.path
    match_info = request.match_info
    app = match_info.current_app
    prefix = prefixes.get(id(app))
    if prefix is None:
        apps = match_info.apps
        prefix = prefixes[id(app)] = "" if not apps or app is apps[0] else _prefix_of(app, apps)
    if (
        prefix
        and path.startswith(prefix)
        and (len(path) == len(prefix) or path[len(prefix)] == "/")
    ):
        return path[len(prefix) :] or "/"
    return path


def _prefix_of(app: web.Application, apps: tuple[web.Application, ...]) -> str:
    # A sub-application's resource in its parent knows its whole prefix (nested
    # prefixes are folded in by add_subapp); a domain-matched one has none.
    parent = apps[apps.index(app) - 1]
    for resource in parent.router.resources():
        info: dict[str, Any] = dict(resource.get_info())
        if info.get("app") is app:
            return str(info.get("prefix", ""))
    return ""


_caller_key_seen = False


def _store_caller(request: web.Request, caller: object) -> None:
    global _caller_key_seen
    if _caller_key_seen:
        request[CALLER_KEY] = caller
        return
    # aiohttp >= 3.13 warns (ignored by default, an error under -W error), once per
    # process, the first time a string key is stored on a request; "caller" is this
    # API's documented name, so that warning is not the user's to see.
    from aiohttp.web import NotAppKeyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotAppKeyWarning)
        request[CALLER_KEY] = caller
    _caller_key_seen = True
