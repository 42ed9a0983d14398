"""ASGI middleware that lets a request in only with a verified Google ID token.

Pure ASGI: it works under Starlette, FastAPI or any ASGI application and
imports no framework.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import KeyFetchError, S2SAuthError
from .verify.http import DEFAULT_REALM, EXEMPT, Gate, Kind
from .verify.policy import Rule

if TYPE_CHECKING:  # pragma: no cover
    from .verify.verifier import Verifier

__all__ = ["VERIFIER_KEY", "IDTokenMiddleware"]

_log = logging.getLogger("s2sauth")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: The scope key naming the :class:`~s2sauth.Verifier` that verified ``scope["s2sauth.caller"]``.
VERIFIER_KEY = "s2sauth.verifier"


def _warming(receive: Receive, verifier: Verifier) -> Receive:
    # Lifespan passes through; its startup message reaches the app once the keys are in.
    async def receive_after_warming() -> Message:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            try:
                await verifier.awarm()
            except KeyFetchError as exc:
                _log.warning("could not fetch verification keys at startup: %s", exc.message)
        return message

    return receive_after_warming


def _route_path(scope: Scope) -> str:
    # The path inside the application, as Starlette routes it: ASGI servers and mounts
    # put the root_path in front of "path" too, and rules are written for the app.
    path: str = scope["path"]
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


class IDTokenMiddleware:
    """Verify the ID token of every HTTP and WebSocket request before the app sees it.

    Use it to protect a whole ASGI service; ``exempt`` keeps health checks open
    and ``rules`` narrow the allowed callers per route. The verified
    :class:`~s2sauth.Caller` is stored at ``scope["state"]["caller"]`` (so
    ``request.state.caller`` in Starlette and FastAPI) and at
    ``scope["s2sauth.caller"]``. Lifespan and other scopes pass straight through.
    Rules and exempt paths are matched on the path inside the application (without
    the ``root_path`` of a mount or of ``uvicorn --root-path``), as Starlette routes.

    A rejected HTTP request gets 401, 403 or 503 with a short JSON body. A
    rejected WebSocket handshake gets the same response when the server supports
    the ``websocket.http.response`` extension (uvicorn does), else a
    ``websocket.close`` with code 1008 before accepting, which servers send as 403.
    WebSocket scopes are routed as ``GET`` requests.

    Threat model: whoever can reach the service can send any headers. Only a
    token signed by Google's published keys, for this service's audience, from
    an allowed caller gets through; nothing from the request is trusted before
    that, and the token is never logged or echoed. Put it outermost, so no other
    middleware acts on an unauthenticated request.

    .. versionadded:: 0.1

    Args:
        app: the application to protect.
        verifier: checks tokens; its allow-list is the default policy.
        exempt: paths served without a token (e.g. ``["/healthz"]``): exact
            paths, or everything under an entry ending in ``/``.
        rules: per-route allow-lists (:class:`~s2sauth.verify.policy.Rule`).
        realm: the realm named in ``WWW-Authenticate``.
        on_error: ``(scope, error) -> ASGI app`` answering a rejection instead of
            the standard response.
        iap: an :class:`~s2sauth.iap.IAPVerifier`, to let in people signed in by
            Identity-Aware Proxy too (see :class:`~s2sauth.verify.http.Gate`).
        accept: which kind of caller each path takes: ``"service"``, ``"person"``
            or ``"either"``, for every path or as ``{path prefix: kind}``.
        warm: fetch the verification keys on lifespan startup (before the app's
            own startup runs), so the first request pays no key fetch; a failure is
            logged and startup goes on. Needs an app that handles lifespan
            (Starlette, FastAPI do) and a server that sends it (uvicorn, hypercorn).

    Raises:
        ConfigurationError: invalid rules, exempt paths, realm or kinds.

    .. versionchanged:: 0.2 ``iap``, ``accept`` and ``warm``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Verifier,
        exempt: Iterable[str] = (),
        rules: Sequence[Rule] = (),
        realm: str = DEFAULT_REALM,
        on_error: Callable[[Scope, S2SAuthError], ASGIApp] | None = None,
        iap: Verifier | None = None,
        accept: Kind | Mapping[str, Kind] | None = None,
        warm: bool = True,
    ) -> None:
        self.app = app
        self.warm = warm
        self.gate = Gate(verifier, exempt=exempt, rules=rules, realm=realm, iap=iap, accept=accept)
        self.on_error = on_error
        self._assertion_header = b"x-goog-iap-jwt-assertion" if self.gate.iap else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request, then call the app (or answer the rejection)."""
        if scope["type"] == "lifespan" and self.warm:
            return await self.app(scope, _warming(receive, self.gate.verifier), send)
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = _route_path(scope)
        policy = self.gate.route(scope.get("method", "GET"), path)
        if policy is EXEMPT:
            return await self.app(scope, receive, send)
        authorization: list[str] = []
        serverless: list[str] = []
        assertion: list[str] = []
        for name, value in scope["headers"]:  # ASGI header names are lower-case
            if name == b"authorization":
                authorization.append(value.decode("latin-1"))
            elif name == b"x-serverless-authorization":
                serverless.append(value.decode("latin-1"))
            elif name == self._assertion_header:
                assertion.append(value.decode("latin-1"))
        caller = self.gate.recall(authorization, serverless, policy)
        if caller is None:
            try:
                caller = await self.gate.aauthenticate(
                    authorization,
                    serverless,
                    policy=policy,
                    assertion=assertion,
                    path=path,
                    query=scope.get("query_string", b"").decode("latin-1"),
                    url_path=scope["path"],  # the full path: servers put root_path in front
                    method=scope.get("method", "GET"),
                )
            except S2SAuthError as exc:
                return await self._reject(scope, receive, send, exc)
        if scope.get("state") is None:
            scope["state"] = {}
        scope["state"]["caller"] = caller
        scope["s2sauth.caller"] = caller
        scope[VERIFIER_KEY] = self.gate.verifier_of(caller)
        await self.app(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, exc: S2SAuthError) -> None:
        if self.on_error is not None:
            return await self.on_error(scope, exc)(scope, receive, send)
        denial = self.gate.deny(exc)
        headers = [(k.lower().encode(), v.encode()) for k, v in denial.headers]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": denial.status, "headers": headers})
            await send({"type": "http.response.body", "body": denial.body})
            return
        await receive()  # websocket.connect: the handshake is answered, never accepted
        if "websocket.http.response" in (scope.get("extensions") or {}):
            start = {"type": "websocket.http.response.start", "status": denial.status}
            await send({**start, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": denial.body})
        else:
            await send({"type": "websocket.close", "code": 1008})
