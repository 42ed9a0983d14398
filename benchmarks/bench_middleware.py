"""Throughput of a hello-world app with and without the s2sauth middleware.

``python benchmarks/bench_middleware.py [--quick] [--install]``

Serves ``benchmarks/apps.py`` in a subprocess on a free loopback port (uvicorn,
one worker, for ASGI; waitress for WSGI), bare and behind ``IDTokenMiddleware``,
and drives each with the same token on every request, as real callers reuse a
token for an hour (so the verified-token cache is warm). The load comes from
``wrk -t1 -c32`` when it is installed (``--install`` runs ``apt-get install -y
wrk`` first), else from a small built-in generator: keep-alive ``http.client``
connections in threads, which is slower than wrk and may itself be the
bottleneck; the report says which one ran. Target: with middleware >= 0.90 of
the bare app's requests per second.

On a small shared machine the server, the load generator and the GIL contend for
the cores, so throughput swings from round to round; two more rows give what the
middleware itself adds to a request, timed in-process without the network.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from benchmarks._report import table  # noqa: E402
from s2sauth.emulator import Emulator  # noqa: E402

AUDIENCE = "https://bench.example"
TARGET = 0.90
CONNECTIONS = 32
SERVERS: dict[str, Callable[[str, int | str], list[str]]] = {
    "asgi (uvicorn)": lambda app, port: [
        *("-m", "uvicorn", "--factory", f"benchmarks.apps:{app}", "--host", "127.0.0.1"),
        *("--port", str(port), "--workers", "1", "--lifespan", "off"),
        *("--log-level", "warning", "--no-access-log"),
    ],
    "wsgi (waitress)": lambda app, port: ["-m", "benchmarks.apps", app, str(port)],
}
APPS = {
    "asgi (uvicorn)": ("asgi_bare", "asgi_protected"),
    "wsgi (waitress)": ("wsgi_bare", "wsgi_protected"),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(port: int, token: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Authorization": f"Bearer {token}"})
        return connection.getresponse().status
    finally:
        connection.close()


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    # With two CPUs or more, the servers get one and the load generator another: no
    # migrations between them, and the server's share of a core is the same each run.
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None, None
    return ({cpus[-1]}, {cpus[0]}) if len(cpus) >= 2 else (None, None)


SERVER_CPUS, LOAD_CPUS = _cpus()


def _pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    return None if cpus is None else lambda: os.sched_setaffinity(0, cpus)


def interleaved(
    commands: Mapping[str, list[str]],
    env: dict[str, str],
    token: str,
    load: Callable[[int, str, float], tuple[float, int]],
    *,
    rounds: int,
    seconds: float,
) -> dict[str, list[float]]:
    """Requests per second of each server, measured in alternating bursts.

    Every round starts fresh server processes (what a process happens to get, its
    memory layout and hash seed, shifts a hello-world by several percent and
    would otherwise weigh on every round alike), warms each with a short burst,
    then measures each in turn, in reverse order every other round.

    Args:
        commands: ``python`` arguments serving each variant; ``{port}`` in an
            argument is replaced by the port it must listen on.
        load: ``_wrk`` or ``_builtin``.
    """
    rates: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(rounds):
        ports = {name: _free_port() for name in commands}
        with ExitStack() as stack:
            for name, command in commands.items():
                port = ports[name]
                served = [part.replace("{port}", str(port)) for part in command]
                stack.enter_context(_serve(served, env, port, token))
            order = list(commands)[:: -1 if round_ % 2 else 1]
            for name in order:
                load(ports[name], token, min(1.0, seconds))  # warm-up, not counted
            for name in order:
                rate, failed = load(ports[name], token, seconds)
                if failed:
                    raise RuntimeError(f"{name}: {failed} requests were not 200")
                rates[name].append(rate)
    return rates


def ratio(rates: Mapping[str, list[float]], name: str, anchor: str) -> float:
    """The median over rounds of ``name``'s rate over ``anchor``'s in the same round."""
    return statistics.median(
        mine / theirs for theirs, mine in zip(rates[anchor], rates[name], strict=True)
    )


@contextmanager
def _serve(command: list[str], env: dict[str, str], port: int, token: str) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, *command], cwd=ROOT, env=env, preexec_fn=_pinned(SERVER_CPUS)
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status = _get(port, token)  # also warms the key cache and token cache
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {command}") from None
                time.sleep(0.05)
        if status != 200:
            raise RuntimeError(f"warm-up request answered {status}, expected 200")
        yield
    finally:
        process.terminate()
        process.wait(10)


def _wrk(port: int, token: str, seconds: float) -> tuple[float, int]:
    output = subprocess.run(
        [
            *("wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, math.ceil(seconds))}s"),
            *("-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}/"),
        ],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=_pinned(LOAD_CPUS),
    ).stdout
    rate = re.search(r"Requests/sec:\s*([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    if rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return float(rate.group(1)), int(errors.group(1)) if errors else 0


def _builtin(port: int, token: str, seconds: float) -> tuple[float, int]:
    counts = [[0, 0] for _ in range(CONNECTIONS)]
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    def worker(count: list[int]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < deadline:
            connection.request("GET", "/", headers=headers)
            response = connection.getresponse()
            response.read()
            count[response.status != 200] += 1
        connection.close()

    threads = [threading.Thread(target=worker, args=(count,)) for count in counts]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return sum(ok for ok, _ in counts) / elapsed, sum(bad for _, bad in counts)


def run(quick: bool, install: bool = False) -> list[dict[str, Any]]:
    """Measure every server bare and with middleware; one row per measurement.

    Both variants of a server run side by side and are driven in short
    alternating bursts, so drift and load spikes on a shared machine hit both
    alike; the figures are medians over the rounds, and the ratio is the median
    of each round's protected/bare ratio.

    Args:
        quick: two rounds of 1 s bursts (a smoke run), instead of ten of 2 s.
        install: ``apt-get install -y wrk`` first when wrk is missing.
    """
    if install and shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)
    load, tool = (_wrk, "wrk") if shutil.which("wrk") else (_builtin, "built-in client")
    seconds, rounds = (1.0, 2) if quick else (2.0, 10)
    rows: list[dict[str, Any]] = []
    with Emulator() as emulator:
        token = emulator.mint(AUDIENCE)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "S2SAUTH_BENCH_AUDIENCE": AUDIENCE,
            "S2SAUTH_BENCH_CERTS_URL": emulator.jwks_url,
            "S2SAUTH_BENCH_ALLOWED": emulator.default_account,
        }
        for server, command in SERVERS.items():
            bare_app, protected_app = APPS[server]
            commands = {app: command(app, "{port}") for app in APPS[server]}
            rates = interleaved(commands, env, token, load, rounds=rounds, seconds=seconds)
            ratio_ = ratio(rates, protected_app, bare_app)
            rows.append(_row(f"{server} bare, {tool}", statistics.median(rates[bare_app])))
            rows.append(
                _row(
                    f"{server} + IDTokenMiddleware, {tool}", statistics.median(rates[protected_app])
                )
                | {"ratio": ratio_, "anchor": "of bare", "target": f">= {TARGET:.2f}"}
                | {"met": ratio_ >= TARGET}
            )
        rows.extend(_in_process_costs(emulator, token, quick))
    return rows


def _in_process_costs(emulator: Emulator, token: str, quick: bool) -> list[dict[str, Any]]:
    """Microseconds the middleware adds to one request (warm caches), best of a few runs."""
    import asyncio

    from benchmarks import apps
    from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
    from s2sauth.verify.verifier import Verifier
    from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

    verifier = Verifier(
        AUDIENCE, allowed_callers=[emulator.default_account], certs_url=emulator.jwks_url
    )
    bearer = f"Bearer {token}"
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_AUTHORIZATION": bearer}
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"host", b"bench"), (b"authorization", bearer.encode())],
    }

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    def wsgi(app: Any) -> Callable[[int], None]:
        def calls(n: int) -> None:
            for _ in range(n):
                app(dict(environ), start_response)

        return calls

    def asgi(app: Any) -> Callable[[int], None]:
        async def calls_async(n: int) -> None:
            for _ in range(n):
                await app(dict(scope), receive, send)

        return lambda n: asyncio.run(calls_async(n))

    cases = {
        "wsgi": (wsgi(apps.wsgi_bare()), wsgi(WSGIMiddleware(apps.wsgi_bare(), verifier=verifier))),
        "asgi": (asgi(apps.asgi_bare()), asgi(ASGIMiddleware(apps.asgi_bare(), verifier=verifier))),
    }
    loops = 2000 if quick else 20000
    rows = []
    try:
        for kind, pair in cases.items():
            pair[1](1)  # the key fetch
            best = [math.inf, math.inf]
            for _ in range(7):
                for index, calls in enumerate(pair):
                    started = time.perf_counter()
                    calls(loops)
                    best[index] = min(best[index], time.perf_counter() - started)
            cost = (best[1] - best[0]) / loops * 1e6
            case = f"IDTokenMiddleware cost per request, in-process ({kind})"
            rows.append(_row(case, cost, "us"))
    finally:
        verifier.close()
    return rows


def _row(case: str, value: float, unit: str = "req/s") -> dict[str, Any]:
    return {"benchmark": "middleware", "case": case, "value": value, "unit": unit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--install", action="store_true", help="apt-get install wrk if missing")
    args = parser.parse_args(argv)
    print(table(run(quick=args.quick, install=args.install)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
