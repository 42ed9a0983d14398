"""Push audiences and IAP assertions through the adapters added beside ASGI and WSGI: Django
(under waitress), aiohttp and gRPC. Each hands the gate the request's paths and IAP's
header, so the same tokens get the same answers as through ``tests/test_push.py`` and
``tests/test_iap.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import override_settings
from django_site import MIDDLEWARE
from django_site.testing import django_server

from s2sauth import Verifier
from s2sauth._http import HTTPTransport
from s2sauth.cli._demo_aiohttp import serve_aiohttp
from s2sauth.cli._serve import bind
from s2sauth.emulator import Emulator
from s2sauth.iap import IAPVerifier
from s2sauth.verify.audience import PushAudience

BASE = "https://front-door-123456789012.europe-west1.run.app"
PUSHER = "pubsub-push@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
IAP_AUDIENCE = "/projects/123456789012/global/backendServices/42"
PERSON = "alice@example.com"


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The emulator, minting for the push account and a stranger, with its IAP keys."""
    with Emulator((PUSHER, STRANGER), signing_key=emulator_key) as running:
        yield running


@pytest.fixture(scope="module")
def transport() -> Iterator[HTTPTransport]:
    """One pooled transport for the module's key fetches."""
    pool = HTTPTransport()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def push_verifier(emulator: Emulator, transport: HTTPTransport) -> Verifier:
    """Push tokens for BASE + the request's path, from the push account only."""
    return Verifier(
        PushAudience(BASE),
        allowed_callers=[PUSHER],
        certs_url=emulator.jwks_url,
        transport=transport,
    )


@pytest.fixture(scope="module")
def people(emulator: Emulator, transport: HTTPTransport) -> IAPVerifier:
    """IAP assertions for IAP_AUDIENCE, naming PERSON."""
    return IAPVerifier(
        IAP_AUDIENCE, allowed_users=[PERSON], keys_url=emulator.iap_jwks_url, transport=transport
    )


def _aiohttp_app(verifier: Verifier, **options: Any) -> Any:
    from aiohttp import web

    from s2sauth.aiohttp import id_token_middleware

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"email": request["caller"].email})

    app = web.Application(middlewares=[id_token_middleware(verifier=verifier, **options)])
    app.router.add_route("*", "/hello", hello)
    return app


@pytest.fixture(params=["django", "aiohttp"])
def push_server(request: pytest.FixtureRequest, push_verifier: Verifier) -> Iterator[str]:
    """A push receiver at /hello, under Django (waitress) or aiohttp."""
    if request.param == "django":
        with (
            override_settings(S2SAUTH={"VERIFIER": push_verifier}),
            django_server("wsgi", [MIDDLEWARE]) as url,
        ):
            yield url
    else:
        with serve_aiohttp(_aiohttp_app(push_verifier), bind()) as url:
            yield url


def test_push_tokens_through_django_and_aiohttp(push_server: str, emulator: Emulator) -> None:
    """A push token for BASE/hello (query too) gets in; another path, a forged Host or
    another account does not."""

    def get(path: str, aud: str, account: str = PUSHER, **headers: str) -> httpx.Response:
        token = emulator.mint(aud, account=account)
        headers["Authorization"] = f"Bearer {token}"
        return httpx.get(push_server + path, headers=headers)

    assert get("/hello", BASE + "/hello").json() == {"email": PUSHER}
    assert get("/hello?job=1", BASE + "/hello?job=1").status_code == 200
    assert get("/hello", BASE + "/elsewhere").status_code == 401
    forged = get("/hello", "https://other.example/hello", Host="other.example")
    assert forged.status_code == 401
    assert get("/hello", BASE + "/hello", account=STRANGER).status_code == 403


@pytest.fixture(params=["django", "aiohttp"])
def iap_server(
    request: pytest.FixtureRequest, push_verifier: Verifier, people: IAPVerifier
) -> Iterator[str]:
    """A service taking people (IAP) on every path, under Django or aiohttp."""
    if request.param == "django":
        config = {"VERIFIER": push_verifier, "IAP": people, "ACCEPT": "person"}
        with override_settings(S2SAUTH=config), django_server("wsgi", [MIDDLEWARE]) as url:
            yield url
    else:
        app = _aiohttp_app(push_verifier, iap=people, accept="person")
        with serve_aiohttp(app, bind()) as url:
            yield url


def test_iap_assertions_through_django_and_aiohttp(iap_server: str, emulator: Emulator) -> None:
    """IAP's assertion lets its person in; a stranger, a bearer ID token or nothing does not."""
    header = "x-goog-iap-jwt-assertion"
    ok = httpx.get(
        iap_server + "/hello", headers={header: emulator.mint_iap(IAP_AUDIENCE, email=PERSON)}
    )
    assert ok.status_code == 200 and ok.json() == {"email": PERSON}
    other = emulator.mint_iap(IAP_AUDIENCE, email="mallory@example.com")
    assert httpx.get(iap_server + "/hello", headers={header: other}).status_code == 403
    bearer = {"Authorization": f"Bearer {emulator.mint(BASE + '/hello', account=PUSHER)}"}
    assert httpx.get(iap_server + "/hello", headers=bearer).status_code == 401
    assert httpx.get(iap_server + "/hello").status_code == 401


def test_grpc_rules_by_kind_see_the_method_as_the_path(
    emulator: Emulator, push_verifier: Verifier
) -> None:
    """The gRPC interceptor hands the method name to the gate as the request's path: a push
    audience for BASE + /pkg.Svc/Method lets that method in, not another."""
    from concurrent import futures

    import s2sauth.grpc

    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        return s2sauth.grpc.current_caller().email.encode()

    handlers = {name: grpc.unary_unary_rpc_method_handler(who) for name in ("Push", "Other")}
    server = grpc.server(
        futures.ThreadPoolExecutor(4),
        interceptors=[s2sauth.grpc.IDTokenInterceptor(verifier=push_verifier)],
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Svc", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            token = emulator.mint(BASE + "/t.Svc/Push", account=PUSHER)
            metadata = (("authorization", f"Bearer {token}"),)
            push = channel.unary_unary("/t.Svc/Push")
            assert push(b"", metadata=metadata, timeout=10) == PUSHER.encode()
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary("/t.Svc/Other")(b"", metadata=metadata, timeout=10)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(None).wait(10)
