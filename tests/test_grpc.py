"""gRPC, both directions, sync and grpc.aio: real servers and channels on loopback.

Servers are ``grpc.server`` (a thread pool) and ``grpc.aio.server`` (on an event
loop in a thread of its own) behind the interceptors, with generic handlers and
bytes in and out, so no protobuf code is generated; the health service is the
real one from grpcio-health-checking. Channels use local TCP credentials, which
allow call credentials. The emulator mints the tokens and serves the keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from support import throwaway_tls, wait_for

import s2sauth.grpc
import s2sauth.grpc.aio
from s2sauth import ConfigurationError, IDTokenProvider, MetadataServerSource, Verifier
from s2sauth._http import HTTPRequest, HTTPResponse, HTTPTransport, Transport
from s2sauth.emulator import Emulator
from s2sauth.grpc import current_caller
from s2sauth.verify.policy import Rule

CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
OPS = "ops@demo-project.iam.gserviceaccount.com"
LOCAL = grpc.LocalConnectionType.LOCAL_TCP
TIMEOUT = 10

# -- the service: who called, as bytes -------------------------------------------------------


def _who() -> str:
    try:
        return current_caller().email or "?"
    except LookupError:
        return "-"


def _who_unary(request: bytes, context: Any) -> bytes:
    return _who().encode()


def _who_stream(request: bytes, context: Any) -> Iterator[bytes]:
    for _ in range(int(request or b"3")):
        yield _who().encode()


def _who_chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for _ in requests:
        yield _who().encode()


def _who_slowly(request: bytes, context: Any) -> bytes:
    before = _who()
    time.sleep(float(request))
    return f"{before} {_who()}".encode()


async def _awho_unary(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(0)
    return _who().encode()


async def _awho_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(int(request or b"3")):
        await asyncio.sleep(0)
        yield _who().encode()


async def _awho_chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield _who().encode()


async def _awho_slowly(request: bytes, context: Any) -> bytes:
    before = _who()
    await asyncio.sleep(float(request))
    return f"{before} {_who()}".encode()


def _handlers(aio: bool) -> tuple[grpc.GenericRpcHandler, ...]:
    unary, stream, chat, slowly = (
        (_awho_unary, _awho_stream, _awho_chat, _awho_slowly)
        if aio
        else (_who_unary, _who_stream, _who_chat, _who_slowly)
    )
    echo = {
        "Who": grpc.unary_unary_rpc_method_handler(unary),
        "Count": grpc.unary_stream_rpc_method_handler(stream),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Slow": grpc.unary_unary_rpc_method_handler(slowly),
        # Sync handlers on an aio server run on its migration thread pool.
        "SyncWho": grpc.unary_unary_rpc_method_handler(_who_unary),
        "SyncCount": grpc.unary_stream_rpc_method_handler(_who_stream),
    }
    return (
        grpc.method_handlers_generic_handler("test.Echo", echo),
        grpc.method_handlers_generic_handler(
            "test.Admin", {"Reset": grpc.unary_unary_rpc_method_handler(unary)}
        ),
        grpc.method_handlers_generic_handler(
            "test.Public", {"Ping": grpc.unary_unary_rpc_method_handler(unary)}
        ),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _sync_server(port: int, interceptor: Any, workers: int = 8) -> Iterator[None]:
    server = grpc.server(futures.ThreadPoolExecutor(workers), interceptors=[interceptor])
    server.add_generic_rpc_handlers(_handlers(aio=False))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_secure_port(f"localhost:{port}", grpc.local_server_credentials(LOCAL))
    server.start()
    try:
        yield
    finally:
        server.stop(None).wait(TIMEOUT)


@contextlib.contextmanager
def _aio_server(port: int, interceptor: Any) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="aio-server", daemon=True)
    thread.start()
    pool = futures.ThreadPoolExecutor(4)

    async def start() -> grpc.aio.Server:
        server = grpc.aio.server(migration_thread_pool=pool, interceptors=[interceptor])
        server.add_generic_rpc_handlers(_handlers(aio=True))
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_secure_port(f"localhost:{port}", grpc.local_server_credentials(LOCAL))
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(TIMEOUT)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()
        pool.shutdown()


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The emulator with a caller, a stranger and an operator account."""
    with Emulator((CALLER, STRANGER, OPS), signing_key=emulator_key) as emu:
        yield emu


@pytest.fixture(scope="module")
def transport() -> Iterator[HTTPTransport]:
    """One connection pool to the emulator for every fetch here."""
    pool = HTTPTransport()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def providers(emulator: Emulator, transport: HTTPTransport) -> dict[str, IDTokenProvider]:
    """A token provider per account, their caches shared by the module's tests."""
    return {
        account: IDTokenProvider(
            MetadataServerSource(account, host=emulator.host, transport=transport)
        )
        for account in (CALLER, STRANGER, OPS)
    }


class Service:
    """A running server behind the interceptor: where it is, and how to call it."""

    def __init__(self, port: int, verifier: Verifier) -> None:
        self.port = port
        self.target = f"localhost:{port}"
        self.audience = f"https://localhost:{port}"
        self.verifier = verifier

    def channel(self, provider: IDTokenProvider | None = None, **kw: Any) -> grpc.Channel:
        """A channel to the service: with s2sauth's call credentials when given a provider."""
        credentials = grpc.local_channel_credentials(LOCAL)
        if provider is None and not kw:
            return grpc.secure_channel(self.target, credentials)
        return s2sauth.grpc.secure_channel(
            self.target, provider=provider, credentials=credentials, **kw
        )

    def aio_channel(self, provider: IDTokenProvider, **kw: Any) -> grpc.aio.Channel:
        """An aio channel with s2sauth's call credentials (call inside the event loop)."""
        return s2sauth.grpc.aio.secure_channel(
            self.target, provider=provider, credentials=grpc.local_channel_credentials(LOCAL), **kw
        )


Serve = Callable[..., Service]


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    """The server kind: grpc.server or grpc.aio.server, each with its own interceptor."""
    return str(request.param)


@pytest.fixture
def serve(kind: str, emulator: Emulator, transport: HTTPTransport) -> Iterator[Serve]:
    """Start a server of ``kind`` whose audience is its own https://localhost:PORT."""
    with contextlib.ExitStack() as stack:

        def start(
            *,
            certs_url: str | None = None,
            allowed: tuple[str, ...] = (CALLER, OPS),
            keys_transport: Transport | None = None,
            **kw: Any,
        ) -> Service:
            port = _free_port()
            verifier = Verifier(
                f"https://localhost:{port}",
                allowed_callers=list(allowed),
                certs_url=certs_url or emulator.jwks_url,
                transport=keys_transport or transport,
            )
            module: Any = s2sauth.grpc if kind == "sync" else s2sauth.grpc.aio
            interceptor = module.IDTokenInterceptor(verifier=verifier, **kw)
            server = _sync_server if kind == "sync" else _aio_server
            stack.enter_context(server(port, interceptor))
            return Service(port, verifier)

        yield start


def _dead_certs_url() -> str:
    return f"http://127.0.0.1:{_free_port()}/certs"


def _rejection(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    details: str = error.details()
    assert "eyJ" not in details  # never a token
    return error.code(), details


def _who_call(channel: grpc.Channel, method: str = "/test.Echo/Who", **kw: Any) -> str:
    reply: bytes = channel.unary_unary(method)(b"", timeout=TIMEOUT, **kw)
    return reply.decode()


# -- the contract, against both servers, with a sync channel ---------------------------------


def test_allowed_caller_every_kind_of_method(
    serve: Serve, providers: dict[str, IDTokenProvider]
) -> None:
    """Unary-unary, unary-stream and stream-stream each run for the caller, who is visible."""
    service = serve()
    with service.channel(providers[CALLER]) as channel:
        assert _who_call(channel) == CALLER
        streamed = channel.unary_stream("/test.Echo/Count")(b"3", timeout=TIMEOUT)
        assert [reply.decode() for reply in streamed] == [CALLER] * 3
        chat = channel.stream_stream("/test.Echo/Chat")(iter([b"a", b"b"]), timeout=TIMEOUT)
        assert [reply.decode() for reply in chat] == [CALLER] * 2


def test_sync_handlers_see_the_caller(serve: Serve, providers: dict[str, IDTokenProvider]) -> None:
    """Sync handlers (on an aio server: on its migration thread pool) see the caller too."""
    service = serve()
    with service.channel(providers[OPS]) as channel:
        assert _who_call(channel, "/test.Echo/SyncWho") == OPS
        streamed = channel.unary_stream("/test.Echo/SyncCount")(b"2", timeout=TIMEOUT)
        assert [reply.decode() for reply in streamed] == [OPS] * 2


def test_stranger_is_permission_denied(serve: Serve, providers: dict[str, IDTokenProvider]) -> None:
    """A valid token from a caller not on the list: PERMISSION_DENIED, for streams too."""
    service = serve()
    with service.channel(providers[STRANGER]) as channel:
        assert _rejection(lambda: _who_call(channel)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "this caller is not allowed",
        )
        stream = channel.unary_stream("/test.Echo/Count")
        code, _ = _rejection(lambda: list(stream(b"3", timeout=TIMEOUT)))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        chat = channel.stream_stream("/test.Echo/Chat")
        code, _ = _rejection(lambda: list(chat(iter([b"a"]), timeout=TIMEOUT)))
        assert code is grpc.StatusCode.PERMISSION_DENIED


def test_bad_tokens_are_unauthenticated(
    serve: Serve, emulator: Emulator, providers: dict[str, IDTokenProvider]
) -> None:
    """No token, a token for another audience, an expired one: UNAUTHENTICATED, saying which."""
    service = serve()
    with service.channel() as bare:
        assert _rejection(lambda: _who_call(bare)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "no bearer token in the request",
        )
        now = int(time.time())
        expired = emulator.mint(
            service.audience, account=CALLER, claims={"iat": now - 7200, "exp": now - 3600}
        )
        metadata = (("authorization", f"Bearer {expired}"),)
        assert _rejection(lambda: _who_call(bare, metadata=metadata)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "the token has expired",
        )
        chat = bare.stream_stream("/test.Echo/Chat")
        code, _ = _rejection(lambda: list(chat(iter([b"a"]), timeout=TIMEOUT)))
        assert code is grpc.StatusCode.UNAUTHENTICATED
    # A token for another audience, sent here on purpose (targets says so).
    wrong = {"audience": "https://another.example", "targets": [service.audience]}
    with service.channel(providers[CALLER], **wrong) as other:
        assert _rejection(lambda: _who_call(other)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "the token is for another audience",
        )


def test_keys_down_is_unavailable(serve: Serve, providers: dict[str, IDTokenProvider]) -> None:
    """No verification keys to be had: UNAVAILABLE, never a pass."""
    service = serve(certs_url=_dead_certs_url())
    with service.channel(providers[CALLER]) as channel:
        assert _rejection(lambda: _who_call(channel)) == (
            grpc.StatusCode.UNAVAILABLE,
            "verification keys are unavailable, try again later",
        )


def test_x_serverless_authorization(serve: Serve, providers: dict[str, IDTokenProvider]) -> None:
    """The token in x-serverless-authorization (or both headers) is found and verified."""
    service = serve()
    for header in ("x-serverless-authorization", "both"):
        with service.channel(providers[CALLER], header=header) as channel:
            assert _who_call(channel) == CALLER


def test_health_is_exempt_by_default(serve: Serve) -> None:
    """The standard health service answers without a token; with exempt=[] it needs one."""
    open_service, closed_service = serve(), serve(exempt=[])
    request = health_pb2.HealthCheckRequest()
    with open_service.channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        code, _ = _rejection(lambda: _who_call(channel))
        assert code is grpc.StatusCode.UNAUTHENTICATED
    with closed_service.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        code, _ = _rejection(lambda: stub.Check(request, timeout=TIMEOUT))
        assert code is grpc.StatusCode.UNAUTHENTICATED


def test_rules_and_exemptions_by_method_name(
    serve: Serve, providers: dict[str, IDTokenProvider]
) -> None:
    """A Rule on a service narrows its callers; an exempt method needs no token, has no caller."""
    service = serve(
        rules=[Rule("/test.Admin", [OPS])],
        exempt=[*s2sauth.grpc.DEFAULT_EXEMPT, "/test.Public/Ping"],
    )
    with service.channel(providers[CALLER]) as caller, service.channel(providers[OPS]) as ops:
        assert _who_call(caller) == CALLER
        code, _ = _rejection(lambda: _who_call(caller, "/test.Admin/Reset"))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert _who_call(ops, "/test.Admin/Reset") == OPS
    with service.channel() as bare:
        assert _who_call(bare, "/test.Public/Ping") == "-"


def test_a_whole_service_exempt_by_its_name(serve: Serve) -> None:
    """exempt=["test.Public"] opens every method of that service, and nothing else."""
    service = serve(exempt=["test.Public"])
    with service.channel() as bare:
        assert _who_call(bare, "/test.Public/Ping") == "-"
        code, _ = _rejection(lambda: _who_call(bare))
        assert code is grpc.StatusCode.UNAUTHENTICATED


def test_each_rpc_sees_its_own_caller(serve: Serve, providers: dict[str, IDTokenProvider]) -> None:
    """Concurrent RPCs of two callers each see their own caller, before and after sleeping."""
    service = serve()
    with service.channel(providers[CALLER]) as caller, service.channel(providers[OPS]) as ops:
        _who_call(caller), _who_call(ops)  # warm both token caches
        calls = [
            (expected, channel.unary_unary("/test.Echo/Slow").future(b"0.2", timeout=TIMEOUT))
            for _ in range(4)
            for expected, channel in ((CALLER, caller), (OPS, ops))
        ]
        for expected, call in calls:
            assert call.result().decode() == f"{expected} {expected}"


@pytest.mark.parametrize("kind", ["sync"])
def test_the_caller_does_not_outlive_its_rpc(
    kind: str, emulator: Emulator, transport: HTTPTransport, providers: dict[str, IDTokenProvider]
) -> None:
    """On a server with one worker thread, an exempt RPC after a verified one sees no caller."""
    port = _free_port()
    verifier = Verifier(
        f"https://localhost:{port}",
        allowed_callers=[CALLER],
        certs_url=emulator.jwks_url,
        transport=transport,
    )
    interceptor = s2sauth.grpc.IDTokenInterceptor(verifier=verifier, exempt=["test.Public"])
    with (
        _sync_server(port, interceptor, workers=1),
        grpc.secure_channel(
            f"localhost:{port}",
            grpc.local_channel_credentials(LOCAL),
        ) as bare,
    ):
        tokens = s2sauth.grpc.IDTokenCallCredentials(provider=providers[CALLER])
        assert _who_call(bare, credentials=tokens) == CALLER
        assert _who_call(bare, "/test.Public/Ping") == "-"
    with pytest.raises(LookupError, match="current_caller"):
        current_caller()


def test_one_metadata_fetch_for_a_burst(
    serve: Serve, emulator: Emulator, transport: HTTPTransport
) -> None:
    """Fifty concurrent calls with a cold cache: one identity fetch, and no thread waits on it."""
    service = serve()
    provider = IDTokenProvider(
        MetadataServerSource(CALLER, host=emulator.host, transport=transport)
    )
    with service.channel(provider) as channel:
        grpc.channel_ready_future(channel).result(TIMEOUT)  # connected, but no call yet
        before = emulator.counters["identity"]
        threads = threading.active_count()
        emulator.inject("metadata", delay=1.0)
        try:
            calls = [
                channel.unary_unary("/test.Echo/Who").future(b"", timeout=TIMEOUT)
                for _ in range(50)
            ]
            wait_for(lambda: emulator.counters["identity"] > before)
            time.sleep(0.3)  # the fetch takes 1 s: every plugin call has returned by now
            # gRPC starts a thread per plugin call; none of the 50 is left waiting for the token.
            assert threading.active_count() - threads < 25
            assert [call.result().decode() for call in calls] == [CALLER] * 50
        finally:
            emulator.clear_faults()
    assert emulator.counters["identity"] - before == 1
    assert provider.stats.fetches == 1


def test_no_token_fails_the_call_with_the_reason(serve: Serve, emulator: Emulator) -> None:
    """The metadata server refusing: UNAVAILABLE, naming the audience and the reason."""
    service = serve()
    nobody = "nobody@demo-project.iam.gserviceaccount.com"  # not an account of the emulator
    source = MetadataServerSource(nobody, host=emulator.host)
    with service.channel(IDTokenProvider(source)) as channel:
        code, details = _rejection(lambda: _who_call(channel))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert f"s2sauth: no ID token for audience '{service.audience}'" in details
    assert "404" in details


def test_targets_keep_tokens_home(serve: Serve, providers: dict[str, IDTokenProvider]) -> None:
    """A call to a host outside targets fails before any token is attached."""
    service = serve()
    with service.channel(providers[CALLER], targets=["https://callee.example"]) as channel:
        code, details = _rejection(lambda: _who_call(channel))
    assert code is grpc.StatusCode.UNAVAILABLE
    assert "not among the targets" in details
    with service.channel(providers[CALLER], targets=[service.audience]) as channel:
        assert _who_call(channel) == CALLER


def test_rejections_are_logged_once_without_the_token(
    serve: Serve, providers: dict[str, IDTokenProvider], caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO line on the s2sauth logger per refused call, with the reason."""
    service = serve()
    with (
        service.channel(providers[STRANGER]) as channel,
        caplog.at_level(logging.INFO, logger="s2sauth"),
    ):
        _rejection(lambda: _who_call(channel))
    lines = [r for r in caplog.records if r.name == "s2sauth" and r.levelno == logging.INFO]
    assert len(lines) == 1 and "caller_not_allowed" in lines[0].getMessage()
    assert "eyJ" not in caplog.text


def test_a_key_fetch_does_not_stall_other_calls(
    serve: Serve, transport: HTTPTransport, providers: dict[str, IDTokenProvider]
) -> None:
    """While one call waits for slow keys, the server answers another (health) first."""
    fetching, release = threading.Event(), threading.Event()

    def slow_keys(request: HTTPRequest) -> HTTPResponse:
        fetching.set()
        release.wait(TIMEOUT)
        return transport(request)

    service = serve(keys_transport=slow_keys)
    with service.channel(providers[CALLER]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)  # connected, token cached
        try:
            slow = channel.unary_unary("/test.Echo/Who").future(b"", timeout=TIMEOUT)
            assert fetching.wait(TIMEOUT)
            stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert not slow.done()  # the health check got through while the keys were coming
        finally:
            release.set()
        assert slow.result().decode() == CALLER


def test_tls_channel_default_audience(
    tmp_path: Path,
    emulator: Emulator,
    transport: HTTPTransport,
    providers: dict[str, IDTokenProvider],
) -> None:
    """Over TLS, the default audience is https://HOST:PORT of the target, as over local TCP."""
    port = _free_port()
    tls = throwaway_tls(tmp_path, ["localhost"])
    verifier = Verifier(
        f"https://localhost:{port}",
        allowed_callers=[CALLER],
        certs_url=emulator.jwks_url,
        transport=transport,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(2),
        interceptors=[s2sauth.grpc.IDTokenInterceptor(verifier=verifier)],
    )
    server.add_generic_rpc_handlers(_handlers(aio=False))
    key, _, cert = (tmp_path / "chain.pem").read_text().partition("-----BEGIN CERTIFICATE-----")
    pair = (key.encode(), ("-----BEGIN CERTIFICATE-----" + cert).encode())
    server.add_secure_port(f"localhost:{port}", grpc.ssl_server_credentials([pair]))
    server.start()
    try:
        roots = grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())
        with s2sauth.grpc.secure_channel(
            f"localhost:{port}", provider=providers[CALLER], credentials=roots
        ) as channel:
            assert _who_call(channel) == CALLER
    finally:
        server.stop(None).wait(TIMEOUT)


# -- the aio channel -------------------------------------------------------------------------


def test_aio_channel(
    serve: Serve,
    providers: dict[str, IDTokenProvider],
    emulator: Emulator,
    transport: HTTPTransport,
) -> None:
    """grpc.aio channels: every kind of method, a stranger refused, a burst fetching once."""
    service = serve()
    provider = IDTokenProvider(
        MetadataServerSource(CALLER, host=emulator.host, transport=transport)
    )

    async def main() -> None:
        async with (
            service.aio_channel(provider) as channel,
            service.aio_channel(providers[STRANGER]) as stranger,
        ):
            before = emulator.counters["identity"]
            who = channel.unary_unary("/test.Echo/Who")
            replies = await asyncio.gather(*(who(b"", timeout=TIMEOUT) for _ in range(30)))
            assert {reply.decode() for reply in replies} == {CALLER}
            assert emulator.counters["identity"] - before == 1
            stream = channel.unary_stream("/test.Echo/Count")(b"2", timeout=TIMEOUT)
            assert [reply.decode() async for reply in stream] == [CALLER] * 2

            async def requests() -> AsyncIterator[bytes]:
                yield b"a"
                yield b"b"

            chat = channel.stream_stream("/test.Echo/Chat")(requests(), timeout=TIMEOUT)
            assert [reply.decode() async for reply in chat] == [CALLER] * 2
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stranger.unary_unary("/test.Echo/Who")(b"", timeout=TIMEOUT)
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED

    asyncio.run(main())


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["", "/", "a/b/c", "/a//b", 7])
def test_bad_exempt_entries(entry: Any, emulator: Emulator) -> None:
    """An exempt entry that is neither a service nor a full method name is refused at once."""
    verifier = Verifier("https://svc.example", certs_url=emulator.jwks_url)
    for module in (s2sauth.grpc, s2sauth.grpc.aio):
        with pytest.raises(ConfigurationError, match="exempt entries"):
            module.IDTokenInterceptor(verifier=verifier, exempt=[entry])


def test_names() -> None:
    """The aio module offers the same names; call credentials are shared by both."""
    assert set(s2sauth.grpc.__all__) == set(s2sauth.grpc.aio.__all__)
    assert s2sauth.grpc.aio.IDTokenCallCredentials is s2sauth.grpc.IDTokenCallCredentials
    assert s2sauth.grpc.aio.current_caller is s2sauth.grpc.current_caller
    credentials = s2sauth.grpc.IDTokenCallCredentials("https://svc.example")
    assert isinstance(credentials, grpc.CallCredentials)
    assert "https://svc.example" in repr(credentials)
    with pytest.raises(ConfigurationError):
        s2sauth.grpc.IDTokenCallCredentials(header="cookie")  # type: ignore[arg-type]
