"""The public surface: what `import s2sauth` exports, and what it must not import."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from collections.abc import Mapping

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


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("s2sauth.tokens.metadata", ["DEFAULT_HOST", "METADATA_FLAVOR", "resolve_host"]),
        ("s2sauth.verify.claims", ["MAX_LIFETIME", "ClaimRules", "validate"]),
        (
            "s2sauth.verify.jws",
            ["MAX_TOKEN_SIZE", "SIGNATURE_REMOVED", "SUPPORTED_ALGORITHMS", "PublicKey"],
        ),
        ("s2sauth._doctor", ["DEFAULT_AUDIENCE", "Finding", "Status", "diagnose"]),
    ],
)
def test_core_modules_export_only_what_users_need(module: str, names: list[str]) -> None:
    """The cores' helper modules advertise a small surface; their parts stay unexported."""
    imported = importlib.import_module(module)
    assert imported.__all__ == names
    for name in names:
        assert hasattr(imported, name), name


def test_the_stats_classes_share_one_shape() -> None:
    """Provider, key set and verifier stats are all frozen dataclasses, none a Mapping."""
    from s2sauth.tokens.provider import ProviderStats
    from s2sauth.verify.keys import KeySetStats
    from s2sauth.verify.verifier import VerifierStats

    for kind in (ProviderStats, KeySetStats, VerifierStats):
        assert dataclasses.is_dataclass(kind), kind
        assert kind.__dataclass_params__.frozen, kind  # type: ignore[attr-defined]
        assert not issubclass(kind, Mapping), kind
