"""The inbound adapters composed the ways apps compose them: mounted under a prefix, served
under a root path, and a route dependency or view decorator behind the middleware."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from flask import Flask, g
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from s2sauth._http import HTTPTransport
from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
from s2sauth.emulator import Emulator
from s2sauth.fastapi import IDTokenBearer
from s2sauth.flask import require_id_token
from s2sauth.verify.caller import Caller
from s2sauth.verify.policy import Rule
from s2sauth.verify.verifier import Verifier
from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

CALLER = "caller@demo-project.iam.gserviceaccount.com"
OPS = "ops@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://svc.example"
SVC_A, SVC_B = "https://svc-a.example", "https://svc-b.example"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """An emulator serving the caller and the operator accounts."""
    with Emulator((CALLER, OPS)) as emu:
        yield emu


@pytest.fixture
def transport() -> Iterator[HTTPTransport]:
    """A transport for the verifiers' key fetches."""
    pooled = HTTPTransport()
    yield pooled
    pooled.close()


def verifier(emulator: Emulator, transport: HTTPTransport, audience: str | list[str]) -> Verifier:
    """A verifier for ``audience`` admitting the caller and the operator."""
    return Verifier(
        audience, allowed_callers=[CALLER, OPS], certs_url=emulator.jwks_url, transport=transport
    )


def protected(checker: Verifier) -> ASGIMiddleware:
    """A Starlette app with /admin for the operator only and an exempt /healthz."""

    async def admin(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"admin for {request.state.caller.email}")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/admin", admin), Route("/healthz", health)])
    return ASGIMiddleware(app, verifier=checker, rules=[Rule("/admin", [OPS])], exempt=["/healthz"])


def bearer(token: str) -> dict[str, str]:
    """The Authorization header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """These tests exercise routing, not the event loop: asyncio is enough."""
    return "asyncio"


async def test_rules_and_exempt_paths_apply_inside_a_mounted_app(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """Rules are written for the app: mounted at /v1, its /admin rule still holds."""
    outer = Starlette(routes=[Mount("/v1", app=protected(verifier(emulator, transport, AUDIENCE)))])
    caller, ops = (emulator.mint(AUDIENCE, account=account) for account in (CALLER, OPS))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://test"
    ) as client:
        assert (await client.get("/v1/admin", headers=bearer(caller))).status_code == 403
        assert (await client.get("/v1/admin", headers=bearer(ops))).text == f"admin for {OPS}"
        assert (await client.get("/v1/healthz")).status_code == 200


def test_rules_and_exempt_paths_apply_under_a_root_path(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """Under `uvicorn --root-path /api` the /admin rule holds and /healthz stays open."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        protected(verifier(emulator, transport, AUDIENCE)),
        host="127.0.0.1",
        port=port,
        root_path="/api",
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        token = emulator.mint(AUDIENCE, account=CALLER)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            assert client.get("/admin", headers=bearer(token)).status_code == 403
            assert client.get("/healthz").status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)


async def test_fastapi_dependency_with_its_own_verifier_verifies_again(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """A route's dependency with a stricter verifier than the middleware's is not bypassed."""
    lenient = Verifier(
        [SVC_A, SVC_B],
        allowed_callers=[CALLER],
        certs_url=emulator.jwks_url,
        transport=transport,
        trust_cloud_run_iam=True,
    )
    strict = verifier(emulator, transport, SVC_B)
    app = FastAPI()
    only_b = IDTokenBearer(strict)

    @app.get("/b-only")
    async def b_only(caller: Caller = Depends(only_b)) -> dict[str, str]:  # noqa: B008
        return {"audience": caller.audience}

    app.add_middleware(ASGIMiddleware, verifier=lenient)
    for_b = emulator.mint(SVC_B, account=CALLER)
    stripped = for_b.rpartition(".")[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        for token in (emulator.mint(SVC_A, account=CALLER), stripped):
            assert (await client.get("/b-only", headers=bearer(token))).status_code == 401
        ok = await client.get("/b-only", headers=bearer(for_b))
    assert ok.json() == {"audience": SVC_B}


def test_flask_decorator_with_its_own_verifier_verifies_again(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """A view decorated with a stricter verifier than the WSGI middleware's is not bypassed."""
    strict = verifier(emulator, transport, SVC_B)
    flask_app = Flask(__name__)

    @flask_app.get("/b-only")
    @require_id_token(verifier=strict)
    def b_only() -> dict[str, str]:
        return {"audience": g.caller.audience}

    app = WSGIMiddleware(flask_app, verifier=verifier(emulator, transport, [SVC_A, SVC_B]))
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test") as client:
        refused = client.get("/b-only", headers=bearer(emulator.mint(SVC_A, account=CALLER)))
        ok = client.get("/b-only", headers=bearer(emulator.mint(SVC_B, account=CALLER)))
    assert refused.status_code == 401
    assert ok.json() == {"audience": SVC_B}
