"""The check script: it builds a venv of its own and never touches the developer's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_script_never_removes_the_developers_venv() -> None:
    """.ci/run removes and uses only .ci/.venv, which git ignores."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    removals = re.findall(r"rm -rf (\S+)", script)
    assert removals == ['"$venv"'] and "venv=.ci/.venv" in script
    assert not re.search(r"(?<![/\w])\.venv/bin", script)
    assert ".ci/.venv/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    """The README's Development command installs and tests exactly as .ci/run does, with
    branch coverage enforced by a fail_under of at least 95 %."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    development = readme.partition("## Development")[2]
    command = next(line for line in development.splitlines() if line.startswith("python3 -m venv"))
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # The script's commands, spelled as the README spells them.
    spelled = (
        script.replace('"$venv"', ".venv")
        .replace('"$venv/bin/', ".venv/bin/")
        .replace('" install', " install")
        .replace('" -m', " -m")
    )
    assert readme.count(command) == 2  # the test command at the top is this one too
    install, and_, test = command.partition(" && .venv/bin/python -m coverage run")
    assert and_ and install in spelled
    # The script runs the same steps one to a line: under set -e a failing left side of
    # && does not stop it, and a failed test run would end green.
    steps = (".venv/bin/python -m coverage run" + test).split(" && ")
    lines = [line.strip() for line in spelled.splitlines()]
    assert [step in lines for step in steps] == [True] * len(steps)
    assert lines.index(steps[0]) < lines.index(steps[1])
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r"^branch = true$", pyproject, re.MULTILINE)
    fail_under = re.search(r"^fail_under = (\d+)$", pyproject, re.MULTILINE)
    assert fail_under is not None and int(fail_under.group(1)) >= 95
