"""gRPC for ``grpc.aio``: the names of :mod:`s2sauth.grpc`, for asyncio channels and servers.

::

    async with s2sauth.grpc.aio.secure_channel("callee-xyz.a.run.app:443") as channel:
        reply = await GreeterStub(channel).SayHello(request)

    server = grpc.aio.server(interceptors=[IDTokenInterceptor(verifier=verifier)])

Neither side blocks the event loop: call credentials never wait for a fetch
(see :mod:`s2sauth.grpc`), and the interceptor verifies with the verifier's
async path, which fetches keys in a worker thread.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

try:
    import grpc
    import grpc.aio
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


def secure_channel(
    target: str,
    *,
    audience: Audience = None,
    provider: IDTokenProvider | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    header: HeaderMode = "authorization",
    targets: Iterable[str] | None = None,
    **kw: Any,
) -> grpc.aio.Channel:
    """A ``grpc.aio.secure_channel`` whose every call carries an ID token.

    Arguments as :func:`s2sauth.grpc.secure_channel`; ``kw`` goes to
    ``grpc.aio.secure_channel`` (``options``, ``compression``, ``interceptors``).

    Raises:
        ConfigurationError: as :class:`IDTokenCallCredentials`.
    """
    composite = channel_credentials(credentials, audience, provider, header, targets)
    return grpc.aio.secure_channel(target, composite, **kw)


class IDTokenInterceptor(grpc.aio.ServerInterceptor):
    """Verify the ID token of every call before its handler runs, for ``grpc.aio.server``.

    Everything as :class:`s2sauth.grpc.IDTokenInterceptor` (same arguments, same
    statuses, :func:`current_caller` in the handler), and the event loop never
    waits: a key fetch runs in a worker thread. Sync handlers run on the
    server's ``migration_thread_pool`` see the caller too.

    .. versionadded:: 0.1

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

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """The call's handler once its caller is verified and allowed, else one that refuses."""
        gate, method = self.gate, handler_call_details.method
        policy = gate.route(METHOD, method)
        handler = await continuation(handler_call_details)
        if policy is EXEMPT or handler is None:
            return handler
        headers = token_metadata(handler_call_details.invocation_metadata)
        caller = gate.recall(*headers, policy)
        if caller is None:
            try:
                caller = await gate.aauthenticate(
                    *headers, policy=policy, path=method, method=METHOD
                )
            except S2SAuthError as exc:
                code, detail = refusal(gate, exc)

                async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                    await context.abort(code, detail)

                return with_behavior(handler, refuse)
        # grpc.aio serves each RPC in a task of its own, and its handler in that task:
        # the caller is set in that task's context, for this RPC only.
        CALLER.set(caller)
        behavior = behavior_of(handler)
        if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
            return handler
        # A sync handler runs on the migration_thread_pool, outside the task's context.
        rpc = contextvars.copy_context()
        return with_behavior(handler, run_in(lambda _: rpc, behavior, handler.response_streaming))
