"""gRPC, sync: ID tokens on outgoing calls, verified callers on incoming ones.

Calling a service (Cloud Run serves gRPC end to end over HTTP/2)::

    channel = s2sauth.grpc.secure_channel("callee-xyz.a.run.app:443")
    stub = GreeterStub(channel)   # every call carries an ID token for https://callee-xyz.a.run.app

Receiving calls::

    verifier = s2sauth.Verifier(AUDIENCE, allowed_callers=[...])
    server = grpc.server(ThreadPoolExecutor(), interceptors=[IDTokenInterceptor(verifier=verifier)])

    class Greeter(GreeterServicer):
        def SayHello(self, request, context):
            caller = s2sauth.grpc.current_caller()

:mod:`s2sauth.grpc.aio` has the same names for ``grpc.aio`` channels and servers.

gRPC runs a call credential's plugin on a thread of its own for each call. The
plugin here answers from the provider's cache on that thread; on a miss it
returns at once, and gRPC's callback is called when the one fetch for that
audience (shared by every call waiting for it) ends: a burst of calls asks the
metadata server once, and no thread waits for it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

try:
    import grpc
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("s2sauth.grpc needs grpcio: pip install 's2sauth[grpc]'") from exc

from .._errors import S2SAuthError
from .._outbound import Audience, HeaderMode
from ..verify.http import EXEMPT
from ..verify.policy import Rule
from ._common import (
    CALLER,
    DEFAULT_EXEMPT,
    HEALTH_SERVICE,
    METHOD,
    IDTokenCallCredentials,
    behavior_of,
    channel_credentials,
    current_caller,
    inbound_gate,
    refusal,
    run_in,
    token_metadata,
    with_behavior,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..tokens.provider import IDTokenProvider
    from ..verify.verifier import Verifier
    from ._common import Handler

__all__ = [
    "DEFAULT_EXEMPT",
    "HEALTH_SERVICE",
    "IDTokenCallCredentials",
    "IDTokenInterceptor",
    "current_caller",
    "secure_channel",
]

# Shared with s2sauth.grpc.aio; shown as this module's.
IDTokenCallCredentials.__module__ = current_caller.__module__ = __name__


def secure_channel(
    target: str,
    *,
    audience: Audience = None,
    provider: IDTokenProvider | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    header: HeaderMode = "authorization",
    targets: Iterable[str] | None = None,
    **kw: Any,
) -> grpc.Channel:
    """A ``grpc.secure_channel`` whose every call carries an ID token.

    Args:
        target: the server, ``"callee-xyz.a.run.app:443"``.
        audience: as :class:`IDTokenCallCredentials`; by default ``https://`` and
            the target's host (``https://callee-xyz.a.run.app``).
        provider: as :class:`IDTokenCallCredentials`.
        credentials: the channel credentials; TLS with the system's roots by
            default. On loopback, ``grpc.local_channel_credentials()``.
        header: as :class:`IDTokenCallCredentials`.
        targets: as :class:`IDTokenCallCredentials`.
        kw: passed on to ``grpc.secure_channel`` (``options``, ``compression``).

    Raises:
        ConfigurationError: as :class:`IDTokenCallCredentials`.
    """
    composite = channel_credentials(credentials, audience, provider, header, targets)
    return grpc.secure_channel(target, composite, **kw)


class IDTokenInterceptor(grpc.ServerInterceptor):
    """Verify the ID token of every call before its handler runs, for ``grpc.server``.

    The token is read from the ``authorization`` and ``x-serverless-authorization``
    metadata with the same preference and Cloud Run rules as the HTTP adapters;
    the verified :class:`~s2sauth.Caller` is :func:`current_caller` inside the
    handler, for that RPC only. Unary and streaming methods alike.

    A rejected call ends with ``UNAUTHENTICATED`` (no token, or a bad one),
    ``PERMISSION_DENIED`` (a caller not allowed) or ``UNAVAILABLE`` (no
    verification keys), with a short detail that never holds the token; each
    refusal is one INFO line on the ``s2sauth`` logger. The check runs on the
    server's worker thread just before the handler, never on the thread gRPC
    runs interceptors on, so a key fetch cannot stall other calls. A method the
    server does not have gets gRPC's own ``UNIMPLEMENTED``.

    Threat model: whoever can reach the service can send any metadata. Only a
    token signed by Google's published keys, for this service's audience, from
    an allowed caller gets through; the token is never logged or echoed. Put it
    first in ``interceptors``, so no other interceptor acts on an unverified call.

    .. versionadded:: 0.1

    Args:
        verifier: checks tokens; its allow-list is the default policy.
        exempt: served without a token: service names (``"grpc.health.v1.Health"``,
            every method) or full method names (``"/pkg.Service/Method"``). The
            default, :data:`DEFAULT_EXEMPT`, is the health service; a list given
            here replaces it (``[*DEFAULT_EXEMPT, ...]`` keeps it).
        rules: per-method allow-lists: ``Rule("/pkg.Service", [...])`` covers every
            method of the service, ``Rule("/pkg.Service/Method", [...])`` one method;
            the longest match wins.

    Raises:
        ConfigurationError: invalid rules or exempt entries.
    """

    def __init__(
        self,
        *,
        verifier: Verifier,
        exempt: Iterable[str] = DEFAULT_EXEMPT,
        rules: Sequence[Rule] = (),
    ) -> None:
        self.gate = inbound_gate(verifier, exempt, rules)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """The call's handler, wrapped to run only for a verified, allowed caller."""
        gate, method = self.gate, handler_call_details.method
        policy = gate.route(METHOD, method)
        handler = continuation(handler_call_details)
        if policy is EXEMPT or handler is None:
            return handler
        headers = token_metadata(handler_call_details.invocation_metadata)

        def verified(context: grpc.ServicerContext) -> contextvars.Context:
            try:
                caller = gate.authenticate(*headers, policy=policy, path=method, method=METHOD)
            except S2SAuthError as exc:
                context.abort(*refusal(gate, exc))
            # A context of its own: the caller is set for this RPC's handler only.
            rpc = contextvars.copy_context()
            rpc.run(CALLER.set, caller)
            return rpc

        behavior = run_in(verified, behavior_of(handler), handler.response_streaming)
        return with_behavior(handler, behavior)
