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
