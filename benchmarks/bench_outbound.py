"""Throughput of requests and httpx with s2sauth's IDTokenAuth, against the bare clients.

``python benchmarks/bench_outbound.py [--quick]``

Starts the emulator (the metadata server) here and a minimal asyncio HTTP server
in a subprocess, then measures sequential requests per second over one
keep-alive connection for each client, bare and authenticated, side by side:

* requests ``Session`` vs ``s2sauth.requests.id_token_session()``;
* httpx ``Client`` vs ``s2sauth.httpx.id_token_client()``;
* the anchor: google-auth's ``AuthorizedSession`` with
  ``compute_engine.IDTokenCredentials(use_metadata_identity_endpoint=True)``,
  vs the same bare requests ``Session``.

Each pair runs in its own child process (google-auth reads ``GCE_METADATA_HOST``
once, at import), alternating bare and authenticated rounds and keeping each
one's best, so drift hits both alike. The token cache is warm, as in a service
that calls the same callee all hour; the report gives the metadata-server
identity fetches each authenticated client made. Target: >= 0.95 of the bare
client's throughput.

Carrying any token has a cost of its own (a ~1 KB header to build, validate and
send; httpx's pure-Python h11 checks every header value with a regex), so each
family also runs the bare client with the same token as a fixed header, and a
last row compares IDTokenAuth with that: the adapter's own cost, with the same
0.95 target. (A requests ``Session`` looks up ``~/.netrc`` for every request
that has no auth, so the authenticated session may come out slightly ahead.)
Two more rows give the microseconds the auth adds per request, measured
in-process without the network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.95
#: Family -> (bare case, authenticated case), as the rows name them.
PAIRS = {
    "requests": ("requests Session", "requests + s2sauth IDTokenAuth"),
    "httpx": ("httpx Client", "httpx + s2sauth IDTokenAuth"),
    "google-auth": ("requests Session", "google-auth AuthorizedSession (anchor)"),
}
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello, world"


class _Hello(asyncio.Protocol):
    """The server being called: a canned 200 per request, no parsing beyond the blank line.

    The clients are what is measured, so the server does as little as possible:
    it never parses headers (a token costs it nothing) and answers each request
    head (GET, no body) on a keep-alive connection.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport, self._buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        heads = self._buffer.count(b"\r\n\r\n")
        if heads:
            self._buffer = self._buffer.rsplit(b"\r\n\r\n", 1)[1]
            self._transport.write(REPLY * heads)


def serve(port: int) -> None:
    """Serve :class:`_Hello` on ``127.0.0.1:port`` until killed."""

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Hello, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _server() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the local server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


# -- the child process: one pair of clients -------------------------------------------------


def _clients(family: str, url: str) -> dict[str, Callable[[], Any]]:
    """The clients of one family: ``bare``, ``token`` (a fixed header), ``auth``."""
    import requests

    from s2sauth.tokens.provider import default_provider

    bare = requests.Session()
    if family in ("requests", "httpx"):
        # The token the adapter sends, as a fixed header: what carrying any token costs.
        fixed = {"Authorization": f"Bearer {default_provider().token(url)}"}
        with_token = requests.Session()
        with_token.headers.update(fixed)
    if family == "requests":
        from s2sauth.requests import id_token_session

        session = id_token_session()
        return {
            "bare": lambda: bare.get(url),
            "token": lambda: with_token.get(url),
            "auth": lambda: session.get(url),
        }
    if family == "httpx":
        import httpx

        from s2sauth.httpx import id_token_client

        plain, fixed_token, authed = httpx.Client(), httpx.Client(headers=fixed), id_token_client()
        return {
            "bare": lambda: plain.get(url),
            "token": lambda: fixed_token.get(url),
            "auth": lambda: authed.get(url),
        }
    import google.auth.compute_engine
    import google.auth.transport.requests as google_requests

    credentials = google.auth.compute_engine.IDTokenCredentials(
        google_requests.Request(), target_audience=url, use_metadata_identity_endpoint=True
    )
    anchor = google_requests.AuthorizedSession(credentials)
    return {"bare": lambda: bare.get(url), "auth": lambda: anchor.get(url)}


def _measure(family: str, url: str, requests_per_round: int, rounds: int) -> dict[str, float]:
    clients = _clients(family, url)
    best = dict.fromkeys(clients, 0.0)
    for get in clients.values():  # warm-up: connections, and the token caches
        for _ in range(20):
            get()
    for _ in range(rounds):
        for name, get in clients.items():
            started = time.perf_counter()
            for _ in range(requests_per_round):
                if get().status_code != 200:
                    raise RuntimeError(f"{family} {name}: unexpected status")
            best[name] = max(best[name], requests_per_round / (time.perf_counter() - started))
    return best


# -- the parent ------------------------------------------------------------------------------


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure each family in a child process; rows carry ratios to the bare client."""
    from s2sauth.emulator import Emulator

    # Many short rounds, best of each: a busy machine slows some rounds, rarely all.
    requests_per_round, rounds = (50, 10) if quick else (100, 60)
    rows: list[dict[str, Any]] = []
    with Emulator() as emulator, _server() as url:
        env = {
            **os.environ,
            **emulator.environ(),
            "GCE_METADATA_IP": emulator.host,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        for family, (bare_case, auth_case) in PAIRS.items():
            before = emulator.counters["identity"]
            output = subprocess.run(
                [
                    *(sys.executable, __file__, "--measure", family, url),
                    *(str(requests_per_round), str(rounds)),
                ],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rates = json.loads(output)
            fetches = emulator.counters["identity"] - before
            of_bare = f"of bare {'requests' if family == 'google-auth' else family}"
            rows.append(_row(f"{bare_case} (beside {family})", rates["bare"]))
            fixed = rates.get("token")
            if fixed is not None:
                rows.append(
                    _row(
                        f"{bare_case} + the same token, fixed",
                        fixed,
                        ratio=fixed / rates["bare"],
                        anchor=of_bare,
                    )
                )
            ratio = rates["auth"] / rates["bare"]
            plural = "es" if fetches != 1 else ""
            goal = {} if fixed is None else {"target": f">= {TARGET}", "met": ratio >= TARGET}
            rows.append(
                _row(
                    f"{auth_case}, {fetches} metadata fetch{plural}",
                    rates["auth"],
                    ratio=ratio,
                    anchor=of_bare,
                    metadata_fetches=fetches,
                    **goal,
                )
            )
            if fixed is not None:
                # What the adapter itself adds: the same token, attached by it vs fixed.
                own = rates["auth"] / fixed
                rows.append(
                    _row(
                        f"  IDTokenAuth's own cost ({family})",
                        rates["auth"],
                        ratio=own,
                        anchor="of the fixed token",
                        target=f">= {TARGET}",
                        met=own >= TARGET,
                    )
                )
        rows.extend(_attach_costs(emulator, url, quick))
    return rows


def _attach_costs(emulator: Any, url: str, quick: bool) -> list[dict[str, Any]]:
    """Microseconds IDTokenAuth adds to one request with a warm cache (best of a few runs)."""
    import httpx
    import requests

    import s2sauth.httpx
    import s2sauth.requests
    from s2sauth.tokens.provider import IDTokenProvider
    from s2sauth.tokens.sources import MetadataServerSource

    provider = IDTokenProvider(MetadataServerSource(host=emulator.host))
    session = requests.Session()
    session.trust_env = False  # no per-request netrc lookup on the bare side
    plain = requests.Request("GET", url)
    authed = requests.Request("GET", url, auth=s2sauth.requests.IDTokenAuth(provider=provider))
    reply = requests.Response()
    reply.status_code, reply.url = 200, url

    def requests_cycle(request: requests.Request) -> None:  # prepare, then the response hooks
        reply.request = session.prepare_request(request)
        for hook in reply.request.hooks["response"]:
            hook(reply)

    httpx_auth = s2sauth.httpx.IDTokenAuth(provider=provider)
    request = httpx.Request("GET", url)
    response = httpx.Response(200, request=request)

    def httpx_cycle() -> None:  # what the client runs per request: the whole flow
        flow = httpx_auth.sync_auth_flow(request)
        next(flow)
        with contextlib.suppress(StopIteration):
            flow.send(response)

    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "requests": (lambda: requests_cycle(plain), lambda: requests_cycle(authed)),
        "httpx": (lambda: None, httpx_cycle),
    }
    loops = 2000 if quick else 20000
    rows = []
    for family, pair in cases.items():
        pair[1]()  # the one fetch
        best = [float("inf"), float("inf")]
        for _ in range(7):
            for index, fn in enumerate(pair):
                started = time.perf_counter()
                for _ in range(loops):
                    fn()
                best[index] = min(best[index], time.perf_counter() - started)
        cost = (best[1] - best[0]) / loops * 1e6
        rows.append(_row(f"IDTokenAuth attach cost, warm cache ({family})", cost, unit="us"))
    return rows


def _row(case: str, value: float, *, unit: str = "req/s", **extra: Any) -> dict[str, Any]:
    row = {"benchmark": "outbound", "case": case, "value": value, "unit": unit}
    row.update({key: item for key, item in extra.items() if item is not None})
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--measure``, one pair in this process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    parser.add_argument("--measure", nargs=4, metavar=("FAMILY", "URL", "N", "ROUNDS"))
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.measure:
        family, url, n, rounds = args.measure
        print(json.dumps(_measure(family, url, int(n), int(rounds))))
        return 0
    from benchmarks._report import table

    print(table(run(args.quick)))
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:  # run as a script
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
