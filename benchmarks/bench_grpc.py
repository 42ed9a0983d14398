"""Unary gRPC calls per second with s2sauth's call credentials and interceptor, sync and aio.

``python benchmarks/bench_grpc.py [--quick]``

A child process serves one bytes-in, bytes-out method on three ports, each server
with its own interceptor: none; a pass-through one; s2sauth's ``IDTokenInterceptor``
(keys from the emulator). This process calls them one call at a time over local TCP
credentials, in alternating short rounds (medians, so drift hits every variant alike):

* **no auth**: no call credentials, no interceptor;
* **floor**: a call credential whose plugin hands back a fixed token (of a real
  token's size) and the pass-through interceptor: what any call credentials cost,
  since gRPC runs each plugin call on a thread of its own;
* **s2sauth**: ``s2sauth.grpc.secure_channel`` (warm token cache) against the
  verifying interceptor (warm verified-token cache). Target: >= 0.90 of the floor.

The same again with ``grpc.aio`` servers and channels. Last, a cold burst: 50
concurrent calls with an empty token cache while the metadata server takes 0.2 s
to answer; the rows count the identity fetches for s2sauth and for google-auth's
``AuthMetadataPlugin`` over ``compute_engine.IDTokenCredentials`` (in a child
process: google-auth reads ``GCE_METADATA_HOST`` once, at import).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from s2sauth import IDTokenProvider, MetadataServerSource, Verifier
from s2sauth.emulator import Emulator
from s2sauth.grpc import IDTokenInterceptor, secure_channel
from s2sauth.grpc import aio as s2s_aio

TARGET = 0.90
METHOD = "/bench.Echo/Echo"
VARIANTS = ("no auth", "floor", "s2sauth")
BURST = 50
LOCAL = grpc.LocalConnectionType.LOCAL_TCP


# -- the child process: three servers --------------------------------------------------------


class _PassThrough(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Any, details: Any) -> Any:
        return continuation(details)


class _AioPassThrough(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return await continuation(details)


def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _aecho(request: bytes, context: Any) -> bytes:
    return request


def _handler(fn: Callable[..., Any]) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(fn)}
    )


def _interceptors(kind: str, port: int, variant: str) -> list[Any]:
    if variant == "no auth":
        return []
    if variant == "floor":
        return [_PassThrough() if kind == "sync" else _AioPassThrough()]
    verifier = Verifier(
        f"https://127.0.0.1:{port}",
        allowed_callers=[os.environ["S2SAUTH_BENCH_ALLOWED"]],
        certs_url=os.environ["S2SAUTH_BENCH_CERTS_URL"],
    )
    verifier.keyset.refresh()
    return [
        (IDTokenInterceptor if kind == "sync" else s2s_aio.IDTokenInterceptor)(verifier=verifier)
    ]


def serve(kind: str, ports: list[int]) -> None:
    """Serve the three variants on ``ports`` until killed."""
    credentials = grpc.local_server_credentials(LOCAL)
    if kind == "sync":
        servers = []
        for port, variant in zip(ports, VARIANTS, strict=True):
            server = grpc.server(
                futures.ThreadPoolExecutor(4), interceptors=_interceptors(kind, port, variant)
            )
            server.add_generic_rpc_handlers((_handler(_echo),))
            server.add_secure_port(f"127.0.0.1:{port}", credentials)
            server.start()
            servers.append(server)
        servers[0].wait_for_termination()
        return

    async def main() -> None:
        servers = []
        for port, variant in zip(ports, VARIANTS, strict=True):
            server = grpc.aio.server(interceptors=_interceptors(kind, port, variant))
            server.add_generic_rpc_handlers((_handler(_aecho),))
            server.add_secure_port(f"127.0.0.1:{port}", credentials)
            await server.start()
            servers.append(server)
        await servers[0].wait_for_termination()

    asyncio.run(main())


# -- this process: the clients ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _servers(kind: str, env: dict[str, str]) -> Iterator[list[int]]:
    ports = [_free_port() for _ in VARIANTS]
    command = [sys.executable, __file__, "--serve", kind, *map(str, ports)]
    process = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 30
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the gRPC servers did not start") from None
                    time.sleep(0.05)
        yield ports
    finally:
        process.terminate()
        process.wait(10)


class _FixedToken(grpc.AuthMetadataPlugin):
    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def __call__(self, context: Any, callback: Any) -> None:
        callback(self._metadata, None)


def _credentials(variant: str, token: str) -> Any:
    local = grpc.local_channel_credentials(LOCAL)
    if variant == "no auth":
        return local
    if variant == "floor":
        fixed = grpc.metadata_call_credentials(_FixedToken(token), name="fixed")
        return grpc.composite_channel_credentials(local, fixed)
    return None  # s2sauth: secure_channel composes its own


def _sync_rate(
    port: int, variant: str, token: str, provider: IDTokenProvider, seconds: float
) -> float:
    target = f"127.0.0.1:{port}"
    credentials = _credentials(variant, token)
    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else secure_channel(
            target, provider=provider, credentials=grpc.local_channel_credentials(LOCAL)
        )
    )
    with channel:
        echo = channel.unary_unary(METHOD)
        for _ in range(20):  # connect, warm the caches
            echo(b"x", timeout=10)
        calls, started = 0, time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(20):
                echo(b"x", timeout=10)
            calls += 20
        return calls / (time.perf_counter() - started)


def _aio_rate(
    port: int, variant: str, token: str, provider: IDTokenProvider, seconds: float
) -> float:
    async def main() -> float:
        target = f"127.0.0.1:{port}"
        credentials = _credentials(variant, token)
        channel = (
            grpc.aio.secure_channel(target, credentials)
            if credentials is not None
            else s2s_aio.secure_channel(
                target, provider=provider, credentials=grpc.local_channel_credentials(LOCAL)
            )
        )
        async with channel:
            echo = channel.unary_unary(METHOD)
            for _ in range(20):
                await echo(b"x", timeout=10)
            calls, started = 0, time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                for _ in range(20):
                    await echo(b"x", timeout=10)
                calls += 20
            return calls / (time.perf_counter() - started)

    return asyncio.run(main())


def _row(case: str, value: float, unit: str = "calls/s") -> dict[str, Any]:
    return {"benchmark": "grpc", "case": case, "value": value, "unit": unit}


def _throughput(emulator: Emulator, env: dict[str, str], quick: bool) -> list[dict[str, Any]]:
    seconds, rounds = (0.3, 2) if quick else (1.5, 8)
    rows: list[dict[str, Any]] = []
    for kind, rate in (("sync", _sync_rate), ("aio", _aio_rate)):
        with _servers(kind, env) as ports:
            provider = IDTokenProvider(MetadataServerSource(host=emulator.host))
            token = emulator.mint(f"https://127.0.0.1:{ports[2]}")
            rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
            for round_ in range(rounds):
                order = list(zip(ports, VARIANTS, strict=True))
                for port, variant in order[:: -1 if round_ % 2 else 1]:
                    rates[variant].append(rate(port, variant, token, provider, seconds))

        def ratio(of: str, to: str, rates: dict[str, list[float]] = rates) -> float:
            return statistics.median(a / b for a, b in zip(rates[of], rates[to], strict=True))

        median = {variant: statistics.median(values) for variant, values in rates.items()}
        rows.append(_row(f"{kind}: no auth", median["no auth"]))
        rows.append(
            _row(f"{kind}: floor (fixed-token plugin + pass-through)", median["floor"])
            | {"ratio": ratio("floor", "no auth"), "anchor": "of no auth"}
        )
        vs_floor = ratio("s2sauth", "floor")
        rows.append(
            _row(f"{kind}: s2sauth call credentials + interceptor", median["s2sauth"])
            | {"ratio": vs_floor, "anchor": "of floor", "target": f">= {TARGET:.2f}"}
            | {"met": vs_floor >= TARGET}
        )
        rows.append(
            _row(f"{kind}: s2sauth, against no auth", median["s2sauth"])
            | {"ratio": ratio("s2sauth", "no auth"), "anchor": "of no auth"}
        )
    return rows


# -- the cold burst ---------------------------------------------------------------------------


def burst(kind: str, target: str, audience: str) -> None:
    """Send BURST concurrent calls with a cold token cache (run in a child process)."""
    local = grpc.local_channel_credentials(LOCAL)
    if kind == "google-auth":
        import google.auth.transport.grpc
        import google.auth.transport.requests
        from google.auth import compute_engine

        request = google.auth.transport.requests.Request()
        credentials = compute_engine.IDTokenCredentials(
            request, audience, use_metadata_identity_endpoint=True
        )
        plugin = google.auth.transport.grpc.AuthMetadataPlugin(credentials, request)
        channel = grpc.secure_channel(
            target,
            grpc.composite_channel_credentials(local, grpc.metadata_call_credentials(plugin)),
        )
    else:
        # A fixed audience goes only to its own origin unless targets names this one.
        targets = [f"https://{target}"]
        channel = secure_channel(target, audience=audience, targets=targets, credentials=local)
    with channel:
        grpc.channel_ready_future(channel).result(10)
        echo = channel.unary_unary(METHOD)
        calls = [echo.future(b"x", timeout=30) for _ in range(BURST)]
        for call in calls:
            call.result()


def _cold_bursts(emulator: Emulator, env: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    with _servers("sync", env) as ports:
        target = f"127.0.0.1:{ports[0]}"  # the server without an interceptor
        counts = {}
        for kind in ("s2sauth", "google-auth"):
            before = emulator.counters["identity"]
            emulator.inject("metadata", delay=0.2)
            try:
                command = [
                    sys.executable,
                    __file__,
                    "--burst",
                    kind,
                    target,
                    "https://callee.example",
                ]
                subprocess.run(command, env=env | emulator.environ(), check=True, timeout=120)
            finally:
                emulator.clear_faults()
            counts[kind] = emulator.counters["identity"] - before
    rows.append(
        _row(f"cold burst of {BURST} calls: s2sauth", counts["s2sauth"], "fetches")
        | {"target": "1", "met": counts["s2sauth"] == 1}
    )
    rows.append(
        _row(
            f"cold burst of {BURST} calls: google-auth AuthMetadataPlugin",
            counts["google-auth"],
            "fetches",
        )
    )
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """Every figure of this benchmark, one row each."""
    with Emulator() as emulator:
        env = {
            **os.environ,
            "S2SAUTH_BENCH_CERTS_URL": emulator.jwks_url,
            "S2SAUTH_BENCH_ALLOWED": emulator.default_account,
        }
        # Tokens for the s2sauth client come from the emulator, named explicitly.
        return _throughput(emulator, env, quick) + _cold_bursts(emulator, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--serve", nargs=4, metavar=("KIND", "P1", "P2", "P3"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--burst", nargs=3, metavar=("KIND", "TARGET", "AUD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], [int(port) for port in args.serve[1:]])
        return 0
    if args.burst:
        burst(*args.burst)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
    from benchmarks._report import table

    print(table(run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
