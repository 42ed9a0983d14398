"""The gRPC part of ``s2sauth demo``, when grpcio is installed (the ``grpc`` extra).

A ``grpc.server`` behind :class:`s2sauth.grpc.IDTokenInterceptor` serves one method,
``/demo.Greeter/SayHello`` (bytes in and out: no generated code), and a health check
that needs no token; sync and ``grpc.aio`` channels with s2sauth's call credentials
call it. Outcomes are gRPC status names where the HTTP rows have status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # pragma: no cover
    import grpc

    from .._http import HTTPTransport
    from ..emulator import Emulator
    from ..tokens.provider import IDTokenProvider
    from ..verify.verifier import Verifier
    from .demo import Call

__all__ = ["GreeterService", "calls", "describe", "serve"]

#: The one method the demo's gRPC service has.
METHOD = "/demo.Greeter/SayHello"
#: The standard health check; exempt by default.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# A HealthCheckResponse with status SERVING, encoded by hand: field 1, varint 1.
_SERVING = b"\x08\x01"
_TIMEOUT = 10.0


@dataclass(frozen=True)
class GreeterService:
    """The running gRPC service: where it listens, and the verifier guarding it."""

    target: str
    audience: str
    verifier: Verifier


def serve(
    stack: contextlib.ExitStack,
    emulator: Emulator,
    transport: HTTPTransport,
    allowed: Sequence[str],
    port: int = 0,
) -> GreeterService | None:
    """Start the service on ``127.0.0.1:port`` (0: a free one) until ``stack`` closes.

    Returns ``None``, starting nothing, when grpcio is not installed.

    Raises:
        OSError: the port cannot be listened on.
    """
    if importlib.util.find_spec("grpc") is None:
        return None
    from concurrent import futures

    import grpc

    from ..grpc import IDTokenInterceptor, current_caller
    from ..verify.verifier import Verifier
    from ._serve import bind

    if not port:
        # The verifier needs the audience, https://HOST:PORT, before the server exists.
        with bind() as sock:
            port = sock.getsockname()[1]
    audience = f"https://127.0.0.1:{port}"
    verifier = Verifier(
        audience, allowed_callers=list(allowed), certs_url=emulator.jwks_url, transport=transport
    )

    def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        return f"hello, {current_caller().email}".encode()

    def check(request: bytes, context: grpc.ServicerContext) -> bytes:
        return _SERVING

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="s2sauth-grpc"),
        interceptors=[IDTokenInterceptor(verifier=verifier)],
    )
    server.add_generic_rpc_handlers(
        (
            _handlers("demo.Greeter", {"SayHello": say_hello}),
            _handlers("grpc.health.v1.Health", {"Check": check}),
        )
    )
    try:
        server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError as exc:  # grpcio reports a port it cannot bind this way
        raise OSError(f"port {port}: {exc}") from exc
    server.start()
    stack.callback(lambda: server.stop(None).wait(_TIMEOUT))
    return GreeterService(f"127.0.0.1:{port}", audience, verifier)


def _handlers(service: str, methods: dict[str, Callable[..., bytes]]) -> grpc.GenericRpcHandler:
    import grpc

    return grpc.method_handlers_generic_handler(
        service,
        {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()},
    )


def describe(out: TextIO, service: GreeterService | None, verifiers: dict[str, Verifier]) -> None:
    """Print the service's line of the demo's list (or how to get it); count its verifier."""
    if service is None:
        print("  (pip install 's2sauth[grpc]' adds a gRPC service)", file=out)
        return
    verifiers["grpc"] = service.verifier
    print(f"  grpc       {service.target}  (grpc.server, IDTokenInterceptor)", file=out)


def calls(
    service: GreeterService | None,
    emulator: Emulator,
    caller: IDTokenProvider,
    stranger: IDTokenProvider,
    stack: contextlib.ExitStack,
) -> list[Call]:
    """The gRPC rows of the demo: the caller (sync and aio), a stranger, no token, expired."""
    if service is None:
        return []
    import grpc

    from .. import grpc as s2sgrpc
    from ..grpc import aio as s2sgrpc_aio
    from .demo import CALLER, Call

    # Plaintext loopback: local credentials, which gRPC lets carry call credentials.
    local = grpc.local_channel_credentials()
    target = service.target

    def channel_as(provider: IDTokenProvider) -> grpc.Channel:
        channel = s2sgrpc.secure_channel(target, provider=provider, credentials=local)
        return stack.enter_context(channel)

    as_caller, as_stranger = channel_as(caller), channel_as(stranger)
    bare = stack.enter_context(grpc.secure_channel(target, local))
    now = int(time.time())
    expired = emulator.mint(
        service.audience, account=CALLER, claims={"iat": now - 7200, "exp": now - 3600}
    )

    def call(
        channel: grpc.Channel, method: str = METHOD, token: str | None = None
    ) -> Callable[[], str]:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        return lambda: _status(lambda: stub(b"", timeout=_TIMEOUT, metadata=metadata))

    async def with_aio() -> None:
        async with s2sgrpc_aio.secure_channel(target, provider=caller, credentials=local) as aio:
            stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = aio.unary_unary(METHOD)
            await stub(b"", timeout=_TIMEOUT)

    return [
        Call("grpc", "grpc", "caller", "OK", call(as_caller)),
        Call("grpc.aio", "grpc", "caller", "OK", lambda: _status(lambda: asyncio.run(with_aio()))),
        Call("grpc", "grpc", "no token", "UNAUTHENTICATED", call(bare)),
        Call("grpc", "grpc", "caller, expired token", "UNAUTHENTICATED", call(bare, token=expired)),
        Call("grpc", "grpc", "stranger", "PERMISSION_DENIED", call(as_stranger)),
        Call("grpc", "grpc health", "no token (exempt)", "OK", call(bare, HEALTH_CHECK)),
    ]


def _status(send: Callable[[], Any]) -> str:
    import grpc

    try:
        send()
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "OK"
