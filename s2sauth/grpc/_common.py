"""What the sync and ``grpc.aio`` adapters share: the call credentials, the caller, the gate."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

try:
    import grpc
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("s2sauth.grpc needs grpcio: pip install 's2sauth[grpc]'") from exc

from .._errors import ConfigurationError, S2SAuthError
from .._outbound import Audience, HeaderMode, IDTokenRules
from ..tokens.provider import default_provider
from ..verify.caller import Caller
from ..verify.http import Gate
from ..verify.policy import Rule

if TYPE_CHECKING:  # pragma: no cover
    import concurrent.futures

    from ..tokens.provider import IDTokenProvider
    from ..verify.verifier import Verifier

    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]

T = TypeVar("T")
Behavior = Callable[[Any, Any], Any]

#: The standard health service, which probes call without a token.
HEALTH_SERVICE = "grpc.health.v1.Health"
#: What the interceptors serve without a token unless told otherwise.
DEFAULT_EXEMPT: tuple[str, ...] = (HEALTH_SERVICE,)
#: gRPC calls are HTTP/2 POSTs: the method a route is resolved for (a ``Rule``
#: limited to other HTTP methods never applies).
METHOD = "POST"

CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("s2sauth.grpc.caller")


def current_caller() -> Caller:
    """The verified caller of the RPC being handled, inside a handler.

    :class:`s2sauth.grpc.IDTokenInterceptor` (and its :mod:`s2sauth.grpc.aio`
    twin) sets it for that RPC only: concurrent RPCs each see their own.

    Raises:
        LookupError: not inside an RPC the interceptor verified (an exempt
            method, or no interceptor).
    """
    try:
        return CALLER.get()
    except LookupError:
        raise LookupError(
            "no verified caller here: current_caller() works inside the handler of an RPC "
            "that s2sauth's IDTokenInterceptor verified (not in exempt methods)"
        ) from None


# -- outbound -------------------------------------------------------------------------------


def _call_url(service_url: str, method_name: str) -> str:
    # gRPC's service_url is "https://HOST[:PORT]/pkg.Service" over TLS (port 443 left out)
    # and "://HOST:PORT/pkg.Service" over local credentials; ID token audiences are https.
    rest = service_url.partition("://")[2] or service_url
    return f"https://{rest}/{method_name}"


class _Plugin(grpc.AuthMetadataPlugin):
    def __init__(self, rules: IDTokenRules, provider: IDTokenProvider) -> None:
        self._rules = rules
        self._provider = provider
        self._headers = tuple(name.lower() for name in rules.header_names)

    def __call__(
        self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback
    ) -> None:
        url = _call_url(context.service_url, context.method_name)
        try:
            audience = self._rules.key_for(url)
            if audience is None:
                raise ConfigurationError("it is not among the targets")
            future = self._provider.token_future(audience)
        except Exception as exc:
            _fail(callback, f"no ID token for a call to {url}: {exc}")
            return
        # Done already on a cache hit (the callback runs now, on this thread); else it
        # runs on the fetching worker when the one fetch for this audience ends.
        future.add_done_callback(lambda done: self._answer(callback, audience, done))

    def _answer(
        self,
        callback: grpc.AuthMetadataPluginCallback,
        audience: str,
        future: concurrent.futures.Future[str],
    ) -> None:
        error = future.exception()
        if error is not None:
            _fail(callback, f"no ID token for audience {audience!r}: {error}")
            return
        value = f"Bearer {future.result()}"
        callback(tuple((name, value) for name in self._headers), None)


def _fail(callback: grpc.AuthMetadataPluginCallback, message: str) -> None:
    # gRPC fails the call with UNAVAILABLE and "Getting metadata from plugin failed with
    # error: s2sauth: ..." (s2sauth's messages never hold a token).
    callback((), Exception(f"s2sauth: {message}"))


class IDTokenCallCredentials(grpc.CallCredentials):
    """Call credentials that put a Google ID token on every call.

    Use them with any channel credentials, ``grpc.composite_channel_credentials(
    grpc.ssl_channel_credentials(), IDTokenCallCredentials())``, or per call
    (``stub.Method(request, credentials=...)``); ``secure_channel`` does the
    first. The same object works for ``grpc`` and ``grpc.aio`` channels.

    The token comes from the provider's cache without waiting. When it must be
    fetched, the call waits for the one fetch for its audience, shared by every
    concurrent call, without holding a thread. When no token can be had, the
    call fails with ``UNAVAILABLE`` and a message saying why; it is never sent
    without its token.

    .. versionadded:: 0.1

    Args:
        audience: ``None`` for ``https://HOST[:PORT]`` of the call's authority
            (the channel target's host, port 443 left out: what Cloud Run accepts),
            a fixed string, or a callable given ``https://HOST[:PORT]/pkg.Service/Method``.
        provider: an ``IDTokenProvider``; the shared ``default_provider()`` by default.
        header: ``"authorization"``, ``"x-serverless-authorization"`` or ``"both"``.
        targets: origins (``"https://callee-xyz.a.run.app"``) or URL prefixes
            (``"https://HOST/pkg.Service/"``) that may get a token; a call to any
            other fails. ``None``: every call these credentials are used on.

    Raises:
        ConfigurationError: a bad ``audience``, ``header`` or ``targets``.
    """

    def __init__(
        self,
        audience: Audience = None,
        *,
        provider: IDTokenProvider | None = None,
        header: HeaderMode = "authorization",
        targets: Iterable[str] | None = None,
    ) -> None:
        rules = IDTokenRules(audience, header=header, targets=targets)
        self.audience = audience
        self.provider = provider if provider is not None else default_provider()
        plugin = _Plugin(rules, self.provider)
        # A grpc.CallCredentials holds C-core credentials, which metadata_call_credentials
        # makes for a plugin; holding them, this is a grpc.CallCredentials itself.
        made = grpc.metadata_call_credentials(plugin, name="s2sauth")
        super().__init__(made._credentials)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"IDTokenCallCredentials(audience={self.audience!r}, provider={self.provider!r})"


def channel_credentials(
    credentials: grpc.ChannelCredentials | None,
    audience: Audience,
    provider: IDTokenProvider | None,
    header: HeaderMode,
    targets: Iterable[str] | None,
) -> grpc.ChannelCredentials:
    """``credentials`` (TLS with the system's roots when ``None``) plus ID tokens."""
    tokens = IDTokenCallCredentials(audience, provider=provider, header=header, targets=targets)
    if credentials is None:
        credentials = grpc.ssl_channel_credentials()
    return grpc.composite_channel_credentials(credentials, tokens)


# -- inbound --------------------------------------------------------------------------------


def _exempt_path(entry: object) -> str:
    # "pkg.Service" and "/pkg.Service" mean every method of the service; a full method
    # name "/pkg.Service/Method" means that method only.
    parts = entry.strip("/").split("/") if isinstance(entry, str) else []
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigurationError(
            f"exempt entries are gRPC service names ('{HEALTH_SERVICE}') or full method "
            f"names ('/pkg.Service/Method'), not {entry!r}"
        )
    return f"/{parts[0]}/" if len(parts) == 1 else f"/{parts[0]}/{parts[1]}"


def inbound_gate(verifier: Verifier, exempt: Iterable[str], rules: Sequence[Rule]) -> Gate:
    """The :class:`Gate` of an interceptor: full method names are its paths.

    A full method name ``/pkg.Service/Method`` is a path, so the HTTP adapters'
    route policy applies as it is: ``Rule("/pkg.Service")`` covers every method of
    the service (a prefix on segment boundaries), the longest rule wins.
    """
    if isinstance(exempt, str):
        exempt = [exempt]
    return Gate(verifier, exempt=[_exempt_path(entry) for entry in exempt], rules=rules)


def token_metadata(metadata: Iterable[tuple[str, Any]] | None) -> tuple[list[str], list[str]]:
    """The ``authorization`` and ``x-serverless-authorization`` values of a call's metadata."""
    authorization: list[str] = []
    serverless: list[str] = []
    for key, value in metadata or ():  # gRPC hands metadata keys over in lower case
        if key == "authorization":
            authorization.append(value)
        elif key == "x-serverless-authorization":
            serverless.append(value)
    return authorization, serverless


def refusal(gate: Gate, exc: S2SAuthError) -> tuple[grpc.StatusCode, str]:
    """The status and short detail a rejected call ends with: the HTTP answer, in gRPC terms."""
    denial = gate.deny(exc)
    code = {403: grpc.StatusCode.PERMISSION_DENIED, 503: grpc.StatusCode.UNAVAILABLE}.get(
        denial.status, grpc.StatusCode.UNAUTHENTICATED
    )
    return code, denial.payload["detail"]


# (request streaming, response streaming) -> the handler's behaviour attribute and factory.
_KINDS: dict[tuple[bool, bool], tuple[str, Callable[..., Handler]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def behavior_of(handler: Handler) -> Behavior:
    """The function ``handler`` calls for an RPC, whatever its kind."""
    name = _KINDS[handler.request_streaming, handler.response_streaming][0]
    behavior: Behavior = getattr(handler, name)
    return behavior


def with_behavior(handler: Handler, behavior: Behavior) -> Handler:
    """A handler of the same kind and (de)serializers as ``handler`` that calls ``behavior``."""
    factory = _KINDS[handler.request_streaming, handler.response_streaming][1]
    return factory(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def run_in(
    context: Callable[[Any], contextvars.Context], behavior: Behavior, streaming: bool
) -> Behavior:
    """``behavior`` run in the context ``context(servicer_context)`` gives, every step of it.

    A response iterator's steps run there too, so the handler's generator sees the
    caller whichever thread advances it.
    """
    if streaming:

        def stream(request: Any, servicer_context: Any) -> Iterator[Any]:
            rpc = context(servicer_context)
            return _InContext(rpc, iter(rpc.run(behavior, request, servicer_context)))

        return stream

    def unary(request: Any, servicer_context: Any) -> Any:
        return context(servicer_context).run(behavior, request, servicer_context)

    return unary


class _InContext(Iterator[T]):
    def __init__(self, context: contextvars.Context, iterator: Iterator[T]) -> None:
        self._context = context
        self._iterator = iterator

    def __next__(self) -> T:
        return self._context.run(next, self._iterator)
