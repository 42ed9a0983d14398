"""The public surface: what `import s2sauth` exports, and what it must not import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import s2sauth


def test_all_names_exist_and_read_as_s2sauth() -> None:
    """Every name in __all__ exists, and public classes repr as s2sauth.X."""
    for name in s2sauth.__all__:
        obj = getattr(s2sauth, name)
        if isinstance(obj, type):
            assert obj.__module__ == "s2sauth", name


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted and has no duplicates."""
    assert s2sauth.__all__ == sorted(set(s2sauth.__all__))


def test_every_public_error_derives_from_the_base() -> None:
    """Every exported exception is an S2SAuthError."""
    errors = [getattr(s2sauth, n) for n in s2sauth.__all__ if n.endswith("Error")]
    assert len(errors) >= 15
    for error in errors:
        assert issubclass(error, s2sauth.S2SAuthError), error


def test_import_needs_no_optional_dependency() -> None:
    """`import s2sauth` imports none of the optional frameworks or clients."""
    code = (
        "import sys, s2sauth\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'requests', 'httpx', 'starlette', 'flask', 'fastapi',"
        " 'uvicorn', 'waitress'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("s2sauth.requests", "requests", "requests"),
        ("s2sauth.httpx", "httpx", "httpx"),
        ("s2sauth.flask", "flask", "flask"),
        ("s2sauth.fastapi", "fastapi", "fastapi"),
    ],
)
def test_adapter_without_its_framework_names_the_extra(
    module: str, missing: str, extra: str
) -> None:
    """An adapter whose framework is missing fails with an ImportError naming the extra."""
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "try:\n"
        f"    import {module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert f"s2sauth[{extra}]" in result.stdout
