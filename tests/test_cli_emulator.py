"""``s2sauth emulator``: what it prints and writes, how it starts and how it stops."""

from __future__ import annotations

import queue
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from s2sauth._http import HTTPRequest, HTTPTransport
from s2sauth.cli import main
from s2sauth.cli.demo import bind
from s2sauth.verify.verifier import Verifier

AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"


def test_emulator_command_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that is taken exits 1 with one line, and the signal handlers are put back."""
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with bind() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"s2sauth emulator: the emulator cannot listen on 127.0.0.1:{port}"
    )
    assert captured.err.count("\n") == 1 and "Pick another --port" in captured.err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_emulator_command_bad_account(capsys: pytest.CaptureFixture[str]) -> None:
    """An --account that is not an email exits 1 before serving anything."""
    assert main(["emulator", "--port", "0", "--account", "not-an-email"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("s2sauth emulator: service account 'not-an-email' is not")


def _lines(stream: Iterator[str]) -> queue.Queue[str]:
    """The lines of ``stream`` as they come, then "" at its end, read on a thread."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


@dataclass(frozen=True)
class _Served:
    """What one run of `s2sauth emulator` printed, and whom its token named."""

    exports: dict[str, str]
    caller: str | None
    out: str
    err: str


def _serve_then_stop(extra: list[str], signum: signal.Signals) -> _Served:
    """Run `s2sauth emulator`, mint and verify a token with what it printed, then signal it."""
    command = [sys.executable, "-m", "s2sauth", "emulator", "--port", "0", *extra]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        printed: list[str] = []
        try:
            while not printed or not printed[-1].startswith("# accounts: "):
                line = lines.get(timeout=60)
                assert line, f"the emulator stopped early: {printed}"
                printed.append(line.rstrip("\n"))
            exports = dict(
                shlex.split(text)[1].split("=", 1) for text in printed if text.startswith("export ")
            )
            identity = (
                f"http://{exports['GCE_METADATA_HOST']}/computeMetadata/v1/instance/"
                f"service-accounts/default/identity?audience={AUDIENCE}&format=full"
            )
            pool = HTTPTransport()
            try:
                reply = pool(HTTPRequest("GET", identity, {"Metadata-Flavor": "Google"}))
                assert reply.status == 200, reply.text
                verifier = Verifier(
                    AUDIENCE, certs_url=exports["S2SAUTH_CERTS_URL"], transport=pool
                )
                caller = verifier.verify(reply.text).email
            finally:
                pool.close()
        finally:
            process.send_signal(signum)
            _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return _Served(exports, caller, "\n".join(printed), err)


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child are POSIX")
def test_emulator_command_serves_until_ctrl_c() -> None:
    """`s2sauth emulator` prints exports that work, serves tokens that verify, and exits 0 on ^C."""
    served = _serve_then_stop([], signal.SIGINT)
    host = served.exports["GCE_METADATA_HOST"]
    assert host.startswith("127.0.0.1:") and host != "127.0.0.1:0"
    assert served.exports == {
        "GCE_METADATA_HOST": host,
        "GCE_METADATA_IP": host,
        "S2SAUTH_CERTS_URL": f"http://{host}/oauth2/v3/certs",
        "S2SAUTH_IAP_KEYS_URL": f"http://{host}/iap/verify/public_key-jwk",
    }
    assert served.caller == CALLER
    assert f"# PEM certs: http://{host}/oauth2/v1/certs" in served.out
    assert served.out.endswith(f"# accounts: {CALLER}, {STRANGER}")
    assert served.err == "s2sauth emulator: serving; press Ctrl-C to stop\n"


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child are POSIX")
def test_emulator_command_stops_cleanly_on_sigterm() -> None:
    """SIGTERM stops the emulator as cleanly as ^C; --account sets the default account."""
    worker = "worker@p.iam.gserviceaccount.com"
    served = _serve_then_stop(["--account", worker], signal.SIGTERM)
    assert served.caller == worker
    assert served.out.endswith(f"# accounts: {worker}")
    assert served.err == "s2sauth emulator: serving; press Ctrl-C to stop\n"
