"""Soak: mixed good and bad tokens through the ASGI and WSGI middlewares under real servers.

``python benchmarks/soak.py [--seconds 60]`` starts the emulator, a bare ASGI app
behind :class:`s2sauth.asgi.IDTokenMiddleware` under uvicorn and a bare WSGI app
behind :class:`s2sauth.wsgi.IDTokenMiddleware` under waitress, all in this
process on loopback, then drives both with client threads (``http.client``,
keep-alive) sending a fixed mix of requests: valid tokens (more distinct ones
than the verified-token cache holds), tokens of a caller not allowed, expired
tokens, tampered and garbage tokens, a wrong audience, and no token at all.

It prints requests served, 5xx answers, wrong allow/deny decisions, transport
errors, the verified-token cache size against its bound, and the process's RSS
(``VmRSS``) after warm-up and at the end. Servers and clients share this
process, so the RSS figures are an upper bound for the servers alone.

``tests/security/test_load.py`` runs the same harness for a fixed number of
requests, so this script cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

AUDIENCE = "https://receiver.example.run.app"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
#: Verified-token cache bound for the run; the workload uses more distinct valid tokens.
CACHE_SIZE = 256
DISTINCT_VALID_TOKENS = 600


# --- servers: real uvicorn and waitress on loopback, in threads of this process ------------


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve ASGI ``app`` with uvicorn on 127.0.0.1; yields the base URL."""
    import uvicorn

    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it keep-alive replies stall on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def serve_wsgi(app: Any, *, threads: int = 8) -> Iterator[str]:
    """Serve WSGI ``app`` with waitress on 127.0.0.1; yields the base URL."""
    from waitress import wasyncore
    from waitress.server import create_server

    socket_map: dict[int, Any] = {}
    server = create_server(app, map=socket_map, host="127.0.0.1", port=0, threads=threads)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()
        # Close every socket from the server's own loop thread, which then exits.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(socket_map))
        thread.join(10)


# --- the apps behind the middlewares ----------------------------------------------------


async def asgi_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Answer 200 with the verified caller's email as JSON."""
    caller = scope.get("state", {}).get("caller")
    body = json.dumps({"email": getattr(caller, "email", None)}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer 200 with the verified caller's email as JSON."""
    caller = environ.get("s2sauth.caller")
    body = json.dumps({"email": getattr(caller, "email", None)}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


# --- the workload ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request of the mix: the token to send (or None) and the status it must get."""

    kind: str
    token: str | None
    expected: int


def tamper(token: str) -> str:
    """``token`` with one signature character changed (the signature no longer verifies)."""
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


def build_cases(emulator: Any, *, distinct_valid: int = DISTINCT_VALID_TOKENS) -> list[Case]:
    """The request mix: about half valid, the rest each kind of refusal.

    ``distinct_valid`` valid tokens differ in their lifetime, so each is a new
    cache key; with more of them than the cache holds, eviction is exercised.
    """
    now = int(time.time())
    other = "https://another-service.example.run.app"
    valid = [
        Case("valid", emulator.mint(AUDIENCE, account=CALLER, lifetime=3600 - i), 200)
        for i in range(distinct_valid)
    ]
    refused: list[Case] = []
    for i in range(distinct_valid // 6):
        stranger = emulator.mint(AUDIENCE, account=STRANGER, lifetime=3600 - i)
        expired = emulator.mint(
            AUDIENCE, account=CALLER, claims={"iat": now - 7200 - i, "exp": now - 3600 - i}
        )
        refused += [
            Case("not_allowed", stranger, 403),
            Case("expired", expired, 401),
            Case("tampered", tamper(valid[i].token or ""), 401),
            Case("wrong_audience", emulator.mint(other, account=CALLER, lifetime=3600 - i), 401),
            Case("garbage", f"not-a-token-{i}", 401),
            Case("missing", None, 401),
        ]
    cases = [case for pair in itertools.zip_longest(valid, refused) for case in pair if case]
    return cases


@dataclass
class Tally:
    """What the clients saw, per server (thread-safe through ``lock``)."""

    served: int = 0
    server_errors: int = 0
    wrong: int = 0
    transport_errors: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    wrong_examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, case: Case, status: int | None) -> None:
        """Count one answer (``None`` when the connection failed)."""
        with self.lock:
            if status is None:
                self.transport_errors += 1
                return
            self.served += 1
            self.by_kind[case.kind] = self.by_kind.get(case.kind, 0) + 1
            if status >= 500:
                self.server_errors += 1
            if status != case.expected:
                self.wrong += 1
                if len(self.wrong_examples) < 5:
                    self.wrong_examples.append(f"{case.kind}: got {status}, want {case.expected}")


def _client(
    base_url: str,
    cases: list[Case],
    start: int,
    tally: Tally,
    keep_going: Callable[[int], bool],
) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    sent = 0
    try:
        for index in itertools.count(start):
            if not keep_going(sent):
                return
            case = cases[index % len(cases)]
            headers = {} if case.token is None else {"Authorization": f"Bearer {case.token}"}
            try:
                conn.request("GET", "/", headers=headers)
                response = conn.getresponse()
                response.read()
                status: int | None = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                status = None
            tally.record(case, status)
            sent += 1
    finally:
        conn.close()


def drive(
    urls: list[str],
    cases: list[Case],
    *,
    threads_per_server: int,
    requests: int | None = None,
    seconds: float | None = None,
) -> dict[str, Tally]:
    """Send the mix to every URL from client threads; stop after ``requests`` or ``seconds``.

    ``requests`` counts per server. Returns one :class:`Tally` per URL.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    per_thread = None if requests is None else -(-requests // threads_per_server)

    def keep_going(sent: int) -> bool:
        if per_thread is not None and sent >= per_thread:
            return False
        return deadline is None or time.monotonic() < deadline

    tallies = {url: Tally() for url in urls}
    workers = [
        threading.Thread(
            target=_client,
            args=(url, cases, n * len(cases) // threads_per_server, tallies[url], keep_going),
        )
        for url in urls
        for n in range(threads_per_server)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return tallies


def rss_kib() -> int:
    """This process's resident set size in KiB (``VmRSS`` from /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def run(
    *,
    seconds: float | None = None,
    requests: int | None = None,
    threads_per_server: int = 4,
    cache_size: int = CACHE_SIZE,
    distinct_valid: int = DISTINCT_VALID_TOKENS,
    emulator: Any = None,
) -> dict[str, Any]:
    """Run the soak and return its figures (see the module docstring).

    Args:
        seconds: stop after this long; or
        requests: stop after this many requests per server.
        threads_per_server: client threads per server.
        cache_size: the verifier's verified-token cache bound.
        distinct_valid: how many distinct valid tokens the mix holds.
        emulator: a running :class:`s2sauth.emulator.Emulator` to use; one is
            started when omitted.
    """
    from s2sauth._http import HTTPTransport
    from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
    from s2sauth.emulator import Emulator
    from s2sauth.verify.verifier import Verifier
    from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

    with contextlib.ExitStack() as stack:
        if emulator is None:
            emulator = stack.enter_context(Emulator(service_accounts=(CALLER, STRANGER)))
        transport = HTTPTransport()
        stack.callback(transport.close)
        verifier = Verifier(
            AUDIENCE,
            allowed_callers=[CALLER],
            certs_url=emulator.jwks_url,
            transport=transport,
            cache_size=cache_size,
        )
        asgi_url = stack.enter_context(serve_asgi(ASGIMiddleware(asgi_app, verifier=verifier)))
        wsgi_url = stack.enter_context(serve_wsgi(WSGIMiddleware(wsgi_app, verifier=verifier)))
        cases = build_cases(emulator, distinct_valid=distinct_valid)
        # Warm up (keys fetched, threads and connections made) before the first RSS reading.
        drive([asgi_url, wsgi_url], cases[:50], threads_per_server=2, requests=50)
        rss_before = rss_kib()
        started = time.monotonic()
        tallies = drive(
            [asgi_url, wsgi_url],
            cases,
            threads_per_server=threads_per_server,
            requests=requests,
            seconds=seconds,
        )
        elapsed = time.monotonic() - started
        rss_after = rss_kib()
        stats = verifier.stats
    names = {asgi_url: "asgi/uvicorn", wsgi_url: "wsgi/waitress"}
    return {
        "elapsed_s": elapsed,
        "distinct_tokens": len({case.token for case in cases}),
        "cache_size": cache_size,
        "verifier_stats": stats,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "servers": {
            names[url]: {
                "served": tally.served,
                "server_errors": tally.server_errors,
                "wrong": tally.wrong,
                "transport_errors": tally.transport_errors,
                "by_kind": dict(sorted(tally.by_kind.items())),
                "wrong_examples": tally.wrong_examples,
            }
            for url, tally in tallies.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak from the command line; exit 1 on any 5xx, wrong decision or error."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument("--threads", type=int, default=4, help="client threads per server")
    args = parser.parse_args(argv)
    report = run(seconds=args.seconds, threads_per_server=args.threads)
    served = sum(s["served"] for s in report["servers"].values())
    print(f"soak: {report['elapsed_s']:.1f} s, {report['distinct_tokens']} distinct tokens")
    for name, figures in report["servers"].items():
        print(
            f"  {name:14} served {figures['served']:>7,}  5xx {figures['server_errors']}  "
            f"wrong {figures['wrong']}  transport errors {figures['transport_errors']}"
        )
        print(f"  {'':14} mix {figures['by_kind']}")
        for example in figures["wrong_examples"]:
            print(f"  {'':14} WRONG {example}")
    print(f"  total served {served:,} ({served / report['elapsed_s']:,.0f} req/s)")
    print(f"  verifier stats {report['verifier_stats']} (cache bound {report['cache_size']})")
    print(
        f"  RSS after warm-up {report['rss_before_kib'] / 1024:.1f} MiB, "
        f"at end {report['rss_after_kib'] / 1024:.1f} MiB"
    )
    failed = any(
        s["server_errors"] or s["wrong"] or s["transport_errors"]
        for s in report["servers"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
