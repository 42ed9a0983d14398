"""The ``s2sauth verify`` command, against the emulator's keys."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from s2sauth.cli import main
from s2sauth.cli.demo import bind
from s2sauth.cli.verify import keys_hint
from s2sauth.emulator import Emulator

AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The emulator: keys and tokens."""
    with Emulator((CALLER, STRANGER), signing_key=emulator_key) as emu:
        yield emu


def verify(emulator: Emulator, *args: str) -> list[str]:
    return ["verify", *args, "--certs-url", emulator.jwks_url]


def test_valid_token(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid token prints the caller and claims and exits 0."""
    token = emulator.mint(AUDIENCE, account=CALLER)
    assert main(verify(emulator, token, "--audience", AUDIENCE, "--allow", CALLER)) == 0
    out = capsys.readouterr().out
    assert out.startswith("valid token\n")
    assert f"email:      {CALLER}" in out
    assert f'"aud": "{AUDIENCE}"' in out


def test_valid_token_json(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object with the caller and the claims."""
    token = emulator.mint(AUDIENCE, account=CALLER)
    assert main(verify(emulator, token, "-a", "https://other", "-a", AUDIENCE, "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is True
    assert result["caller"]["email"] == CALLER
    assert result["caller"]["audience"] == AUDIENCE
    assert result["claims"]["email"] == CALLER


@pytest.mark.parametrize(
    ("args", "account", "reason"),
    [
        pytest.param(["--audience", "https://other"], CALLER, "audience_mismatch", id="audience"),
        pytest.param(
            ["--audience", AUDIENCE, "--allow", CALLER],
            STRANGER,
            "caller_not_allowed",
            id="not allowed",
        ),
    ],
)
def test_rejected_token(
    emulator: Emulator,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    account: str,
    reason: str,
) -> None:
    """A rejected token prints the exact reason and exits 1."""
    token = emulator.mint(AUDIENCE, account=account)
    assert main(verify(emulator, token, *args)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert reason in captured.err
    assert token not in captured.err


def test_rejected_token_json(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    """--json reports a rejection as an object with status, reason and message."""
    assert main(verify(emulator, "not-a-token", "--audience", AUDIENCE, "--json")) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is False
    assert result["status"] == 401
    assert result["reason"] == "malformed"
    assert result["error"] == "invalid_token"
    assert result["message"]


def test_token_from_stdin(
    emulator: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOKEN '-' reads the token from standard input (kept out of shell history)."""
    token = emulator.mint(AUDIENCE, account=CALLER)
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    assert main(verify(emulator, "-", "--audience", AUDIENCE, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["caller"]["email"] == CALLER


def test_keys_unavailable(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    """A keys endpoint that does not answer is a rejection with reason keys_unavailable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = emulator.mint(AUDIENCE, account=CALLER)
    args = ["verify", token, "-a", AUDIENCE, "--certs-url", f"http://127.0.0.1:{port}/certs"]
    assert main(args) == 1
    assert "keys_unavailable" in capsys.readouterr().err


def test_audience_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --audience the command is a usage error."""
    with pytest.raises(SystemExit) as caught:
        main(["verify", "x.y.z"])
    assert caught.value.code == 2
    assert "--audience" in capsys.readouterr().err


def test_console_entry_point(emulator: Emulator) -> None:
    """`python -m s2sauth verify` runs as a real process with the same exit status."""
    token = emulator.mint(AUDIENCE, account=CALLER)
    command = [sys.executable, "-m", "s2sauth", *verify(emulator, token, "-a", AUDIENCE, "--json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["caller"]["email"] == CALLER


# -- s2sauth verify ------------------------------------------------------------------------


def test_verify_takes_the_keys_url_from_the_environment(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --certs-url, the keys come from $S2SAUTH_CERTS_URL (as the emulator prints it)."""
    monkeypatch.setenv("S2SAUTH_CERTS_URL", emulator.jwks_url)
    token = emulator.mint(AUDIENCE)
    assert main(["verify", token, "-a", AUDIENCE, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["caller"]["email"] == CALLER


def test_verify_leeway_accepts_a_recently_expired_token(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token expired 45 s ago is rejected with the default 30 s leeway but passes --leeway 60."""
    now = int(time.time())
    token = emulator.mint(AUDIENCE, claims={"iat": now - 3645, "exp": now - 45})
    argv = ["verify", token, "-a", AUDIENCE, "--certs-url", emulator.jwks_url]
    assert main(argv) == 1
    assert "rejected (401 expired)" in capsys.readouterr().err
    assert main([*argv, "--leeway", "60"]) == 0
    assert capsys.readouterr().out.startswith("valid token\n")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            ["--leeway", "61"], "leeway must be between 0 and 60 seconds, not 61.0", id="leeway"
        ),
        pytest.param(
            ["--certs-url", "ftp://keys.example/certs"],
            "certs_url must be an http(s) URL, not 'ftp://keys.example/certs'",
            id="certs url",
        ),
    ],
)
def test_verify_bad_options_exit_2(
    options: list[str], message: str, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad verifier option is a usage error: exit 2, one line on stderr, nothing on stdout."""
    token = emulator.mint(AUDIENCE)
    assert main(["verify", token, "-a", AUDIENCE, *options]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"s2sauth verify: {message}\n"


def test_certs_url_help_names_the_variable_that_wins(capsys: pytest.CaptureFixture[str]) -> None:
    """--certs-url's help says S2SAUTH_CERTS_URL is the default before Google's."""
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: $S2SAUTH_CERTS_URL if set, else Google's" in help_text


@pytest.mark.parametrize(
    ("option", "environ", "hinted"),
    [
        pytest.param(None, {}, True, id="Google's URL by default: say to set it"),
        pytest.param(None, {"S2SAUTH_CERTS_URL": "http://k"}, False, id="variable set"),
        pytest.param("http://k", {}, False, id="--certs-url given"),
    ],
)
def test_a_key_fetch_failure_says_to_set_s2sauth_certs_url(
    option: str | None, environ: dict[str, str], hinted: bool
) -> None:
    """Keys unreachable from Google's default URL: the message says to set S2SAUTH_CERTS_URL."""
    hint = keys_hint(option, environ)
    assert ("export the S2SAUTH_CERTS_URL" in hint) is hinted and (hint == "") is not hinted


def test_a_key_fetch_failure_from_a_given_url_is_shown_without_a_hint(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the keys URL from S2SAUTH_CERTS_URL, a failure is one line and no hint to set it."""
    with bind() as sock:
        monkeypatch.setenv("S2SAUTH_CERTS_URL", f"http://127.0.0.1:{sock.getsockname()[1]}/c")
        assert main(["verify", emulator.mint(AUDIENCE), "-a", AUDIENCE]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("rejected (503 keys_unavailable): ") and "S2SAUTH_CERTS_URL" not in err
