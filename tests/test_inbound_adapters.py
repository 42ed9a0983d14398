"""One inbound contract suite, run against every adapter under a real server.

ASGI (a Starlette app and a bare ASGI app) and FastAPI run under uvicorn; WSGI
and Flask under waitress. The emulator serves the keys over real HTTP and mints
the tokens; the clients are httpx and websockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager, contextmanager
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn
import waitress
import websockets.exceptions
import websockets.sync.client
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from flask import Flask, g
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from s2sauth._http import HTTPTransport
from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
from s2sauth.emulator import Emulator
from s2sauth.fastapi import IDTokenBearer
from s2sauth.flask import require_id_token
from s2sauth.verify.caller import Caller
from s2sauth.verify.http import SIGNATURE_REMOVED
from s2sauth.verify.policy import Rule
from s2sauth.verify.verifier import Verifier
from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
OPS = "ops@demo-project.iam.gserviceaccount.com"
ALLOWED = (CALLER, OPS)

Server = Callable[[Verifier], AbstractContextManager[str]]


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The emulator with a caller, a stranger and an operator account."""
    with Emulator((CALLER, STRANGER, OPS), signing_key=emulator_key) as emu:
        yield emu


@pytest.fixture(scope="module")
def transport() -> Iterator[HTTPTransport]:
    """One key-fetch transport for every verifier here, its connections closed at the end."""
    transport = HTTPTransport()
    yield transport
    transport.close()


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/certs"


def make_verifier(emulator: Emulator, variant: str, transport: HTTPTransport) -> Verifier:
    certs_url = dead_url() if variant == "keys_down" else emulator.jwks_url
    return Verifier(
        AUDIENCE,
        allowed_callers=ALLOWED,
        certs_url=certs_url,
        trust_cloud_run_iam=variant == "trusting",
        transport=transport,
    )


def strip_signature(token: str) -> str:
    return f"{token.rpartition('.')[0]}.{SIGNATURE_REMOVED}"


def expired(emulator: Emulator, account: str = CALLER) -> str:
    now = int(time.time())
    return emulator.mint(AUDIENCE, account=account, claims={"iat": now - 7200, "exp": now - 3600})


@contextmanager
def uvicorn_server(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread (uvicorn skips signals off the main thread)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def waitress_server(app: Any) -> Iterator[str]:
    """Serve a WSGI app with waitress in a thread."""
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def close_all() -> None:
        # Runs on the server's loop thread: closing sockets under its select() would race.
        for channel in list(server._map.values()):
            channel.close()

    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        try:
            server.trigger.pull_trigger(close_all)
        except OSError:  # seen once in a full run: the trigger's pipe already gone (EBADF)
            for channel in list(server._map.values()):
                channel.close()
        thread.join(10)
        server.task_dispatcher.shutdown()


class InboundContract:
    """What every inbound adapter must answer. Subclasses define ``serve``.

    Each served app has ``/hello`` (the default allow-list: caller and ops),
    ``/admin`` (ops only) and ``/healthz`` (no token); protected routes answer
    ``{"email": <the Caller's email>}``.
    """

    serve: ClassVar[Server]

    @pytest.fixture(scope="class")
    @classmethod
    def servers(
        cls, emulator: Emulator, transport: HTTPTransport
    ) -> Iterator[Callable[[str], str]]:
        """One server per verifier variant, started on first use."""
        urls: dict[str, str] = {}
        with ExitStack() as stack:

            def url(variant: str = "standard") -> str:
                if variant not in urls:
                    verifier = make_verifier(emulator, variant, transport)
                    urls[variant] = stack.enter_context(cls.serve(verifier))
                return urls[variant]

            yield url

    @pytest.fixture
    def client(self) -> Iterator[httpx.Client]:
        """A plain httpx client that ignores proxy settings."""
        with httpx.Client(trust_env=False, timeout=10) as client:
            yield client

    def payload(self, response: httpx.Response) -> Any:
        """The denial JSON object (FastAPI wraps it in ``detail``)."""
        return response.json()

    def get(
        self,
        client: httpx.Client,
        url: str,
        token: str | None = None,
        headers: Iterable[tuple[str, str | bytes]] = (),
    ) -> httpx.Response:
        sent = list(headers)
        if token is not None:
            sent.append(("Authorization", f"Bearer {token}"))
        return client.get(url, headers=sent)

    def assert_denied(
        self, response: httpx.Response, status: int, reason: str, token: str = ""
    ) -> None:
        assert response.status_code == status, response.text
        assert self.payload(response)["reason"] == reason
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        if token:
            assert token not in response.text
            assert token.split(".")[-1] not in str(response.headers)

    def test_allowed_caller(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """An allowed caller gets 200 and the handler sees its Caller."""
        response = self.get(client, f"{servers()}/hello", emulator.mint(AUDIENCE, account=CALLER))
        assert response.status_code == 200, response.text
        assert response.json()["email"] == CALLER

    def test_no_token(self, servers: Callable[..., str], client: httpx.Client) -> None:
        """No token: 401 with a bare challenge (no error code)."""
        response = self.get(client, f"{servers()}/hello")
        self.assert_denied(response, 401, "missing_token")
        assert response.headers["www-authenticate"] == 'Bearer realm="s2sauth"'

    def test_wrong_audience(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """A token for another audience: 401 invalid_token, the token not echoed."""
        token = emulator.mint("https://other.example", account=CALLER)
        response = self.get(client, f"{servers()}/hello", token)
        self.assert_denied(response, 401, "audience_mismatch", token)
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="s2sauth", error="invalid_token", ')
        assert 'error_description="' in challenge

    def test_expired(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """An expired token: 401 expired."""
        token = expired(emulator)
        self.assert_denied(self.get(client, f"{servers()}/hello", token), 401, "expired", token)

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            pytest.param("Bearer garbage", "malformed", id="not a jwt"),
            pytest.param("Bearer a.b.c", "malformed", id="three junk segments"),
            pytest.param("Bearer", "malformed", id="scheme only"),
            pytest.param("Basic dXNlcjpwYXNz", "missing_token", id="basic"),
            pytest.param(b"Bearer \xff\xfe\x80", "malformed", id="latin-1 junk"),
            pytest.param(b"\xc3\xa9\xff", "missing_token", id="junk without scheme"),
        ],
    )
    def test_garbage_header(
        self, servers: Callable[..., str], client: httpx.Client, value: str | bytes, reason: str
    ) -> None:
        """A junk Authorization header of any shape is a 401, never a 500."""
        response = self.get(client, f"{servers()}/hello", headers=[("Authorization", value)])
        self.assert_denied(response, 401, reason)

    def test_stranger(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """A valid token from a caller not allowed: 403 insufficient_scope."""
        token = emulator.mint(AUDIENCE, account=STRANGER)
        response = self.get(client, f"{servers()}/hello", token)
        self.assert_denied(response, 403, "caller_not_allowed", token)
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]

    def test_keys_down(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """No keys can be had at start: 503 with Retry-After, fail closed."""
        token = emulator.mint(AUDIENCE, account=CALLER)
        response = self.get(client, f"{servers('keys_down')}/hello", token)
        self.assert_denied(response, 503, "keys_unavailable", token)
        assert int(response.headers["retry-after"]) > 0

    def test_exempt_path(self, servers: Callable[..., str], client: httpx.Client) -> None:
        """An exempt path is served without a token."""
        response = self.get(client, f"{servers()}/healthz")
        assert response.status_code == 200
        assert response.json()["ok"] is True

    def test_route_rule(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """A stricter per-route allow-list: 403 for the caller, 200 for ops."""
        url = f"{servers()}/admin"
        token = emulator.mint(AUDIENCE, account=CALLER)
        self.assert_denied(self.get(client, url, token), 403, "caller_not_allowed")
        response = self.get(client, url, emulator.mint(AUDIENCE, account=OPS))
        assert response.status_code == 200
        assert response.json()["email"] == OPS

    def test_serverless_header(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """A token in X-Serverless-Authorization is accepted; Authorization is then the app's."""
        token = emulator.mint(AUDIENCE, account=CALLER)
        headers = [("X-Serverless-Authorization", f"Bearer {token}"), ("Authorization", "Basic x")]
        response = self.get(client, f"{servers()}/hello", headers=headers)
        assert response.status_code == 200
        assert response.json()["email"] == CALLER

    def test_stripped_signature_needs_opt_in(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """A signature Cloud Run removed is accepted only with trust_cloud_run_iam."""
        stripped = strip_signature(emulator.mint(AUDIENCE, account=CALLER))
        headers = [("X-Serverless-Authorization", f"Bearer {stripped}")]
        refused = self.get(client, f"{servers()}/hello", headers=headers)
        self.assert_denied(refused, 401, "signature_removed")
        accepted = self.get(client, f"{servers('trusting')}/hello", headers=headers)
        assert accepted.status_code == 200
        assert accepted.json()["email"] == CALLER

    def test_stripped_signature_with_intact_authorization(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """Both headers, X-Serverless stripped: the intact Authorization token is verified."""
        token = emulator.mint(AUDIENCE, account=CALLER)
        headers = [("X-Serverless-Authorization", f"Bearer {strip_signature(token)}")]
        response = self.get(client, f"{servers()}/hello", token, headers=headers)
        assert response.status_code == 200

    def test_repeated_authorization_header(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """Two Authorization headers are ambiguous: 401 malformed."""
        token = emulator.mint(AUDIENCE, account=CALLER)
        headers = [("Authorization", f"Bearer {token}")]
        response = self.get(client, f"{servers()}/hello", token, headers=headers)
        self.assert_denied(response, 401, "malformed")

    def test_each_rejection_is_counted_and_logged_once(
        self,
        emulator: Emulator,
        transport: HTTPTransport,
        client: httpx.Client,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """One INFO line per rejected request; the verifier counts every one it sees, 403s too."""
        verifier = make_verifier(emulator, "standard", transport)
        cases = [
            ("/hello", emulator.mint(AUDIENCE, account=STRANGER), 403, "caller_not_allowed"),
            ("/admin", emulator.mint(AUDIENCE, account=CALLER), 403, "caller_not_allowed"),
            ("/hello", expired(emulator), 401, "expired"),
            ("/hello", "garbage", 401, "malformed"),
            ("/hello", None, 401, "missing_token"),
        ]
        with type(self).serve(verifier) as url:
            warm_up = self.get(client, f"{url}/hello", emulator.mint(AUDIENCE, account=CALLER))
            assert warm_up.status_code == 200  # the key fetch is behind us
            for path, token, status, reason in cases:
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="s2sauth"):
                    self.assert_denied(self.get(client, f"{url}{path}", token), status, reason)
                # s2sauth's own lines (a framework may log the 4xx response too, as Django does).
                lines = [
                    r
                    for r in caplog.records
                    if r.name.partition(".")[0] == "s2sauth"
                    and not r.name.startswith("s2sauth.emulator")
                ]
                assert [(r.levelno, reason in r.getMessage()) for r in lines] == [
                    (logging.INFO, True)
                ], reason
        # A missing token never reaches the verifier's checks; the gate records it there.
        assert verifier.stats.rejected_by_reason == {
            "caller_not_allowed": 2,
            "expired": 1,
            "malformed": 1,
            "missing_token": 1,
        }


# --- ASGI -----------------------------------------------------------------------------------


def starlette_app(verifier: Verifier) -> Any:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"started": True}

    async def hello(request: Request) -> JSONResponse:
        caller: Caller = request.state.caller
        return JSONResponse({"email": caller.email, "started": request.state.started})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "lifespan": request.state.started})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(str(websocket.state.caller.email))
        await websocket.close()

    routes = [Route("/hello", hello), Route("/admin", hello), Route("/healthz", healthz)]
    app = Starlette(routes=[*routes, WebSocketRoute("/ws", ws)], lifespan=lifespan)
    return ASGIMiddleware(
        app, verifier=verifier, exempt=["/healthz"], rules=[Rule("/admin", [OPS])]
    )


def bare_asgi_app(verifier: Verifier) -> Any:
    lifespan: dict[str, bool] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                lifespan["started"] = True
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        caller = scope.get("s2sauth.caller")
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": caller.email})
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["path"] == "/healthz":
            body = {"ok": True, "lifespan": lifespan.get("started", False)}
        else:
            assert scope["state"]["caller"] is caller
            body = {"email": caller.email}
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return ASGIMiddleware(
        app, verifier=verifier, exempt=["/healthz"], rules=[Rule("/admin", [OPS])]
    )


class ASGIContract(InboundContract):
    """ASGI-only checks: lifespan and websockets."""

    def test_lifespan_passes_through(
        self, servers: Callable[..., str], client: httpx.Client
    ) -> None:
        """The app's lifespan ran: the middleware passed the lifespan scope through."""
        assert self.get(client, f"{servers()}/healthz").json()["lifespan"] is True

    def test_websocket_allowed(self, servers: Callable[..., str], emulator: Emulator) -> None:
        """An allowed caller's websocket is accepted and the app sees the Caller."""
        url = servers().replace("http://", "ws://") + "/ws"
        headers = {"Authorization": f"Bearer {emulator.mint(AUDIENCE, account=CALLER)}"}
        with websockets.sync.client.connect(url, additional_headers=headers) as ws:
            assert ws.recv(timeout=10) == CALLER

    @pytest.mark.parametrize(("account", "status"), [(None, 401), (STRANGER, 403)])
    def test_websocket_denied(
        self, servers: Callable[..., str], emulator: Emulator, account: str | None, status: int
    ) -> None:
        """A refused websocket handshake gets the HTTP denial (uvicorn offers the extension)."""
        url = servers().replace("http://", "ws://") + "/ws"
        headers = {}
        if account is not None:
            headers["Authorization"] = f"Bearer {emulator.mint(AUDIENCE, account=account)}"
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            websockets.sync.client.connect(url, additional_headers=headers)
        response = caught.value.response
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json"
        assert "www-authenticate" in {name.lower() for name in response.headers}


class TestStarlette(ASGIContract):
    """s2sauth.asgi.IDTokenMiddleware around a Starlette app, under uvicorn."""

    @staticmethod
    @contextmanager
    def serve(verifier: Verifier) -> Iterator[str]:
        """Serve the Starlette app."""
        with uvicorn_server(starlette_app(verifier)) as url:
            yield url

    def test_lifespan_state_survives(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """The Caller is added to request.state beside the lifespan state."""
        response = self.get(client, f"{servers()}/hello", emulator.mint(AUDIENCE, account=CALLER))
        assert response.json() == {"email": CALLER, "started": True}


class TestBareASGI(ASGIContract):
    """s2sauth.asgi.IDTokenMiddleware around a bare ASGI callable, under uvicorn."""

    @staticmethod
    @contextmanager
    def serve(verifier: Verifier) -> Iterator[str]:
        """Serve the bare ASGI app."""
        with uvicorn_server(bare_asgi_app(verifier)) as url:
            yield url


# --- FastAPI --------------------------------------------------------------------------------


def fastapi_app(verifier: Verifier) -> FastAPI:
    app = FastAPI()
    default = IDTokenBearer(verifier)
    ops_only = IDTokenBearer(verifier, allowed_callers=[OPS])

    @app.get("/hello")
    async def hello(caller: Caller = Depends(default)) -> dict[str, Any]:  # noqa: B008
        return {"email": caller.email}

    @app.get("/admin")
    def admin(caller: Caller = Depends(ops_only)) -> dict[str, Any]:  # noqa: B008
        return {"email": caller.email}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, caller: Caller = Depends(default)) -> None:  # noqa: B008
        await websocket.accept()
        await websocket.send_text(str(caller.email))
        await websocket.close()

    return app


class TestFastAPI(InboundContract):
    """s2sauth.fastapi.IDTokenBearer as a per-route dependency, under uvicorn."""

    @staticmethod
    @contextmanager
    def serve(verifier: Verifier) -> Iterator[str]:
        """Serve the FastAPI app."""
        with uvicorn_server(fastapi_app(verifier)) as url:
            yield url

    def payload(self, response: httpx.Response) -> Any:
        """FastAPI's HTTPException body wraps the denial object in ``detail``."""
        return response.json()["detail"]

    def test_openapi_declares_bearer_scheme(
        self, servers: Callable[..., str], client: httpx.Client
    ) -> None:
        """openapi.json declares the bearer scheme and the routes that need it."""
        schema = self.get(client, f"{servers()}/openapi.json").json()
        scheme = schema["components"]["securitySchemes"]["GoogleIDToken"]
        assert scheme["type"] == "http"
        assert scheme["scheme"] == "bearer"
        assert scheme["bearerFormat"] == "JWT"
        assert schema["paths"]["/hello"]["get"]["security"] == [{"GoogleIDToken": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]

    def test_websocket_route(self, servers: Callable[..., str], emulator: Emulator) -> None:
        """In a websocket route the dependency returns the Caller, or refuses the handshake."""
        url = servers().replace("http://", "ws://") + "/ws"
        headers = {"Authorization": f"Bearer {emulator.mint(AUDIENCE, account=CALLER)}"}
        with websockets.sync.client.connect(url, additional_headers=headers) as ws:
            assert ws.recv(timeout=10) == CALLER
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            websockets.sync.client.connect(url)
        assert caught.value.response.status_code == 403


class CountingVerifier(Verifier):
    """A Verifier that counts async verifications."""

    calls = 0

    async def aauthenticate(self, token: str) -> Caller:
        """Count, then verify."""
        self.calls += 1
        return await super().aauthenticate(token)


def test_fastapi_dependency_reuses_middleware_caller(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """Behind the ASGI middleware the dependency applies its policy without verifying again."""
    verifier = CountingVerifier(
        AUDIENCE, allowed_callers=ALLOWED, certs_url=emulator.jwks_url, transport=transport
    )
    app = fastapi_app(verifier)
    app.add_middleware(ASGIMiddleware, verifier=verifier, exempt=["/healthz"])
    with uvicorn_server(app) as url, httpx.Client(trust_env=False) as client:
        answers = [
            client.get(f"{url}/admin", headers={"Authorization": f"Bearer {token}"})
            for token in (emulator.mint(AUDIENCE, account=who) for who in (OPS, CALLER))
        ]
    assert [answer.status_code for answer in answers] == [200, 403]
    assert verifier.calls == 2
    assert verifier.stats.rejected_by_reason == {"caller_not_allowed": 1}


class CountingSyncVerifier(Verifier):
    """A Verifier that counts blocking verifications."""

    calls = 0

    def authenticate(self, token: str) -> Caller:
        """Count, then verify."""
        self.calls += 1
        return super().authenticate(token)


def test_flask_decorator_reuses_wsgi_middleware_caller(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """Behind the WSGI middleware the decorator applies its allow-list without verifying again."""
    verifier = CountingSyncVerifier(
        AUDIENCE, allowed_callers=ALLOWED, certs_url=emulator.jwks_url, transport=transport
    )
    app = WSGIMiddleware(flask_app(verifier), verifier=verifier, exempt=["/healthz"])
    with waitress_server(app) as url, httpx.Client(trust_env=False) as client:
        answers = [
            client.get(f"{url}/admin", headers={"Authorization": f"Bearer {token}"})
            for token in (emulator.mint(AUDIENCE, account=who) for who in (OPS, CALLER))
        ]
    assert [answer.status_code for answer in answers] == [200, 403]
    assert verifier.calls == 2
    assert verifier.stats.rejected_by_reason == {"caller_not_allowed": 1}


# --- WSGI -----------------------------------------------------------------------------------


def wsgi_app(verifier: Verifier) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/healthz":
            body: dict[str, Any] = {"ok": True}
        else:
            body = {"email": environ["s2sauth.caller"].email}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return WSGIMiddleware(
        app, verifier=verifier, exempt=["/healthz"], rules=[Rule("/admin", [OPS])]
    )


class TestWSGI(InboundContract):
    """s2sauth.wsgi.IDTokenMiddleware around a bare WSGI app, under waitress."""

    @staticmethod
    @contextmanager
    def serve(verifier: Verifier) -> Iterator[str]:
        """Serve the WSGI app."""
        with waitress_server(wsgi_app(verifier)) as url:
            yield url


def flask_app(verifier: Verifier) -> Flask:
    app = Flask("inbound")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/hello")
    @require_id_token(verifier=verifier)
    def hello() -> dict[str, Any]:
        return {"email": g.caller.email}

    @app.get("/admin")
    @require_id_token(verifier=verifier, allowed_callers=[OPS])
    def admin() -> dict[str, Any]:
        return {"email": g.caller.email}

    @app.get("/async")
    @require_id_token(verifier=verifier)
    async def async_view() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"email": g.caller.email, "async": True}

    return app


class TestFlask(InboundContract):
    """s2sauth.flask.require_id_token on Flask views, under waitress."""

    @staticmethod
    @contextmanager
    def serve(verifier: Verifier) -> Iterator[str]:
        """Serve the Flask app."""
        with waitress_server(flask_app(verifier)) as url:
            yield url

    def test_async_view(
        self, servers: Callable[..., str], client: httpx.Client, emulator: Emulator
    ) -> None:
        """An async view runs behind the decorator and sees g.caller."""
        response = self.get(client, f"{servers()}/async", emulator.mint(AUDIENCE, account=CALLER))
        assert response.json() == {"email": CALLER, "async": True}
        self.assert_denied(self.get(client, f"{servers()}/async"), 401, "missing_token")


# --- Without a server: paths no server here exercises -------------------------------------


class TestASGIWithoutServer:
    """ASGI behaviour uvicorn does not exercise: close-1008 fallback, on_error, other scopes."""

    pytestmark = pytest.mark.anyio

    @staticmethod
    def middleware(**options: Any) -> ASGIMiddleware:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "reached", "scope": scope["type"]})

        verifier = Verifier(AUDIENCE, certs_url=dead_url())
        return ASGIMiddleware(app, verifier=verifier, **options)

    async def test_cold_key_fetch_on_any_event_loop(
        self, emulator: Emulator, transport: HTTPTransport
    ) -> None:
        """The first request fetches the keys off the event loop, under asyncio and trio."""

        async def app(scope: Any, receive: Any, send: Any) -> None:
            body = scope["state"]["caller"].email.encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

        verifier = Verifier(AUDIENCE, certs_url=emulator.jwks_url, transport=transport)
        middleware = ASGIMiddleware(app, verifier=verifier)
        token = emulator.mint(AUDIENCE, account=CALLER)
        transport_ = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport_, base_url="http://svc") as client:
            response = await client.get("/", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert response.text == CALLER
        assert verifier.stats.key_fetches == 1

    async def test_websocket_close_1008_without_extension(self) -> None:
        """Without websocket.http.response the handshake is closed with 1008, never accepted."""
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/ws", "headers": [], "extensions": {}}
        await self.middleware()(scope, receive, send)
        assert sent == [{"type": "websocket.close", "code": 1008}]

    async def test_other_scopes_pass_through(self) -> None:
        """Scopes other than http and websocket reach the app untouched."""
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.middleware()({"type": "lifespan"}, None, send)  # type: ignore[arg-type]
        assert sent == [{"type": "reached", "scope": "lifespan"}]

    async def test_on_error(self) -> None:
        """on_error answers rejections in place of the standard response."""
        seen: list[str] = []

        def on_error(scope: Any, error: Any) -> Any:
            async def teapot(scope: Any, receive: Any, send: Any) -> None:
                seen.append(error.reason)
                await send({"type": "http.response.start", "status": 418, "headers": []})
                await send({"type": "http.response.body", "body": b""})

            return teapot

        transport = httpx.ASGITransport(app=self.middleware(on_error=on_error))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            response = await client.get("/hello")
        assert response.status_code == 418
        assert seen == ["missing_token"]


def test_wsgi_on_error() -> None:
    """The WSGI on_error hook answers rejections in place of the standard response."""

    def on_error(environ: Any, error: Any) -> Any:
        def teapot(environ: Any, start_response: Any) -> list[bytes]:
            start_response("418 I'm a teapot", [("X-Reason", error.reason)])
            return [b""]

        return teapot

    app = WSGIMiddleware(
        lambda environ, start_response: [],
        verifier=Verifier(AUDIENCE, certs_url=dead_url()),
        on_error=on_error,
    )
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://svc") as client:
        response = client.get("/hello")
    assert response.status_code == 418
    assert response.headers["x-reason"] == "missing_token"
