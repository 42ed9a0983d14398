"""ID tokens (and Google API access tokens) for requests.

::

    session = id_token_session()          # audience: each URL's origin
    session.get("https://callee-xyz.a.run.app/orders")

or ``session.auth = IDTokenAuth()`` on any session. On a 401 the token is
dropped from the provider's cache and the request sent once more (when its
body is bytes or text). No token goes where it was not issued for, on any hop
and in any session: requests runs the auth's response hook before it copies a
request for the next hop, and the hook drops both token headers on a hop
elsewhere (requests itself drops only ``Authorization``, and keeps it on an
``http`` to ``https`` upgrade); a session from :func:`id_token_session` also
gives an origin listed in ``targets`` a fresh token of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import urljoin

try:
    import requests
    from requests.auth import AuthBase
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("s2sauth.requests needs requests: pip install 's2sauth[requests]'") from exc

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

__all__ = ["AccessTokenAuth", "IDTokenAuth", "id_token_session"]

K = TypeVar("K", bound=Hashable)
logger = logging.getLogger("s2sauth")


class _BearerAuth(AuthBase, Generic[K]):
    def __init__(self, rules: _Rules[K], provider: Provider[K]) -> None:
        self._rules = rules
        self._provider = provider

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        self._authorize(r)
        r.hooks["response"].append(self._on_response)
        return r

    def _authorize(self, r: requests.PreparedRequest) -> None:
        if (key := self._rules.key_for(r.url or "")) is not None:
            self._rules.attach(r.headers, self._provider.token(key))

    def _on_response(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        sent = r.request
        rejected = self._rules.rejected(r.status_code, sent.url or "", sent.headers)
        if rejected is not None and (sent.body is None or isinstance(sent.body, (bytes, str))):
            logger.debug("%s answered 401: one retry with a new token", origin(sent.url or ""))
            self._provider.invalidate(*rejected)
            self._authorize(sent)
            r.content  # noqa: B018 - read the body so the connection can be reused
            r.close()
            # Straight through the adapter, so no hook runs again: one retry only. The
            # request is changed in place because requests builds any redirect from it.
            retry = r.connection.send(sent, **kwargs)
            retry.history.append(r)
            r = retry
        if r.is_redirect:
            # requests copies this request to build the next hop: strip it first.
            new_url = urljoin(r.url, r.headers["location"])
            key = self._rules.follow(sent.url or "", new_url, sent.headers)
            if key is not None and origin(new_url) == origin(sent.url or ""):
                # Another audience on the same origin: requests keeps headers there, so
                # the copy may carry that hop's own token (any session, not only ours).
                self._rules.attach(sent.headers, self._provider.token(key))
        return r


class IDTokenAuth(_BearerAuth[str]):
    """Attach an ID token to each request: ``session.auth = IDTokenAuth()``.

    Args:
        audience: ``None`` for each request URL's origin (what Cloud Run accepts), a
            string, or a callable given the URL.
        provider: an ``IDTokenProvider``; the shared ``default_provider()`` by default.
        header: ``"authorization"``, ``"x-serverless-authorization"`` or ``"both"``.
        targets: origins (``"https://callee-xyz.a.run.app"``) or URL prefixes
            (``"https://api.example.com/v1/"``) that get a token; ``None``: all (the
            audience's own origin, for a fixed audience).

    Raises:
        ConfigurationError: a bad ``audience``, ``header`` or ``targets``, or a custom
            (non-URL) audience without ``targets``.
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
    """Attach an OAuth access token, to call Google APIs as the service's account.

    An access token is good for every Google API the account may use, so it goes
    only to ``https://*.googleapis.com`` unless ``targets`` names other places.

    Args:
        scopes: the OAuth scopes the token is for.
        provider: an ``AccessTokenProvider``; the shared ``default_access_provider()``
            by default.
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
        provider = provider if provider is not None else default_access_provider()
        super().__init__(AccessTokenRules(scopes, targets=targets), provider)


class _Session(requests.Session):
    def rebuild_auth(self, prepared: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared, response)  # type: ignore[no-untyped-call]
        auth, old_url = self.auth, response.request.url or ""
        if isinstance(auth, _BearerAuth) and auth._rules.redirect(old_url, prepared.url or "") is (
            Redirect.REISSUE
        ):
            auth._authorize(prepared)


def id_token_session(
    audience: Audience = None,
    *,
    header: HeaderMode = "authorization",
    targets: Iterable[str] | None = None,
    provider: Provider[str] | None = None,
) -> requests.Session:
    """A ``requests.Session`` with :class:`IDTokenAuth` (same arguments) mounted.

    Beyond the auth alone, it gives a redirect to another origin listed in
    ``targets`` a fresh token for that origin.

    Raises:
        ConfigurationError: as :class:`IDTokenAuth`.
    """
    session = _Session()
    session.auth = IDTokenAuth(audience, provider=provider, header=header, targets=targets)
    return session
