"""Cold start: what importing s2sauth costs, and what the first request pays.

Run ``python -m benchmarks bench_import`` (``--quick`` for a smoke run).

**Imports.** Each figure is the best of several fresh interpreters, interleaved,
timing only the ``import`` statement (not the interpreter's own start-up), in
milliseconds, with its ratio to ``import google.oauth2.id_token`` (what a service
verifying or fetching ID tokens with google-auth imports) measured in the same run.
Every module is imported from compiled bytecode, as in a deployed service (``pip
install`` compiles it): the interpreters share a fresh ``PYTHONPYCACHEPREFIX``,
filled by one untimed import per case, whatever ``PYTHONDONTWRITEBYTECODE`` says.
Without this, a checkout run with ``PYTHONDONTWRITEBYTECODE=1`` timed the compiling of
s2sauth's sources against google-auth's installed bytecode (0.57x instead of 0.28x).

* ``import s2sauth.asgi``: a receiving service. Target: at most 0.5x.
* ``import s2sauth.requests`` with ``requests`` already imported (the caller's
  program imports requests whatever it authenticates with; requests alone costs
  about as much as the anchor). Target: at most 0.5x.
* ``import requests`` alone, and ``import s2sauth.requests`` with nothing loaded:
  requests by itself costs about the anchor, so no requests adapter can be under
  0.5x of it cold; printed beside the target as its floor.
* ``import s2sauth.asgi, s2sauth.verify.verifier``: the same with the
  ``Verifier`` a service builds (cryptography, the HTTP client), for reference.
* ``import s2sauth``, for reference (each core is imported on first use of its names).

**First request after start.** A receiving service (the ASGI middleware under
uvicorn, keys from the local emulator) is started and asked once, with and
without warming on lifespan startup; the figure is the first request's latency,
best of several fresh servers, and the ratio warmed / cold. The emulator delays
its keys endpoint by :data:`KEYS_DELAY` to stand for the round trip to Google
that a cold instance pays.

``run(quick)`` returns the rows for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from typing import Any

BENCHMARK = "cold start"
AUDIENCE = "http://127.0.0.1"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
ANCHOR = "google.oauth2.id_token"
TARGET = 0.5
#: Extra latency of the emulator's keys endpoint, seconds: a stand-in for Google's.
KEYS_DELAY = 0.05

# (case, module to time, modules imported before the clock starts)
_IMPORTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("import google.oauth2.id_token (anchor)", ANCHOR, ()),
    ("import s2sauth.asgi", "s2sauth.asgi", ()),
    ("import s2sauth.asgi, s2sauth.verify.verifier", "s2sauth.asgi, s2sauth.verify.verifier", ()),
    ("import google.oauth2.id_token, requests loaded (anchor)", ANCHOR, ("requests",)),
    ("import s2sauth.requests, requests loaded", "s2sauth.requests", ("requests",)),
    # The floor of any requests adapter, and what a cold `import s2sauth.requests` pays on it.
    ("import requests alone (the floor of any requests adapter)", "requests", ()),
    ("import s2sauth.requests, requests not loaded", "s2sauth.requests", ()),
    ("import s2sauth", "s2sauth", ()),
]


def bytecode_environment(cache_dir: str) -> dict[str, str]:
    """This process's environment, with bytecode read from and written to ``cache_dir``."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache_dir
    return env


def _import_ms(module: str, preload: tuple[str, ...], env: dict[str, str]) -> float:
    code = (
        "".join(f"import {name}\n" for name in preload)
        + "import time\nstart = time.perf_counter()\n"
        + f"import {module}\n"
        + "print(time.perf_counter() - start)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return float(result.stdout) * 1000


def measure_imports(repeat: int, cache_dir: str | None = None) -> dict[str, float]:
    """Best milliseconds per import case, from bytecode, the fresh interpreters interleaved.

    Args:
        repeat: timed imports per case.
        cache_dir: where the bytecode goes; a temporary directory, removed after, if omitted.
    """
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="s2sauth-bench-pyc-") as fresh:
            return measure_imports(repeat, fresh)
    env = bytecode_environment(cache_dir)
    for _, module, preload in _IMPORTS:  # untimed: compiles what each case imports
        _import_ms(module, preload, env)
    best = {case: float("inf") for case, _, _ in _IMPORTS}
    for _ in range(repeat):
        for case, module, preload in _IMPORTS:
            best[case] = min(best[case], _import_ms(module, preload, env))
    return best


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _first_request_ms(emulator: Any, token: str, warm: bool) -> float:
    """Start a fresh service, wait until it is ready, and time its first request."""
    import threading
    import time

    import httpx
    import uvicorn

    from s2sauth.asgi import IDTokenMiddleware
    from s2sauth.cli._serve import bind
    from s2sauth.verify.verifier import Verifier

    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url)
    app = IDTokenMiddleware(_asgi_app, verifier=verifier, warm=warm)
    sock = bind()
    config = uvicorn.Config(app, log_config=None, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):  # ready: what Cloud Run waits for before routing traffic
            if server.started:
                break
            time.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with httpx.Client(trust_env=False, timeout=10) as client:
            start = time.perf_counter()
            response = client.get(url, headers={"Authorization": f"Bearer {token}"})
            elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.text
        return elapsed * 1000
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def measure_first_request(repeat: int) -> dict[bool, float]:
    """Best first-request milliseconds, with and without warming, interleaved."""
    from s2sauth.emulator import Emulator

    best = {True: float("inf"), False: float("inf")}
    with Emulator(CALLER) as emulator:
        emulator.inject("certs", delay=KEYS_DELAY)
        token = emulator.mint(AUDIENCE, account=CALLER)
        for _ in range(repeat):
            for warm in (False, True):
                best[warm] = min(best[warm], _first_request_ms(emulator, token, warm))
    return best


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time every case; one row per case (see ``benchmarks/__main__.py`` for the fields)."""
    best = measure_imports(3 if quick else 15)
    rows: list[dict[str, Any]] = []
    anchors = {preload: best[case] for case, module, preload in _IMPORTS if module == ANCHOR}
    for case, module, preload in _IMPORTS:
        row: dict[str, Any] = {"benchmark": BENCHMARK, "case": case, "value": best[case]}
        row["unit"] = "ms"
        if module == "s2sauth.asgi" or case == "import s2sauth.requests, requests loaded":
            ratio = best[case] / anchors[preload]
            row.update(ratio=ratio, anchor="anchor", target=f"<= {TARGET}x", met=ratio <= TARGET)
        elif module in ("requests", "s2sauth.requests"):
            row.update(ratio=best[case] / anchors[preload], anchor="anchor")
        rows.append(row)
    first = measure_first_request(2 if quick else 7)
    rows.append(
        {"benchmark": BENCHMARK, "case": "first request, cold keys", "value": first[False]}
        | {"unit": "ms"}
    )
    rows.append(
        {"benchmark": BENCHMARK, "case": "first request, warmed on lifespan startup"}
        | {"value": first[True], "unit": "ms", "ratio": first[True] / first[False]}
        | {"anchor": "cold"}
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    args = parser.parse_args()
    from benchmarks._report import table

    print(table(run(quick=args.quick)))


if __name__ == "__main__":
    main()
