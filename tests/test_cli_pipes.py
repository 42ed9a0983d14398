"""The command line when its reader goes away: no traceback, as with `s2sauth doctor | head -1`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["doctor"], ["demo"]])
def test_a_closed_stdout_ends_quietly(command: list[str]) -> None:
    """With stdout a pipe nobody reads, the command exits without a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, deterministically
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(GCE_METADATA_HOST="127.0.0.1:9", PYTHONPATH=str(ROOT))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "s2sauth", *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr, result.stderr
    assert "BrokenPipeError" not in result.stderr
