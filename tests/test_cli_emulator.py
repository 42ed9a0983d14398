"""``s2sauth emulator``: what it prints and writes, how it starts and how it stops."""

from __future__ import annotations

import importlib.abc
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import wsgiref.simple_server
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import PROBED_ENVIRONMENT

from s2sauth._http import HTTPRequest, HTTPTransport
from s2sauth.cli import main
from s2sauth.cli.demo import bind
from s2sauth.cli.emulator import is_loopback
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


# -- starting and stopping -------------------------------------------------------------------


class _InterruptOnImport(importlib.abc.MetaPathFinder):
    """Raises KeyboardInterrupt when ``name`` is imported: Ctrl-C while the CLI loads."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == self.name:
            raise KeyboardInterrupt


def test_ctrl_c_while_the_commands_load_exits_130_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """^C while the command modules are imported (the slow part of start-up) exits 130, silently."""
    monkeypatch.delitem(sys.modules, "s2sauth.cli.emulator", raising=False)
    monkeypatch.setattr(
        sys, "meta_path", [_InterruptOnImport("s2sauth.cli.emulator"), *sys.meta_path]
    )
    assert main(["emulator", "--port", "0"]) == 130
    assert capsys.readouterr() == ("", "")


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child are POSIX")
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2, 0.4])
def test_sigint_right_after_start_ends_without_a_traceback(delay: float) -> None:
    """SIGINT at any moment of start-up ends `s2sauth emulator` quietly (130, or 0 once serving)."""
    command = [sys.executable, "-m", "s2sauth", "emulator", "--port", "0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # -SIGINT: the signal came before Python installed its handler, and killed it silently.
    assert process.returncode in (0, 130, -signal.SIGINT)


# -- loading the environment, and one identity per local service -----------------------------

ORDERS = "orders@demo-project.iam.gserviceaccount.com"
BILLING = "billing@demo-project.iam.gserviceaccount.com"


def _wait_for_files(process: subprocess.Popen[str], *paths: Path) -> None:
    """Wait until the emulator has written every env file (its readiness signal)."""
    deadline = time.monotonic() + 60
    while not all(path.exists() for path in paths):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the emulator wrote no env file in 60 s"
        time.sleep(0.02)


def _receiver(audience_port: int, allowed: str, certs_url: str) -> Any:
    """A WSGI service on loopback that answers 200 to ``allowed`` only; returns the server."""
    from s2sauth.wsgi import IDTokenMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["s2sauth.caller"].email.encode()]

    verifier = Verifier(
        f"http://127.0.0.1:{audience_port}", allowed_callers=[allowed], certs_url=certs_url
    )
    return IDTokenMiddleware(app, verifier=verifier)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell and signals")
def test_each_local_service_runs_as_its_own_identity(tmp_path: Path) -> None:
    """Two callers, each loading its own --env-file, reach one receiver that allows only one."""
    orders_env, billing_env = tmp_path / "orders.env", tmp_path / "billing.env"
    command = [sys.executable, "-m", "s2sauth", "emulator", "--port", "0"]
    command += ["--account", ORDERS, "--account", BILLING]
    command += ["--env-file", str(orders_env), "--env-file", str(billing_env)]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as emulator:
        try:
            _wait_for_files(emulator, orders_env, billing_env)
            shared = dict(
                shlex.split(line)[1].split("=", 1) for line in orders_env.read_text().splitlines()
            )
            with bind() as sock:
                port = sock.getsockname()[1]
            app = _receiver(port, ORDERS, shared["S2SAUTH_CERTS_URL"])
            server = wsgiref.simple_server.make_server(
                "127.0.0.1", port, app, handler_class=_QuietHandler
            )
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                results = {}
                for name, env_file in (("orders", orders_env), ("billing", billing_env)):
                    script = f'. "{env_file}" && exec "$0" -m s2sauth call "$1"'
                    results[name] = subprocess.run(
                        ["sh", "-c", script, sys.executable, f"http://127.0.0.1:{port}/"],
                        capture_output=True,
                        text=True,
                        timeout=60,
                        env=_without_metadata_variables(),
                    )
            finally:
                server.shutdown()
                server.server_close()
        finally:
            emulator.send_signal(signal.SIGINT)
            _, err = emulator.communicate(timeout=30)
    assert (results["orders"].returncode, results["orders"].stdout) == (0, ORDERS + "\n")
    assert results["billing"].returncode == 1
    assert "403" in results["billing"].stderr
    refusal = json.loads(results["billing"].stdout)
    assert (refusal["reason"], refusal["caller"]) == ("caller_not_allowed", BILLING)
    # The files exist only while the emulator serves, so a stale one never points nowhere.
    assert emulator.returncode == 0, err
    assert not orders_env.exists() and not billing_env.exists()


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _without_metadata_variables() -> dict[str, str]:
    """This environment without proxies or anything pointing at a metadata server."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in PROBED_ENVIRONMENT and "proxy" not in name.lower()
    }


def test_more_env_files_than_accounts_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Nth --env-file is for the Nth account: one too many exits 2 before serving."""
    files = [f"--env-file={tmp_path / name}" for name in ("a", "b", "c")]
    assert main(["emulator", "--port", "0", *files]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "3 --env-file for 2 account(s)" in captured.err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True)]
    + [("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.com", False)],
)
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    """Only loopback addresses (and 'localhost') count as private to this machine."""
    assert is_loopback(host) is loopback


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child are POSIX")
def test_a_non_loopback_host_is_warned_about_loudly() -> None:
    """--host 0.0.0.0 serves, but stderr first says, in capitals, that anyone can mint tokens."""
    served = _serve_then_stop(["--host", "0.0.0.0"], signal.SIGINT)
    warning = served.err.splitlines()
    assert warning[0] == "s2sauth emulator: WARNING: listening on 0.0.0.0, not on loopback."
    assert "ANY machine that can reach this address can mint ID tokens" in served.err
    assert warning[-1] == "s2sauth emulator: serving; press Ctrl-C to stop"
