"""``s2sauth token`` and ``s2sauth call`` against the emulator and a recording server."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from support import serving, status_serving

from s2sauth.cli import main
from s2sauth.emulator import Emulator

CALLER = "caller@demo-project.iam.gserviceaccount.com"
WORKER = "worker@demo-project.iam.gserviceaccount.com"


def payload(token: str) -> dict[str, Any]:
    """The claims of a compact JWT."""
    part = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return result


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict[str, str], bytes]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.seen.append((self.command, self.path, headers, body))
        status = 401 if self.path == "/401" else 200
        reply = b"hello" if status == 200 else b"denied"
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.send_header("X-Served-By", "recorder")
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_DELETE = _serve


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """The metadata server, with two service accounts."""
    with Emulator(service_accounts=(CALLER, WORKER)) as running:
        yield running


@pytest.fixture
def env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Point this process (and child processes) at the emulator, with no ADC around."""
    monkeypatch.setenv("GCE_METADATA_HOST", emulator.host)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    return dict(os.environ)


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str], bytes]]]]:
    """A recording HTTP server: (origin, requests seen)."""
    seen: list[tuple[str, str, dict[str, str], bytes]] = []
    with serving(type("Handler", (_Recorder,), {"seen": seen})) as origin:
        yield origin, seen


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- s2sauth token -------------------------------------------------------------------------


def test_token_prints_an_id_token(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """`s2sauth token AUD` prints one token for AUD from the default account."""
    assert main(["token", "https://callee.example"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    claims = payload(out.strip())
    assert claims["aud"] == "https://callee.example"
    assert claims["email"] == CALLER


def test_token_for_another_account(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """--account picks another service account of the instance."""
    assert main(["token", "https://callee.example", "--account", WORKER]) == 0
    assert payload(capsys.readouterr().out.strip())["email"] == WORKER


def test_token_unknown_account_fails_in_one_line(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A metadata-server error is one line on stderr and exit status 1."""
    assert main(["token", "https://callee.example", "--account", "nobody@x.example"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("s2sauth token: ") and captured.err.count("\n") == 1


def test_token_without_any_source_fails(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No metadata server and no ADC: exit 1 with one line saying what was tried."""
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{closed_port()}")
    assert main(["token", "https://callee.example"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metadata server" in err
    # GOOGLE_APPLICATION_CREDENTIALS is set (to a missing file): fix it, not "set" it.
    assert "set GOOGLE_APPLICATION_CREDENTIALS" not in err
    assert "fix the credentials GOOGLE_APPLICATION_CREDENTIALS names" in err


def test_token_without_any_source_or_adc_variable_says_to_set_it(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With GOOGLE_APPLICATION_CREDENTIALS unset, the failure suggests setting it."""
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{closed_port()}")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    assert main(["token", "https://callee.example"]) == 1
    assert "elsewhere set GOOGLE_APPLICATION_CREDENTIALS" in capsys.readouterr().err


def test_token_empty_audience_is_a_usage_error(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty audience exits 2."""
    assert main(["token", " "]) == 2
    assert capsys.readouterr().err.startswith("s2sauth token: ")


def test_token_in_a_subprocess(env: dict[str, str]) -> None:
    """`python -m s2sauth token` works from the environment alone, as users run it."""
    result = subprocess.run(
        [sys.executable, "-m", "s2sauth", "token", "https://callee.example"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert payload(result.stdout.strip())["aud"] == "https://callee.example"


# -- s2sauth call --------------------------------------------------------------------------


def test_call_get(
    env: dict[str, str], server: tuple[str, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A GET carries a token for the URL's origin; status on stderr, body on stdout."""
    origin, seen = server
    assert main(["call", origin + "/things?x=1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "hello\n"
    assert captured.err == "HTTP 200 OK\n"
    ((method, path, headers, _),) = seen
    assert (method, path) == ("GET", "/things?x=1")
    assert payload(headers["authorization"].removeprefix("Bearer "))["aud"] == origin
    assert "x-serverless-authorization" not in headers


def test_call_post_with_options(
    env: dict[str, str],
    server: tuple[str, list[Any]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """-X, -d @file, -H, --audience, --header-mode both and -i all take effect."""
    origin, seen = server
    body = tmp_path / "body.json"
    body.write_bytes(b'{"n": 1}')
    argv = ["call", origin + "/p", "-X", "post", "-d", f"@{body}", "-H", "Content-Type: text/x"]
    argv += ["-H", "X-Extra:  yes ", "--audience", "aud-1", "--header-mode", "both", "-i"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("HTTP 200 OK\r\n") and "x-served-by: recorder\r\n" in out
    assert out.endswith("\r\n\r\nhello\n")
    ((method, _, headers, received),) = seen
    assert (method, received) == ("POST", b'{"n": 1}')
    assert headers["content-type"] == "text/x" and headers["x-extra"] == "yes"
    assert headers["authorization"] == headers["x-serverless-authorization"]
    assert payload(headers["authorization"].removeprefix("Bearer "))["aud"] == "aud-1"


def test_call_data_defaults_to_a_form_post(
    env: dict[str, str], server: tuple[str, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """-d alone makes a POST with curl's form content type."""
    origin, seen = server
    assert main(["call", origin, "-d", "a=1"]) == 0
    ((method, _, headers, received),) = seen
    assert (method, received) == ("POST", b"a=1")
    assert headers["content-type"] == "application/x-www-form-urlencoded"


def test_call_non_2xx_exits_1(
    env: dict[str, str], server: tuple[str, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A 401 answer is printed and exits 1."""
    origin, _ = server
    assert main(["call", origin + "/401"]) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("denied\n", "HTTP 401 Unauthorized\n")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["ftp://x.example/"], id="not http"),
        pytest.param(["http://x.example/", "-H", "Authorization Bearer eyJsecret"], id="no colon"),
        pytest.param(["http://x.example/", "-H", "X-A: b\x01c"], id="control char"),
        pytest.param(["http://x.example/", "-X", "GET /x"], id="bad method"),
        pytest.param(["http://x.example/", "--timeout", "0"], id="bad timeout"),
        pytest.param(["http://x.example/", "-d", "@/nonexistent/file"], id="missing file"),
    ],
)
def test_call_usage_errors_exit_2(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments exit 2 with one line that never echoes a header value."""
    assert main(["call", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("s2sauth call: ") and err.count("\n") == 1
    assert "eyJsecret" not in err


def test_call_unreachable_exits_1(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening at the URL: one line, exit 1."""
    assert main(["call", f"http://127.0.0.1:{closed_port()}/"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("s2sauth call: could not reach") and err.count("\n") == 1


def test_call_token_failure_sends_nothing(
    env: dict[str, str], server: tuple[str, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """When no token can be had, nothing is sent and the exit status is 1."""
    origin, seen = server
    assert main(["call", origin, "--account", "nobody@x.example"]) == 1
    assert seen == []
    assert capsys.readouterr().err.startswith("s2sauth call: ")


def test_call_in_a_subprocess_reads_stdin(
    env: dict[str, str], server: tuple[str, list[Any]]
) -> None:
    """`python -m s2sauth call URL -d @-` posts stdin with a token, as users run it."""
    origin, seen = server
    result = subprocess.run(
        [sys.executable, "-m", "s2sauth", "call", origin + "/in", "-d", "@-"],
        env=env,
        input=b"from stdin",
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\n"
    ((method, path, headers, received),) = seen
    assert (method, path, received) == ("POST", "/in", b"from stdin")
    assert payload(headers["authorization"].removeprefix("Bearer "))["aud"] == origin


@pytest.fixture
def status_server(emulator: Emulator) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A plain HTTP server on loopback: (origin, requests seen as (method, body))."""
    with status_serving(json.dumps(emulator.jwks()).encode()) as served:
        yield served


# -- s2sauth call --------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "exit_status"), [(299, 0), (599, 1)])
def test_call_status_without_a_reason_phrase(
    status: int,
    exit_status: int,
    emulator: Emulator,
    status_server: tuple[str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A status code with no standard phrase prints as 'HTTP NNN'; 2xx still exits 0."""
    monkeypatch.setenv("GCE_METADATA_HOST", emulator.host)
    assert main(["call", f"{status_server[0]}/status/{status}"]) == exit_status
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("odd\n", f"HTTP {status}\n")


def test_call_reads_the_body_from_stdin(
    emulator: Emulator,
    status_server: tuple[str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-d @- posts standard input's bytes unchanged."""
    monkeypatch.setenv("GCE_METADATA_HOST", emulator.host)
    body = b"\x00binary\xffbody\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    origin, seen = status_server
    assert main(["call", origin + "/in", "-d", "@-"]) == 0
    assert seen == [("POST", body)]


@pytest.mark.parametrize(
    ("name", "printed"),
    [
        pytest.param("utf8", "é\n".encode(), id="text: a final newline added"),
        pytest.param("line", b"one line\n", id="text with its newline: unchanged"),
        pytest.param("binary", b"\x89PNG\r\n\x00\xff", id="binary: byte for byte"),
    ],
)
def test_call_ends_a_text_body_with_a_newline(
    name: str,
    printed: bytes,
    emulator: Emulator,
    status_server: tuple[str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """A text body gets the final newline it lacks; a binary body is written unchanged."""
    monkeypatch.setenv("GCE_METADATA_HOST", emulator.host)
    assert main(["call", f"{status_server[0]}/body/{name}"]) == 0
    assert capsysbinary.readouterr().out == printed
