"""Refusals people can see: one escaped, rate-limited line per refusal, shown by default setups."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import Clock

from s2sauth import AudienceMismatchError, CallerNotAllowedError, MalformedTokenError, Verifier
from s2sauth._log import RefusalLog, at
from s2sauth.asgi import IDTokenMiddleware
from s2sauth.cli._serve import bind, serve_asgi
from s2sauth.emulator import Emulator

AUDIENCE = "http://127.0.0.1:8080"
CALLER = "caller@proj.iam.gserviceaccount.com"
STRANGER = "stranger@proj.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """An emulator minting for an allowed caller and a stranger."""
    with Emulator((CALLER, STRANGER)) as em:
        yield em


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "s2sauth"]


def test_a_flood_is_limited_and_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    """After the burst, refusals are counted, then summed up in one line when lines flow again."""
    clock = Clock()
    log = RefusalLog(burst=3, per_second=1.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="s2sauth"):
        for _ in range(10):
            log(MalformedTokenError("not a JWT"))
        log(AudienceMismatchError("wrong audience"))
        assert len(_messages(caplog)) == 3
        clock.now += 2.5
        log(MalformedTokenError("not a JWT"))
    lines = _messages(caplog)
    assert len(lines) == 5
    assert lines[3].startswith("8 more refusals in the last 2 s were not logged")
    assert lines[3].endswith("malformed 7, audience_mismatch 1")
    assert lines[4].startswith("rejected: malformed (401)")


def test_at_debug_every_refusal_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """With the s2sauth logger at DEBUG (asking for everything) the rate limit is off."""
    log = RefusalLog(burst=2, per_second=1.0, clock=Clock())
    with caplog.at_level(logging.DEBUG, logger="s2sauth"):
        for _ in range(5):
            log(MalformedTokenError("not a JWT"))
    assert len(_messages(caplog)) == 5


def test_line_names_request_and_caller_and_escapes_input(caplog: pytest.LogCaptureFixture) -> None:
    """The line has reason, status, request and message; control characters cannot forge lines."""
    log = RefusalLog()
    with caplog.at_level(logging.INFO, logger="s2sauth"):
        at("GET", "/admin\nINFO:s2sauth: forged")
        log(CallerNotAllowedError(f"caller {STRANGER} is not allowed", email=STRANGER))
    (record,) = [r for r in caplog.records if r.name == "s2sauth"]
    message = record.getMessage()
    assert "\n" not in message
    assert message.startswith("rejected: caller_not_allowed (403) GET /admin\\nINFO")
    assert STRANGER in message
    assert record.s2sauth_caller == STRANGER  # type: ignore[attr-defined]
    assert record.s2sauth_reason == "caller_not_allowed"  # type: ignore[attr-defined]


def test_a_real_request_is_logged_with_path_and_never_the_token(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Under uvicorn, a 403 is one line with path and email, and the body names the caller only."""

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        raise AssertionError("not reached")  # pragma: no cover

    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url)
    token = emulator.mint(AUDIENCE, account=STRANGER)
    with caplog.at_level(logging.INFO, logger="s2sauth"):
        with serve_asgi(IDTokenMiddleware(app, verifier=verifier), bind()) as url:
            with httpx.Client(trust_env=False, timeout=10) as client:
                headers = {"Authorization": f"Bearer {token}"}
                response = client.get(f"{url}/orders/7", headers=headers)
    assert response.status_code == 403
    assert response.json()["caller"] == STRANGER
    assert CALLER not in response.text  # never the allow-list
    (line,) = [m for m in _messages(caplog) if m.startswith("rejected:")]
    assert line.startswith("rejected: caller_not_allowed (403) GET /orders/7: ")
    assert STRANGER in line
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_audience_mismatch_body_says_so_without_the_token(emulator: Emulator) -> None:
    """A token for another audience gets 401 audience_mismatch; the body does not echo it."""
    from s2sauth.verify.http import denial

    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url)
    token = emulator.mint(AUDIENCE + "/", account=CALLER)
    with pytest.raises(AudienceMismatchError) as caught:
        verifier.verify(token)
    answer = denial(caught.value)
    assert (answer.status, answer.payload["reason"]) == (401, "audience_mismatch")
    assert "another audience" in answer.payload["detail"]
    assert token.split(".")[1] not in answer.body.decode()


@pytest.mark.parametrize(
    ("audience", "warned"),
    [
        pytest.param("https://svc-xyz.a.run.app", None, id="origin"),
        pytest.param("https://svc-xyz.a.run.app/", "ends with a slash", id="trailing slash"),
        pytest.param("https://svc-xyz.a.run.app/push", "has a path", id="path"),
        pytest.param("my-custom-audience", None, id="custom"),
    ],
)
def test_verifier_warns_about_likely_audience_mistakes(
    audience: str, warned: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A trailing slash or a path in the audience is warned about at construction."""
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        Verifier(audience, allowed_callers=[CALLER])
    warnings = [m for m in _messages(caplog) if "audience_mismatch" in m]
    if warned is None:
        assert warnings == []
    else:
        (warning,) = warnings
        assert warned in warning and "https://svc-xyz.a.run.app'" in warning


# --- what each server's default logging setup shows ------------------------------------------

_APP = """
import os
from s2sauth import Verifier
from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

verifier = Verifier(os.environ["AUDIENCE"], allowed_callers=[os.environ["ALLOWED"]])


async def _asgi(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _wsgi(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


asgi = ASGIMiddleware(_asgi, verifier=verifier)
wsgi = WSGIMiddleware(_wsgi, verifier=verifier)
"""


def _env(emulator: Emulator, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    (tmp_path / "refusal_app.py").write_text(_APP)
    root = str(Path(__file__).resolve().parent.parent)  # this checkout's s2sauth
    env.update(
        AUDIENCE=AUDIENCE,
        ALLOWED=CALLER,
        S2SAUTH_CERTS_URL=emulator.jwks_url,
        PYTHONPATH=os.pathsep.join([str(tmp_path), root]),
    )
    return env


def _serve_and_refuse(command: list[str], port: int, env: dict[str, str], token: str) -> str:
    with subprocess.Popen(
        [sys.executable, "-m", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            with httpx.Client(trust_env=False, timeout=10) as client:
                for _ in range(600):  # up to a minute for the server to listen
                    assert process.poll() is None, process.communicate()[0]
                    try:
                        response = client.get(
                            f"http://127.0.0.1:{port}/orders",
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                else:  # pragma: no cover
                    pytest.fail("the server did not start listening")
            assert response.status_code == 403
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=30)
    return output


@pytest.mark.parametrize(
    "server",
    [
        pytest.param(["uvicorn", "refusal_app:asgi", "--port", "{port}"], id="uvicorn"),
        pytest.param(
            ["waitress", "--listen", "127.0.0.1:{port}", "refusal_app:wsgi"], id="waitress"
        ),
    ],
)
def test_default_server_setups_show_the_refusal(
    server: list[str], emulator: Emulator, tmp_path: Path
) -> None:
    """uvicorn and waitress, with no logging configuration, print the refusal line."""
    with bind() as sock:
        port = sock.getsockname()[1]
    command = [part.format(port=port) for part in server]
    token = emulator.mint(AUDIENCE, account=STRANGER)
    output = _serve_and_refuse(command, port, _env(emulator, tmp_path), token)
    assert "rejected: caller_not_allowed (403) GET /orders" in output, output
    assert output.count("rejected:") == 1
    assert token.split(".")[2] not in output


_SCRIPT = """
import logging, os, sys
from s2sauth import S2SAuthError, Verifier
if sys.argv[1] == "quiet":
    logging.getLogger("s2sauth").setLevel(logging.WARNING)
verifier = Verifier(os.environ["AUDIENCE"], allowed_callers=[os.environ["ALLOWED"]])
try:
    verifier.verify(os.environ["TOKEN"])
except S2SAuthError:
    pass
"""


@pytest.mark.parametrize("mode", ["unconfigured", "quiet"])
def test_unconfigured_process_shows_refusals_unless_told_not_to(
    mode: str, emulator: Emulator, tmp_path: Path
) -> None:
    """With no logging setup (gRPC, gunicorn, Django) the line shows; setLevel silences it."""
    env = _env(emulator, tmp_path) | {"TOKEN": emulator.mint(AUDIENCE, account=STRANGER)}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    if mode == "quiet":
        assert "rejected" not in result.stderr
    else:
        expected = f"INFO:s2sauth: rejected: caller_not_allowed (403): caller {STRANGER}"
        assert expected in result.stderr


def test_a_request_let_in_leaves_no_name_for_a_later_refusal(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal outside any request never borrows the path of one handled before in the thread."""
    from s2sauth.verify.http import Gate

    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], certs_url=emulator.jwks_url)
    gate = Gate(verifier)
    policy = gate.route("GET", "/earlier")
    bearer = f"Bearer {emulator.mint(AUDIENCE, account=CALLER)}"
    caller = gate.authenticate([bearer], policy=policy, method="GET", path="/earlier")
    assert caller.email == CALLER
    with caplog.at_level(logging.INFO, logger="s2sauth"), pytest.raises(CallerNotAllowedError):
        verifier.verify(emulator.mint(AUDIENCE, account=STRANGER))
    (line,) = [m for m in _messages(caplog) if m.startswith("rejected:")]
    assert "/earlier" not in line and line.startswith("rejected: caller_not_allowed (403): ")
