"""``s2sauth demo``: every call gets the expected outcome, in-process and as a command."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from s2sauth.cli import _demo_aiohttp, _demo_django, main
from s2sauth.cli._serve import bind
from s2sauth.cli.demo import CALLER

# A table row: client, target, caller, expected status, got, time, mark.
ROW = re.compile(
    r"^  (requests|httpx|httpx async|aiohttp|grpc|grpc\.aio)\s+"
    r"(starlette|flask|django|aiohttp|grpc|grpc health)\s+"
    r".*?\s(\d{3}|OK|[A-Z_]{8,})\s+(\S+)\s+"
)
# The HTTP rows (three more to a Django service when Django is installed, four to an aiohttp
# one when aiohttp is), and the gRPC rows the demo adds when grpcio is installed (the test
# extra has all three).
HTTP_ROWS = 11 + (3 if _demo_django.available() else 0) + (4 if _demo_aiohttp.available() else 0)
GRPC_ROWS = 6
OK_MARKS = ("\u2713", "ok")
CURL = re.compile(r'curl -H "Authorization: Bearer \$S2SAUTH_DEMO_TOKEN" (\S+)')


def _rows(output: str) -> list[tuple[str, str]]:
    return [(m.group(3), m.group(4)) for m in map(ROW.match, output.splitlines()) if m]


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    # The demo must not depend on the environment: point it somewhere dead.
    env.update(GCE_METADATA_HOST="127.0.0.1:9", S2SAUTH_CERTS_URL="http://127.0.0.1:9/certs")
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    return env


def _assert_all_expected(output: str) -> None:
    rows = _rows(output)
    assert len(rows) == HTTP_ROWS + GRPC_ROWS, output
    assert all(expected == got for expected, got in rows), output
    assert {expected for expected, _ in rows} == {
        "200",
        "401",
        "403",
        "OK",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
    }
    marked = [line for line in output.splitlines() if ROW.match(line)]
    assert all(line.rstrip().endswith(OK_MARKS) for line in marked), output
    assert f"All {HTTP_ROWS + GRPC_ROWS} outcomes as expected." in output


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """`s2sauth demo` through cli.main: exit 0, every row as expected, counters and cost shown."""
    status = main(["demo"])
    out = capsys.readouterr().out
    assert status == 0, out
    _assert_all_expected(out)
    audiences = 3 + _demo_django.available() + _demo_aiohttp.available()  # one per service
    assert f"token provider (caller):  {audiences} fetches" in out
    assert "verifier (starlette):" in out and "key fetch" in out
    assert re.search(r"first time:\s+[\d.]+ (\u00b5|u)s", out)
    assert "eyJ" not in out  # no token is printed without --keep-running
    logged = out.partition("What the services logged")[2].partition("Counters")[0]
    assert "rejected: caller_not_allowed (403)" in logged and "rejected: expired (401)" in logged


def test_demo_as_a_command() -> None:
    """`python -m s2sauth demo` exits 0 with every row as expected, whatever the environment."""
    result = subprocess.run(
        [sys.executable, "-m", "s2sauth", "demo"],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_all_expected(result.stdout)
    assert "Traceback" not in result.stderr


def test_demo_falls_back_to_ascii_marks() -> None:
    """With an ASCII-only stdout, the table still prints, with ASCII marks."""
    env = _subprocess_env() | {"PYTHONIOENCODING": "ascii"}
    result = subprocess.run(
        [sys.executable, "-m", "s2sauth", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_all_expected(result.stdout)
    assert re.search(r"first time:\s+[\d.]+ us", result.stdout)


def test_demo_needs_the_demo_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without one of the demo's dependencies it exits 2 and names the extra to install."""
    monkeypatch.setitem(sys.modules, "waitress", None)  # as if it were not installed
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "waitress" in err and "pip install 's2sauth[demo]'" in err


def test_demo_without_grpcio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without grpcio the demo runs the HTTP services alone and says how to add gRPC."""
    monkeypatch.setitem(sys.modules, "grpc", None)  # as if it were not installed
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert len(_rows(out)) == HTTP_ROWS
    assert f"All {HTTP_ROWS} outcomes as expected." in out
    assert "pip install 's2sauth[grpc]'" in out


@pytest.mark.parametrize("option", ["--port-asgi", "--port-wsgi", "--port-grpc"])
def test_demo_port_in_use(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A taken --port-* is reported naming the option and the port, exit 2, no traceback."""
    with bind() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", option, str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"s2sauth demo: cannot listen on 127.0.0.1:{port} ({option}): ")
    assert err.count("\n") == 1 and "Traceback" not in err


def _lines(stream: Iterator[str]) -> queue.Queue[str]:
    """The lines of ``stream`` as they come, then "" at its end, read on a thread."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _printed_commands(lines: queue.Queue[str]) -> list[str]:
    """The --keep-running block, up to its last line: once that is out, the demo only waits."""
    block: list[str] = []
    while not block or not block[-1].startswith('curl -H "Authorization: Bearer $FLASK_TOKEN"'):
        line = lines.get(timeout=90)  # a bound on a hung demo, not a wait for readiness
        assert line, f"the demo ended before printing its commands: {block}"
        block.append(line.strip())
    return block


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_keep_running_serves_the_printed_commands_until_ctrl_c() -> None:
    """--keep-running prints a token and curl commands that work, and Ctrl-C exits 0."""
    command = [sys.executable, "-m", "s2sauth", "demo", "--keep-running"]
    with subprocess.Popen(
        command,
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        try:
            # The readiness signal: the whole block is printed (the demo prints it inside
            # the try that turns Ctrl-C into a clean stop, so from here on ^C means exit 0).
            block = _printed_commands(lines)
            token = next(line for line in block if line.startswith("export S2SAUTH_DEMO_TOKEN="))
            match = re.search(
                r'curl -H "Authorization: Bearer \$S2SAUTH_DEMO_TOKEN" (\S+)', "\n".join(block)
            )
            assert match is not None
            request = urllib.request.Request(
                match.group(1), headers={"Authorization": f"Bearer {token.partition('=')[2]}"}
            )
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(request, timeout=30) as response:
                assert response.status == 200
                assert CALLER in response.read().decode()
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)  # not communicate(): the pump thread owns stdout
            assert process.stderr is not None
            err = process.stderr.read()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    rest = list(iter(lambda: lines.get(timeout=30), ""))  # what came after the commands
    assert rest[-1:] == ["Stopped.\n"]
