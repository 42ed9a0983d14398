"""Every example in examples/ runs against the emulator, so none can rot.

Servers are imported with their configuration in the environment and served
under uvicorn or waitress; clients run as subprocesses, pointed at the emulator
by ``GCE_METADATA_HOST`` only, the way a user runs them.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc
import httpx
import pytest

from s2sauth._http import HTTPTransport
from s2sauth.cli._demo_aiohttp import serve_aiohttp
from s2sauth.cli._serve import bind, serve_asgi, serve_wsgi
from s2sauth.cli.demo import CALLER, STRANGER
from s2sauth.emulator import Emulator
from s2sauth.grpc import secure_channel
from s2sauth.httpx import IDTokenAuth
from s2sauth.tokens.provider import IDTokenProvider
from s2sauth.tokens.sources import MetadataServerSource

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SERVERS = {
    "server_starlette": serve_asgi,
    "server_fastapi": serve_asgi,
    "server_flask": serve_wsgi,
    "server_wsgi": serve_wsgi,
    "aiohttp_server": serve_aiohttp,
}
CLIENTS = ("client_requests", "client_httpx", "client_httpx_async", "aiohttp_client")
# Served in a subprocess: each configures Django's process-wide settings.
DJANGO_SERVERS = ("server_django",)
GRPC = ("grpc_server", "grpc_client")
CLOUD_RUN_CALLER = EXAMPLES / "cloudrun" / "caller.py"
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """The emulator, with the allowed caller as the default account and a stranger."""
    with Emulator((CALLER, STRANGER)) as em:
        yield em


def _load(path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _server_env(emulator: Emulator, origin: str) -> dict[str, str]:
    return {
        "AUDIENCE": origin,
        "ALLOWED_CALLERS": CALLER,
        "S2SAUTH_CERTS_URL": emulator.jwks_url,
    }


@pytest.fixture
def transport() -> Iterator[HTTPTransport]:
    """A connection pool for the test's own token fetches, closed afterwards."""
    pool = HTTPTransport()
    yield pool
    pool.close()


def _auth(emulator: Emulator, transport: HTTPTransport, account: str = "default") -> IDTokenAuth:
    source = MetadataServerSource(account, host=emulator.host, transport=transport)
    return IDTokenAuth(provider=IDTokenProvider(source))


@pytest.fixture
def receiver(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """examples/server_starlette.py, served by uvicorn; yields its origin."""
    sock = bind()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    module = _load(EXAMPLES / "server_starlette.py", _server_env(emulator, origin), monkeypatch)
    with serve_asgi(module.app, sock):
        yield origin


def _client_env(emulator: Emulator, target: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARIABLES}
    for name in ("GCE_METADATA_ROOT", "GCE_METADATA_IP", "GOOGLE_APPLICATION_CREDENTIALS"):
        env.pop(name, None)
    env.update(GCE_METADATA_HOST=emulator.host, TARGET_URL=target, NO_PROXY="127.0.0.1")
    return env


def test_every_example_is_tested() -> None:
    """Each Python file in examples/ is one this module runs."""
    found = {path.stem for path in EXAMPLES.glob("*.py")}
    assert found == set(SERVERS) | set(CLIENTS) | set(DJANGO_SERVERS) | set(GRPC)
    assert sorted(p.name for p in (EXAMPLES / "cloudrun").glob("*.py")) == ["caller.py"]


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_server_lets_in_only_the_allowed_caller(
    name: str, emulator: Emulator, transport: HTTPTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server example greets the caller, and answers 401 without a token, 403 to a stranger."""
    sock = bind()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    module = _load(EXAMPLES / f"{name}.py", _server_env(emulator, origin), monkeypatch)
    with SERVERS[name](module.app, sock), httpx.Client(trust_env=False, timeout=10) as client:
        allowed = client.get(origin + "/", auth=_auth(emulator, transport))
        anonymous = client.get(origin + "/")
        stranger = client.get(origin + "/", auth=_auth(emulator, transport, STRANGER))
    assert (allowed.status_code, allowed.json()) == (200, {"hello": CALLER})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert stranger.status_code == 403


def test_starlette_health_check_needs_no_token(receiver: str) -> None:
    """The Starlette example exempts /healthz, as a Cloud Run health check needs."""
    with httpx.Client(trust_env=False) as client:
        response = client.get(receiver + "/healthz")
    assert (response.status_code, response.text) == (200, "ok")


@pytest.mark.parametrize("name", CLIENTS)
def test_client_calls_the_receiver(name: str, emulator: Emulator, receiver: str) -> None:
    """A client example, run as a script, gets 200 and the receiver's greeting."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        env=_client_env(emulator, receiver + "/"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    for line in lines:
        status, _, body = line.partition(" ")
        assert status == "200"
        assert httpx.Response(200, content=body).json() == {"hello": CALLER}


def _wait_until_listening(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    pytest.fail("the Cloud Run caller example did not start listening")


def test_cloud_run_caller_relays_the_receivers_answer(emulator: Emulator, receiver: str) -> None:
    """examples/cloudrun/caller.py, under uvicorn, calls TARGET_URL and reports the answer."""
    with bind() as sock:
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(CLOUD_RUN_CALLER.parent)]
    command += ["caller:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = _client_env(emulator, receiver + "/")
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as process:
        try:
            _wait_until_listening(port, process)
            with httpx.Client(trust_env=False, timeout=30) as client:
                report = client.get(f"http://127.0.0.1:{port}/").json()
        finally:
            process.terminate()
            process.communicate(timeout=30)
    assert report["status"] == 200
    assert httpx.Response(200, content=report["body"]).json() == {"hello": CALLER}


@pytest.mark.parametrize("server", ["waitress", "uvicorn"])
def test_django_server_lets_in_only_the_allowed_caller(
    server: str, emulator: Emulator, transport: HTTPTransport
) -> None:
    """examples/server_django.py, under waitress and uvicorn: 200, 401, 403, health check open."""
    pytest.importorskip("django")
    with bind() as sock:
        port = sock.getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    if server == "waitress":
        command = [
            "-m",
            "waitress",
            "--listen",
            f"127.0.0.1:{port}",
            "--call",
            "server_django:wsgi",
        ]
    else:
        command = ["-m", "uvicorn", "--factory", "server_django:asgi", "--port", str(port)]
        command += ["--lifespan", "off", "--log-level", "warning"]
    env = _client_env(emulator, origin) | _server_env(emulator, origin)
    env["PYTHONPATH"] = str(EXAMPLES.parent)  # this checkout's s2sauth, whatever is installed
    with subprocess.Popen(
        [sys.executable, *command], cwd=EXAMPLES, env=env, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            _wait_until_listening(port, process)
            with httpx.Client(trust_env=False, timeout=10) as client:
                allowed = client.get(origin + "/", auth=_auth(emulator, transport))
                anonymous = client.get(origin + "/")
                stranger = client.get(origin + "/", auth=_auth(emulator, transport, STRANGER))
                health = client.get(origin + "/healthz")
        finally:
            process.terminate()
            _, log = process.communicate(timeout=30)
    assert (allowed.status_code, allowed.json()) == (200, {"hello": CALLER})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="s2sauth"'
    assert stranger.status_code == 403
    assert (health.status_code, health.text) == (200, "ok")
    assert "rejected: caller_not_allowed" in log  # the refusal is logged where operators look


@pytest.fixture
def grpc_receiver(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """examples/grpc_server.py, serving on loopback; yields its target, localhost:PORT."""
    with bind() as sock:
        port = sock.getsockname()[1]
    env = _server_env(emulator, f"https://localhost:{port}")
    module = _load(EXAMPLES / "grpc_server.py", env, monkeypatch)
    server = module.create_server(f"localhost:{port}")
    server.start()
    yield f"localhost:{port}"
    server.stop(None).wait(10)


def test_grpc_server_lets_in_only_the_allowed_caller(
    grpc_receiver: str, emulator: Emulator, transport: HTTPTransport
) -> None:
    """The gRPC server example greets the caller; no token is UNAUTHENTICATED, a stranger
    PERMISSION_DENIED."""
    codes = []
    for account in ("default", STRANGER, None):
        provider = None
        if account is not None:
            source = MetadataServerSource(account, host=emulator.host, transport=transport)
            provider = IDTokenProvider(source)
        local = grpc.local_channel_credentials()
        channel = (
            secure_channel(grpc_receiver, provider=provider, credentials=local)
            if provider is not None
            else grpc.secure_channel(grpc_receiver, local)
        )
        with channel:
            try:
                reply = channel.unary_unary("/greeter.Greeter/SayHello")(b"", timeout=10)
            except grpc.RpcError as exc:
                codes.append(exc.code())
            else:
                assert reply == f"hello, {CALLER}".encode()
                codes.append(grpc.StatusCode.OK)
    assert codes == [
        grpc.StatusCode.OK,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    ]


def test_grpc_client_calls_the_receiver(emulator: Emulator, grpc_receiver: str) -> None:
    """examples/grpc_client.py, run as a script, prints the gRPC server's greeting."""
    env = _client_env(emulator, "") | {"TARGET": grpc_receiver}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "grpc_client.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"hello, {CALLER}"
