"""What the outbound adapters decide, kept free of any HTTP client.

``s2sauth.requests`` and ``s2sauth.httpx`` only translate between their
library's request objects and the rules here:

* which token a URL gets (:meth:`Rules.key_for`): the audience derived from
  the URL's origin, a fixed one, or one computed by a callable, and none at
  all for a URL outside the ``targets`` allow-list. A credential goes only
  where it was issued for: a fixed URL audience implies ``targets=[its
  origin]``, a custom (non-URL) audience needs ``targets``, and access tokens
  go only to Google API hosts (:data:`GOOGLE_APIS`) unless ``targets`` says otherwise;
* which headers carry it (:data:`HEADER_MODES`), replacing any token header
  the request already carried (:meth:`Rules.attach`);
* what happens to those headers when a response redirects elsewhere
  (:meth:`Rules.redirect`): kept on the same origin, dropped on another
  one, and replaced by a fresh token when the other origin is an explicit target;
* whether a client that follows redirects out of the adapter's sight keeps
  every token where it belongs by its own rules (:meth:`Rules.safe_unjudged`).

A *key* is what a provider caches tokens by: an audience for ID tokens, a
scope set for access tokens.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Mapping, MutableMapping, Sequence
from typing import Generic, Literal, Protocol, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit

from ._cloudrun import X_SERVERLESS_AUTHORIZATION
from ._errors import ConfigurationError

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", contravariant=True)

#: The standard header; Cloud Run checks it unless ``X-Serverless-Authorization`` is present.
AUTHORIZATION = "Authorization"

HeaderMode: TypeAlias = Literal["authorization", "x-serverless-authorization", "both"]
#: Header mode -> the headers that carry the token (the same token in each).
HEADER_MODES: Mapping[str, tuple[str, ...]] = {
    "authorization": (AUTHORIZATION,),
    "x-serverless-authorization": (X_SERVERLESS_AUTHORIZATION,),
    "both": (AUTHORIZATION, X_SERVERLESS_AUTHORIZATION),
}
#: An audience: ``None`` (the request URL's origin), a fixed string, or ``url -> audience``.
Audience: TypeAlias = "str | Callable[[str], str] | None"

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Where access tokens may go unless ``targets`` says otherwise: Google's API hosts.
GOOGLE_APIS = ("https://*.googleapis.com",)


class Provider(Protocol[K_contra]):
    """What the adapters need from ``IDTokenProvider`` or ``AccessTokenProvider``."""

    def token(self, key: K_contra, /) -> str:
        """A token for ``key``, cached or fetched."""
        ...

    async def atoken(self, key: K_contra, /) -> str:
        """Like :meth:`token`, without blocking the event loop."""
        ...

    def invalidate(self, key: K_contra, token: str | None = None, /) -> None:
        """Drop the cached token for ``key`` if it is still ``token``."""
        ...


class Redirect(enum.Enum):
    """What to do with the token headers when a response redirects to ``new_url``."""

    KEEP = "keep"  # same origin and key, still allowed: the copied headers may go
    STRIP = "strip"  # elsewhere: no token may go
    REISSUE = "reissue"  # an explicit target elsewhere, or another key here: a fresh token


@functools.lru_cache(maxsize=1024)  # every request asks; a client calls few distinct URLs
def origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL (default port omitted), else ``None``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class _Target:
    """One ``targets`` entry: an origin, an origin plus a path prefix, or ``https://*.domain``."""

    def __init__(self, spec: object) -> None:
        parts = urlsplit(spec) if isinstance(spec, str) else None
        # "https://*.googleapis.com": any host below the domain, https on port 443 only.
        self.suffix = ""
        if parts is not None and parts.scheme == "https" and parts.netloc.startswith("*."):
            domain = parts.netloc[1:].lower()
            if "." in domain[1:] and ":" not in domain and parts.path in ("", "/"):
                self.suffix = domain
        self.origin = origin(spec) if isinstance(spec, str) and not self.suffix else None
        if (
            parts is None
            or (self.origin is None and not self.suffix)
            or parts.query
            or parts.fragment
            or "@" in (parts.netloc)
        ):
            raise ConfigurationError(
                f"bad target {spec!r}: give an origin such as 'https://callee-xyz.a.run.app', "
                "a URL prefix such as 'https://api.example.com/v1/', or 'https://*.example.com' "
                "(no user, query or fragment)"
            )
        self.path = parts.path if parts.path not in ("", "/") else ""

    def allows(self, url_origin: str, path: str) -> bool:
        if self.suffix:
            host = url_origin.removeprefix("https://")
            return host != url_origin and ":" not in host and host.endswith(self.suffix)
        if url_origin != self.origin:
            return False
        if not self.path:
            return True
        if _walks_out(path):
            return False
        return path.startswith(self.path if self.path.endswith("/") else self.path + "/") or (
            path == self.path
        )


@functools.lru_cache(maxsize=1024)  # asked on every request of a plain httpx client
def _origin_wide_target(targets: tuple[_Target, ...] | None, url: str) -> bool:
    # Whether ``url`` (not http on port 80) may get a token on its whole origin.
    url_origin, parts = origin(url), urlsplit(url)
    if url_origin is None or url_origin.startswith("http:") and (parts.port or 80) == 80:
        return False
    if targets is None:
        return True
    path = parts.path or "/"
    return any(t.allows(url_origin, path) and not t.path for t in targets)


def _walks_out(path: str) -> bool:
    """Whether some server could read a segment of ``path`` as ``.`` or ``..``.

    Such a segment could walk out of a prefix on the server side. Servers differ:
    some also split on ``\\``, drop a ``;parameter`` from a segment (``..;`` is
    ``..``) or fold full-width dots, so all of those count.
    """
    text = unicodedata.normalize("NFKC", unquote(path))
    return any(part.split(";", 1)[0] in (".", "..") for part in re.split(r"[/\\]", text))


class Rules(Generic[K]):
    """Which token a URL gets, in which headers, and what survives a redirect.

    Args:
        header: the header mode, one of :data:`HEADER_MODES`.
        targets: origins or URL prefixes allowed to receive a token; ``None`` allows
            every request the adapter is applied to (but no other origin after a redirect).

    Raises:
        ConfigurationError: an unknown header mode, or a malformed or empty ``targets``.
    """

    def __init__(self, *, header: str = "authorization", targets: Iterable[str] | None = None):
        mode = header.lower() if isinstance(header, str) else header
        if mode not in HEADER_MODES:
            raise ConfigurationError(
                f"header must be one of {', '.join(map(repr, HEADER_MODES))}, not {header!r}"
            )
        self.header_names = HEADER_MODES[mode]
        self._drop_serverless = X_SERVERLESS_AUTHORIZATION not in self.header_names
        self.targets: tuple[_Target, ...] | None = None
        if targets is not None:
            if isinstance(targets, str):
                raise ConfigurationError("targets must be a list of origins or URL prefixes")
            self.targets = tuple(_Target(spec) for spec in targets)
            if not self.targets:
                raise ConfigurationError(
                    "targets is empty, so no request would get a token; pass None to allow all"
                )

    def allows(self, url: str) -> bool:
        """Whether ``url`` may receive a token at all."""
        if self.targets is None:
            return True
        url_origin = origin(url)
        path = urlsplit(url).path or "/"
        return url_origin is not None and any(t.allows(url_origin, path) for t in self.targets)

    def key_for(self, url: str) -> K | None:
        """The provider key for a request to ``url``, or ``None`` when it gets no token."""
        return self._key(url) if self.allows(url) else None

    def _key(self, url: str) -> K:
        raise NotImplementedError

    def redirect(self, old_url: str, new_url: str) -> Redirect:
        """What the token headers of a request to ``old_url`` become when redirected."""
        if origin(old_url) == origin(new_url):
            if not self.allows(new_url):
                return Redirect.STRIP
            # An audience computed per URL may differ on the same origin: then the hop
            # needs its own token, and a 401 must drop that one, not the first URL's.
            return Redirect.KEEP if self._key(old_url) == self._key(new_url) else Redirect.REISSUE
        if self.targets is not None and self.allows(new_url):
            return Redirect.REISSUE
        return Redirect.STRIP

    def follow(self, old_url: str, new_url: str, headers: MutableMapping[str, str]) -> K | None:
        """Apply :meth:`redirect` to the copied ``headers``; the key to attach, if any."""
        action = self.redirect(old_url, new_url)
        if action is not Redirect.KEEP:
            self.strip(headers)
        return self.key_for(new_url) if action is Redirect.REISSUE else None

    def rejected(self, status: int, url: str, headers: Mapping[str, str]) -> tuple[K, str] | None:
        """``(key, token)`` to invalidate when a 401 answered a token sent to ``url``."""
        sent = self.sent_token(headers) if status == 401 else None
        key = self.key_for(url) if sent else None
        return None if key is None or sent is None else (key, sent)

    def safe_unjudged(self, url: str) -> bool:
        """Whether a token for ``url`` stays where it belongs with a client that follows
        redirects out of the adapter's sight, dropping ``Authorization`` on leaving the
        origin and nothing else (httpx's own rule).

        That holds when the token travels in ``Authorization`` alone, every URL of the
        origin would get the same token, and no redirect can upgrade ``http://host`` to
        ``https://host`` (where httpx keeps ``Authorization``, on port 80 only).
        """
        if self.header_names != (AUTHORIZATION,) or not self._origin_wide_key():
            return False
        return _origin_wide_target(self.targets, url)

    def _origin_wide_key(self) -> bool:
        return True

    def attach(self, headers: MutableMapping[str, str], token: str) -> None:
        """Put ``Bearer <token>`` in each header of the mode.

        The adapter owns the token headers: an ``X-Serverless-Authorization`` the
        request already carried (copied from an incoming request by a proxying
        service, say) is replaced or removed, or Cloud Run would check that one
        instead. In the ``x-serverless-authorization`` mode ``Authorization`` is the
        callee's own business and is left as it is.
        """
        if self._drop_serverless and X_SERVERLESS_AUTHORIZATION in headers:
            del headers[X_SERVERLESS_AUTHORIZATION]
        value = f"Bearer {token}"
        for name in self.header_names:
            headers[name] = value

    def strip(self, headers: MutableMapping[str, str]) -> None:
        """Remove both token headers, whatever the mode (neither may leave the origin)."""
        headers.pop(AUTHORIZATION, None)
        headers.pop(X_SERVERLESS_AUTHORIZATION, None)

    def sent_token(self, headers: Mapping[str, str]) -> str | None:
        """The bearer token in this mode's first header, if any."""
        scheme, _, token = headers.get(self.header_names[0], "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()


class IDTokenRules(Rules[str]):
    """:class:`Rules` for ID tokens: the key is the audience.

    Args:
        audience: ``None`` for the request URL's origin (what Cloud Run accepts), a
            fixed string, or a callable given the URL string.
        header: as :class:`Rules`.
        targets: as :class:`Rules`.

    A fixed URL audience implies ``targets=[its origin]``: the token is good for
    that service only, so only that origin gets it. A fixed audience that is not
    a URL (a custom audience) names no origin, so ``targets`` must.

    Raises:
        ConfigurationError: as :class:`Rules`, ``audience`` is not one of those, or a
            custom audience comes without ``targets``.
    """

    def __init__(
        self,
        audience: Audience = None,
        *,
        header: str = "authorization",
        targets: Iterable[str] | None = None,
    ) -> None:
        if not (audience is None or callable(audience) or _non_empty(audience)):
            raise ConfigurationError(
                f"audience must be None, a non-empty string or a callable, not {audience!r}"
            )
        if isinstance(audience, str) and targets is None:
            implied = origin(audience.strip())
            if implied is None:
                raise ConfigurationError(
                    f"the custom audience {audience!r} names no origin to send its token to: "
                    "pass targets=[...] with the URLs of the services that accept it"
                )
            targets = [implied]
        super().__init__(header=header, targets=targets)
        self.audience = audience

    def _origin_wide_key(self) -> bool:
        return not callable(self.audience)

    def _key(self, url: str) -> str:
        if isinstance(self.audience, str):
            return self.audience
        if self.audience is not None:
            audience = self.audience(url)
            if not _non_empty(audience):
                raise ConfigurationError(f"the audience callable returned {audience!r}")
            return audience
        derived = origin(url)
        if derived is None:
            raise ConfigurationError(
                f"cannot derive an audience from a {urlsplit(url).scheme!r} URL; pass audience="
            )
        return derived


class AccessTokenRules(Rules[tuple[str, ...]]):
    """:class:`Rules` for access tokens: ``Authorization`` only, the key is the scope set.

    An access token is good for every Google API the account may use, so it goes
    only to :data:`GOOGLE_APIS` unless ``targets`` names other places.

    Raises:
        ConfigurationError: ``scopes`` is empty or holds something other than strings,
            or ``targets`` is malformed.
    """

    def __init__(
        self, scopes: Sequence[str] | str, *, targets: Iterable[str] | None = None
    ) -> None:
        super().__init__(targets=GOOGLE_APIS if targets is None else targets)
        items = (scopes,) if isinstance(scopes, str) else tuple(scopes)
        if not items or not all(_non_empty(s) for s in items):
            raise ConfigurationError(f"scopes must be one or more non-empty strings: {scopes!r}")
        self.scopes = items

    def _key(self, url: str) -> tuple[str, ...]:
        return self.scopes


def _non_empty(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())
