"""FastAPI dependency that yields the verified caller of a request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

try:
    from fastapi import HTTPException, WebSocketException
    from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
    from fastapi.security.base import SecurityBase
    from starlette.requests import HTTPConnection
except ModuleNotFoundError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("s2sauth.fastapi needs FastAPI: pip install 's2sauth[fastapi]'") from exc

from . import _log
from ._errors import S2SAuthError
from .asgi import VERIFIER_KEY
from .verify.caller import Caller
from .verify.http import DEFAULT_REALM, IAP_HEADER, SERVERLESS_HEADER, Gate, Kind
from .verify.policy import CallerPolicy

if TYPE_CHECKING:  # pragma: no cover
    from .verify.verifier import Verifier

__all__ = ["IDTokenBearer"]

_DESCRIPTION = "A Google-signed OIDC ID token for this service's audience."
# FastAPI sets these itself for the JSON body it sends.
_BODY_HEADERS = frozenset({"Content-Type", "Content-Length"})


class IDTokenBearer(SecurityBase):
    """A dependency returning the verified :class:`~s2sauth.Caller`.

    Use it per route, ``caller: Caller = Depends(IDTokenBearer(verifier,
    allowed_callers=[...]))``, or app-wide in ``FastAPI(dependencies=[...])``.
    It declares an HTTP bearer security scheme in the OpenAPI schema. When
    :class:`s2sauth.asgi.IDTokenMiddleware` already verified the request with the
    same verifier, its caller is reused (no second verification) and only this
    dependency's allow-list is applied.

    A rejection raises :class:`~fastapi.HTTPException` with the middleware's
    status and headers; its body is FastAPI's ``{"detail": ...}`` holding the
    middleware's JSON object. In WebSocket routes it raises
    :class:`~fastapi.WebSocketException` with code 1008.

    Threat model: see :class:`s2sauth.asgi.IDTokenMiddleware`.

    .. versionadded:: 0.1

    Args:
        verifier: checks tokens.
        allowed_callers: this route's allow-list; ``None`` keeps the verifier's.
        realm: the realm named in ``WWW-Authenticate``.
        scheme_name: the security scheme's name in the OpenAPI schema.
        iap: an :class:`~s2sauth.iap.IAPVerifier`, to let in people signed in by
            Identity-Aware Proxy too (or pass it as ``verifier``: people only).
        accept: ``"service"``, ``"person"`` or ``"either"`` (the default with ``iap``).

    Raises:
        ConfigurationError: an invalid allow-list, realm or kind.

    .. versionchanged:: 0.2 ``iap`` and ``accept``.
    """

    def __init__(
        self,
        verifier: Verifier,
        *,
        allowed_callers: Iterable[str] | CallerPolicy | None = None,
        realm: str = DEFAULT_REALM,
        scheme_name: str = "GoogleIDToken",
        iap: Verifier | None = None,
        accept: Kind | None = None,
    ) -> None:
        self.gate = Gate(
            verifier, allowed_callers=allowed_callers, realm=realm, iap=iap, accept=accept
        )
        self.model = HTTPBearerModel(bearerFormat="JWT", description=_DESCRIPTION)
        self.scheme_name = scheme_name

    async def __call__(self, connection: HTTPConnection) -> Caller:
        """The request's caller, verified and allowed by this dependency's policy."""
        scope = connection.scope
        verified = scope.get("s2sauth.caller")
        try:
            # Reused only from the same verifier: another may accept other audiences.
            if isinstance(verified, Caller) and scope.get(VERIFIER_KEY) in (
                self.gate.verifier,
                self.gate.iap,
            ):
                _log.at(scope.get("method", "GET"), scope["path"])  # for a refusal's log line
                return self.gate.authorize(verified, self.gate.default, path=connection.url.path)
            authorization = connection.headers.getlist("Authorization")
            serverless = connection.headers.getlist(SERVERLESS_HEADER)
            caller = self.gate.recall(authorization, serverless, self.gate.default)
            if caller is not None:
                return caller
            return await self.gate.aauthenticate(
                authorization,
                serverless,
                policy=self.gate.default,
                assertion=connection.headers.getlist(IAP_HEADER),
                path=connection.url.path,
                query=scope.get("query_string", b"").decode("latin-1"),
                url_path=scope["path"],
                method=scope.get("method", "GET"),
            )
        except S2SAuthError as exc:
            denial = self.gate.deny(exc)
            if connection.scope["type"] == "websocket":
                raise WebSocketException(1008, denial.payload["detail"]) from None
            headers = {k: v for k, v in denial.headers if k not in _BODY_HEADERS}
            raise HTTPException(denial.status, dict(denial.payload), headers) from None
