"""WSGI middleware that lets a request in only with a verified Google ID token."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ._errors import S2SAuthError
from .verify.http import DEFAULT_REALM, EXEMPT, Gate, Kind
from .verify.policy import Rule

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .verify.verifier import Verifier

__all__ = ["CALLER_KEY", "VERIFIER_KEY", "IDTokenMiddleware"]

#: The environ key holding the verified :class:`~s2sauth.Caller`.
CALLER_KEY = "s2sauth.caller"
#: The environ key naming the :class:`~s2sauth.Verifier` that verified it.
VERIFIER_KEY = "s2sauth.verifier"


def _path(environ: WSGIEnvironment, key: str = "PATH_INFO") -> str:
    path: str = environ.get(key, "")
    try:
        # PEP 3333 strings are latin-1 decoded bytes; paths are usually UTF-8 (werkzeug agrees).
        return path.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return path


class IDTokenMiddleware:
    """Verify the ID token of every request before the WSGI app sees it.

    Use it to protect a whole WSGI service (Flask, Django, bare WSGI); for
    single Flask views see :func:`s2sauth.flask.require_id_token`. The verified
    :class:`~s2sauth.Caller` is stored at ``environ["s2sauth.caller"]``.
    Rejections get 401, 403 or 503 with a short JSON body. Routes are matched
    on ``PATH_INFO``, the path inside the application.

    Threat model: whoever can reach the service can send any headers. Only a
    token signed by Google's published keys, for this service's audience, from
    an allowed caller gets through; the token is never logged or echoed. Wrap
    the outermost application, so no other middleware acts on an
    unauthenticated request.

    .. versionadded:: 0.1

    Args:
        app: the application to protect.
        verifier: checks tokens; its allow-list is the default policy.
        exempt: paths served without a token (e.g. ``["/healthz"]``): exact
            paths, or everything under an entry ending in ``/``.
        rules: per-route allow-lists (:class:`~s2sauth.verify.policy.Rule`).
        realm: the realm named in ``WWW-Authenticate``.
        on_error: ``(environ, error) -> WSGI app`` answering a rejection instead
            of the standard response.
        iap: an :class:`~s2sauth.iap.IAPVerifier`, to let in people signed in by
            Identity-Aware Proxy too (see :class:`~s2sauth.verify.http.Gate`).
        accept: which kind of caller each path takes: ``"service"``, ``"person"``
            or ``"either"``, for every path or as ``{path prefix: kind}``.

    Raises:
        ConfigurationError: invalid rules, exempt paths, realm or kinds.

    .. versionchanged:: 0.2 ``iap`` and ``accept``.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        verifier: Verifier,
        exempt: Iterable[str] = (),
        rules: Sequence[Rule] = (),
        realm: str = DEFAULT_REALM,
        on_error: Callable[[WSGIEnvironment, S2SAuthError], WSGIApplication] | None = None,
        iap: Verifier | None = None,
        accept: Kind | Mapping[str, Kind] | None = None,
    ) -> None:
        self.app = app
        self.gate = Gate(verifier, exempt=exempt, rules=rules, realm=realm, iap=iap, accept=accept)
        self.on_error = on_error

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Check the request, then call the app (or answer the rejection)."""
        path = _path(environ)
        method = environ.get("REQUEST_METHOD", "GET")
        policy = self.gate.route(method, path)
        if policy is EXEMPT:
            return self.app(environ, start_response)
        authorization = environ.get("HTTP_AUTHORIZATION")
        serverless = environ.get("HTTP_X_SERVERLESS_AUTHORIZATION")
        assertion = environ.get("HTTP_X_GOOG_IAP_JWT_ASSERTION")
        # The full path (mount prefix included) only matters to push audiences.
        url_path = _path(environ, "SCRIPT_NAME") + path if self.gate.needs_url else None
        try:
            caller = self.gate.authenticate(
                () if authorization is None else (authorization,),
                () if serverless is None else (serverless,),
                policy=policy,
                assertion=() if assertion is None else (assertion,),
                path=path,
                query=environ.get("QUERY_STRING", ""),
                url_path=url_path,
                method=method,
            )
            environ[CALLER_KEY] = caller
            environ[VERIFIER_KEY] = self.gate.verifier_of(caller)
        except S2SAuthError as exc:
            if self.on_error is not None:
                return self.on_error(environ, exc)(environ, start_response)
            denial = self.gate.deny(exc)
            start_response(denial.status_line, list(denial.headers))
            return [denial.body]
        return self.app(environ, start_response)
