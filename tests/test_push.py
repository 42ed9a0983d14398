"""Push callers: Pub/Sub, Cloud Tasks, Cloud Scheduler and Eventarc tokens, whose audience is
the full target URL, through real servers; the forged-Host case; and ``s2sauth push``."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import flask
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_inbound_adapters import uvicorn_server, waitress_server

from s2sauth import AudienceMismatchError, ConfigurationError, Verifier
from s2sauth._http import HTTPTransport
from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
from s2sauth.cli import main
from s2sauth.cli.push import envelope
from s2sauth.emulator import Emulator
from s2sauth.flask import require_id_token
from s2sauth.verify.audience import PushAudience
from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

BASE = "https://push-receiver-123456789012.europe-west1.run.app"
PUSHER = "pubsub-push@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"
PATHS = ("/pubsub", "/tasks/run", "/scheduler", "/events")


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The emulator, minting for the push service account and a stranger."""
    with Emulator((PUSHER, STRANGER), signing_key=emulator_key) as running:
        yield running


@pytest.fixture(scope="module")
def verifier(emulator: Emulator) -> Iterator[Verifier]:
    """The receiver's verifier: base URL + path (push), the bare origin (Eventarc), one account."""
    pool = HTTPTransport()
    yield Verifier(
        [BASE, PushAudience(BASE)],
        allowed_callers=[PUSHER],
        certs_url=emulator.jwks_url,
        transport=pool,
    )
    pool.close()


# --- the audience itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aud", "path", "query", "accepted"),
    [
        pytest.param(BASE + "/pubsub", "/pubsub", "", True, id="path"),
        pytest.param(BASE + "/pubsub", "/pubsub", "a=1", True, id="aud without the query"),
        pytest.param(BASE + "/pubsub?a=1", "/pubsub", "a=1", True, id="aud with the query"),
        pytest.param(BASE + "/pubsub?a=1", "/pubsub", "a=2", False, id="another query"),
        pytest.param(BASE + "/pubsub?a=1", "/pubsub", "", False, id="query missing"),
        pytest.param(BASE + "/a%20b", "/a b", "", True, id="percent-encoded aud"),
        pytest.param(BASE, "/", "", True, id="root"),
        pytest.param(BASE + "/", "/", "", True, id="root with slash"),
        pytest.param(BASE + "/pubsub", "/tasks", "", False, id="another path"),
        pytest.param(BASE + "/pubsub", "/pubsub/x", "", False, id="a longer path"),
        pytest.param(BASE + "x/pubsub", "/pubsub", "", False, id="a longer host"),
        pytest.param("https://other.example/pubsub", "/pubsub", "", False, id="another host"),
    ],
)
def test_push_audience_matches_the_request(aud: str, path: str, query: str, accepted: bool) -> None:
    """base + path (+ ?query when the aud has one) is accepted; anything else is not."""
    assert PushAudience(BASE).accepts(aud, path, query) is accepted


@pytest.mark.parametrize("base", ["ftp://x", "https://x/?q=1", "https://x/#f", "not a url", ""])
def test_push_audience_refuses_bad_base_urls(base: str) -> None:
    """A base URL is an http(s) URL without query or fragment."""
    with pytest.raises(ConfigurationError):
        PushAudience(base)


def test_verify_needs_the_path_for_a_push_token(emulator: Emulator, verifier: Verifier) -> None:
    """Outside an adapter, verify(path=...) checks the URL; without a path, a push token fails."""
    token = emulator.mint(BASE + "/pubsub", account=PUSHER)
    assert verifier.verify(token, path="/pubsub").email == PUSHER
    with pytest.raises(AudienceMismatchError):
        verifier.verify(token)
    with pytest.raises(AudienceMismatchError):
        verifier.verify(token, path="/tasks/run")
    assert verifier.verify(emulator.mint(BASE, account=PUSHER)).email == PUSHER


@pytest.mark.parametrize(
    ("audience", "warned"),
    [
        (BASE + "/", "ends with a slash"),
        (BASE + "/pubsub", "has a path"),
        (BASE, None),
        (PushAudience(BASE), None),
        ("my-custom-audience", None),
    ],
)
def test_audience_mistakes_are_logged(
    caplog: pytest.LogCaptureFixture, audience: Any, warned: str | None
) -> None:
    """A trailing slash or a path in a string audience warns; PushAudience and origins do not."""
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        Verifier(audience, allowed_callers=[PUSHER], certs_url="http://127.0.0.1:9/certs")
    messages = [r.getMessage() for r in caplog.records if "audience" in r.getMessage()]
    if warned is None:
        assert not messages
    else:
        assert any(warned in message for message in messages)


# --- through real servers ---------------------------------------------------------------------


def starlette_app(verifier: Verifier) -> Any:
    async def handle(request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        return JSONResponse({"email": request.state.caller.email, "body": body})

    routes = [Route(path, handle, methods=["POST"]) for path in PATHS]
    return ASGIMiddleware(Starlette(routes=routes), verifier=verifier)


def wsgi_app(verifier: Verifier) -> Any:
    def handle(environ: Any, start_response: Any) -> list[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size).decode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"email": environ["s2sauth.caller"].email, "body": body}).encode()]

    return WSGIMiddleware(handle, verifier=verifier)


def flask_app(verifier: Verifier) -> Any:
    app = flask.Flask("push")

    @require_id_token(verifier=verifier)
    def handle() -> Any:
        return {"email": flask.g.caller.email, "body": flask.request.get_data(as_text=True)}

    for path in PATHS:
        app.add_url_rule(path, path, handle, methods=["POST"])
    return app


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((starlette_app, uvicorn_server), id="asgi"),
        pytest.param((wsgi_app, waitress_server), id="wsgi"),
        pytest.param((flask_app, waitress_server), id="flask"),
    ],
)
def server(request: pytest.FixtureRequest, verifier: Verifier) -> Iterator[str]:
    """The push receiver of this parameter, served for real on loopback."""
    make, serve = request.param
    with serve(make(verifier)) as url:
        yield url


def post(url: str, token: str, **headers: str) -> httpx.Response:
    body = json.dumps(envelope(b'{"n": 1}', {"k": "v"}, "projects/p/subscriptions/s"))
    return httpx.post(
        url,
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
    )


RECIPES: list[Any] = [
    # Pub/Sub push: audience defaults to the push endpoint, query included when it has one.
    pytest.param("/pubsub", "", BASE + "/pubsub", {}, id="pubsub"),
    pytest.param("/pubsub", "token=abc", BASE + "/pubsub?token=abc", {}, id="pubsub with query"),
    # Cloud Tasks HTTP target: audience defaults to the task's URL.
    pytest.param(
        "/tasks/run",
        "",
        BASE + "/tasks/run",
        {"X-CloudTasks-QueueName": "q", "X-CloudTasks-TaskName": "t1"},
        id="cloud tasks",
    ),
    # Cloud Scheduler HTTP target: audience defaults to the job's URI.
    pytest.param(
        "/scheduler", "job=nightly", BASE + "/scheduler?job=nightly", {}, id="cloud scheduler"
    ),
    # Eventarc to Cloud Run: the service's URL; an Eventarc pipeline's default is the
    # destination URI (path included). Both are accepted.
    pytest.param(
        "/events", "", BASE, {"ce-type": "google.cloud.audit.log.v1.written"}, id="eventarc"
    ),
    pytest.param("/events", "", BASE + "/events", {"ce-specversion": "1.0"}, id="eventarc uri"),
]


@pytest.mark.parametrize(("path", "query", "aud", "headers"), RECIPES)
def test_recipes(
    server: str,
    emulator: Emulator,
    path: str,
    query: str,
    aud: str,
    headers: dict[str, str],
) -> None:
    """Each Google sender's token shape reaches the handler, with the push account as caller."""
    url = server + path + (f"?{query}" if query else "")
    response = post(url, emulator.mint(aud, account=PUSHER), **headers)
    assert response.status_code == 200, response.text
    assert response.json()["email"] == PUSHER
    assert json.loads(response.json()["body"])["message"]["attributes"] == {"k": "v"}


def test_forged_host_cannot_borrow_another_services_token(server: str, emulator: Emulator) -> None:
    """A token for another service's URL, sent with that service's Host, is refused."""
    token = emulator.mint("https://other-svc.example/pubsub", account=PUSHER)
    for forged in ({"Host": "other-svc.example"}, {"X-Forwarded-Host": "other-svc.example"}):
        response = post(server + "/pubsub", token, **forged)
        assert response.status_code == 401, forged
        assert response.json()["reason"] == "audience_mismatch"


def test_a_token_for_one_path_is_refused_on_another(server: str, emulator: Emulator) -> None:
    """Each push token is good for its own endpoint only."""
    response = post(server + "/tasks/run", emulator.mint(BASE + "/pubsub", account=PUSHER))
    assert response.status_code == 401


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda em: em.mint(BASE + "/pubsub", account=STRANGER), id="another account"),
        pytest.param(
            lambda em: em.mint(BASE + "/pubsub", account=PUSHER, claims={"email_verified": False}),
            id="email not verified",
        ),
    ],
)
def test_only_the_push_account_gets_in(
    server: str, emulator: Emulator, make: Callable[[Emulator], str]
) -> None:
    """The allow-list names the push service account, by verified email."""
    assert post(server + "/pubsub", make(emulator)).status_code == 403


# --- s2sauth push -----------------------------------------------------------------------------


def test_push_command_delivers_an_authenticated_envelope(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`s2sauth push` POSTs the real envelope with a token for the push URL, as EMAIL."""
    received: list[dict[str, Any]] = []
    holder: dict[str, Any] = {}

    def handle(environ: Any, start_response: Any) -> list[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        received.append(json.loads(environ["wsgi.input"].read(size)))
        received[-1]["caller"] = environ["s2sauth.caller"].email
        start_response("204 No Content", [])
        return []

    def app(environ: Any, start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    pool = HTTPTransport()
    with waitress_server(app) as url:
        verifier = Verifier(
            PushAudience(url), allowed_callers=[PUSHER], certs_url=emulator.jwks_url, transport=pool
        )
        holder["app"] = WSGIMiddleware(handle, verifier=verifier)
        monkeypatch.setenv("GCE_METADATA_HOST", emulator.host)
        status = main(
            [
                "push",
                url + "/push?x=1",
                "--as",
                PUSHER,
                "--data",
                '{"order": 7}',
                "--attributes",
                "kind=order",
                "--attributes",
                "eq=a=b",
            ]
        )
        refused = main(["push", url + "/push", "--as", STRANGER])
    pool.close()
    out = capsys.readouterr().out
    assert status == 0 and "HTTP 204" in out
    assert refused == 1 and "HTTP 403" in out
    (body,) = received
    message = body["message"]
    assert body["caller"] == PUSHER
    assert body["subscription"].startswith("projects/")
    assert json.loads(base64.b64decode(message["data"])) == {"order": 7}
    assert message["attributes"] == {"kind": "order", "eq": "a=b"}
    assert message["messageId"] == message["message_id"]
    assert message["publishTime"].endswith("Z")


@pytest.mark.parametrize(
    "argv",
    [
        ["push", "ftp://x", "--as", PUSHER],
        ["push", "http://127.0.0.1:9/p", "--as", PUSHER, "--attributes", "novalue"],
    ],
)
def test_push_command_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Bad URLs and attributes exit 2 with a message."""
    assert main(argv) == 2
    assert "s2sauth push:" in capsys.readouterr().err
