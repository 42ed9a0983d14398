"""The ``s2sauth`` command itself: its commands, help, version and exit statuses."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import s2sauth.cli.emulator  # noqa: F401  (imported so a test can take it out of sys.modules)
from s2sauth import __version__
from s2sauth.cli import build_parser, main


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`s2sauth` with no command prints the help, listing every command, to stderr; exit 2."""
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: s2sauth")
    for command in ("demo", "emulator", "token", "call", "verify", "doctor"):
        assert command in captured.err


def test_a_missing_command_module_is_left_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subcommand whose module is not installed is dropped; the other commands remain."""
    monkeypatch.setitem(sys.modules, "s2sauth.cli.demo", None)
    listed = re.findall(r"^    (\w+)  ", build_parser().format_help(), re.MULTILINE)
    assert listed == ["emulator", "token", "call", "verify", "doctor", "push"]
    with pytest.raises(SystemExit) as caught:
        main(["demo"])
    assert caught.value.code == 2
    assert "invalid choice: 'demo'" in capsys.readouterr().err


def test_a_command_with_a_broken_import_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """A subcommand whose own import fails raises that error instead of silently vanishing."""
    monkeypatch.delitem(sys.modules, "s2sauth.cli.emulator")
    monkeypatch.setitem(sys.modules, "s2sauth.emulator", None)
    with pytest.raises(ModuleNotFoundError) as caught:
        build_parser()
    assert caught.value.name == "s2sauth.emulator"


def test_python_dash_m_version() -> None:
    """`python -m s2sauth --version` prints the version and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "s2sauth", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, f"s2sauth {__version__}\n")


def test_python_dash_m_without_a_command() -> None:
    """`python -m s2sauth` alone exits 2 with the usage on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "s2sauth"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: s2sauth")
