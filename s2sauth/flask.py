"""Flask view decorator that lets a request in only with a verified Google ID token."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

try:
    from flask import Response, abort, current_app, g, request
except ModuleNotFoundError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("s2sauth.flask needs Flask: pip install 's2sauth[flask]'") from exc

from . import _log
from ._errors import S2SAuthError
from .verify.caller import Caller
from .verify.http import DEFAULT_REALM, IAP_HEADER, SERVERLESS_HEADER, Gate, Kind
from .verify.policy import CallerPolicy
from .wsgi import CALLER_KEY, VERIFIER_KEY

if TYPE_CHECKING:  # pragma: no cover
    from .verify.verifier import Verifier

__all__ = ["require_id_token"]

P = ParamSpec("P")
R = TypeVar("R")


def require_id_token(
    *,
    verifier: Verifier,
    allowed_callers: Iterable[str] | CallerPolicy | None = None,
    realm: str = DEFAULT_REALM,
    iap: Verifier | None = None,
    accept: Kind | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a Flask view so it runs only for a verified, allowed caller.

    Use it to protect some views of a Flask app (protect all of them with
    :class:`s2sauth.wsgi.IDTokenMiddleware`). The caller is in ``flask.g.caller``.
    Sync and ``async def`` views both work (the latter needs ``flask[async]``).
    A rejection aborts with 401, 403 or 503 and a short JSON body. When the
    WSGI middleware already verified the request with the same verifier, its
    caller is reused and only this view's allow-list is applied.

    Threat model: see :class:`s2sauth.wsgi.IDTokenMiddleware`.

    .. versionadded:: 0.1

    Args:
        verifier: checks tokens.
        allowed_callers: this view's allow-list (emails, numeric IDs, or an
            opted-in project wildcard); ``None`` keeps the verifier's.
        realm: the realm named in ``WWW-Authenticate``.
        iap: an :class:`~s2sauth.iap.IAPVerifier`, to let in people signed in by
            Identity-Aware Proxy too (or pass it as ``verifier``: people only).
        accept: ``"service"``, ``"person"`` or ``"either"`` (the default with ``iap``).

    Raises:
        ConfigurationError: an invalid allow-list, realm or kind (at decoration time).

    .. versionchanged:: 0.2 ``iap`` and ``accept``.
    """
    gate = Gate(verifier, allowed_callers=allowed_callers, realm=realm, iap=iap, accept=accept)

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            verified = request.environ.get(CALLER_KEY)
            try:
                # Reused only from the same verifier: another may accept other audiences.
                if isinstance(verified, Caller) and request.environ.get(VERIFIER_KEY) in (
                    verifier,
                    iap,
                ):
                    _log.at(request.method, request.path)  # names the request in a refusal's line
                    g.caller = gate.authorize(verified, gate.default, path=request.path)
                else:
                    g.caller = gate.authenticate(
                        request.headers.getlist("Authorization"),
                        request.headers.getlist(SERVERLESS_HEADER),
                        policy=gate.default,
                        assertion=request.headers.getlist(IAP_HEADER),
                        path=request.path,
                        query=request.query_string.decode("latin-1"),
                        url_path=request.script_root + request.path,
                        method=request.method,
                    )
            except S2SAuthError as exc:
                denial = gate.deny(exc)
                abort(Response(denial.body, denial.status, list(denial.headers)))
            result: R = current_app.ensure_sync(view)(*args, **kwargs)
            return result

        return wrapper

    return decorator
