"""Cold start: what importing s2sauth loads, and the version kept without importlib.metadata."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import s2sauth

ROOT = Path(__file__).resolve().parent.parent
# Heavy or optional modules a receiving service or a caller must not pay for at import.
NOT_AT_IMPORT = ("google.auth", "importlib.metadata", "httpx", "requests", "opentelemetry")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import s2sauth.asgi",
        "import s2sauth.asgi\nfrom s2sauth import Verifier\nVerifier('https://svc', "
        "allowed_callers=['a@p.iam.gserviceaccount.com'])",
        "import s2sauth.wsgi",
        "from s2sauth import IDTokenProvider\nIDTokenProvider()",
    ],
    ids=["asgi", "asgi and a Verifier", "wsgi", "IDTokenProvider"],
)
def test_importing_loads_nothing_heavy(statement: str) -> None:
    """An adapter or a core imports no google-auth, importlib.metadata, httpx or requests."""
    loaded = _loaded_after(statement)
    assert [name for name in NOT_AT_IMPORT if name in loaded] == []


@pytest.mark.parametrize("adapter", ["asgi", "wsgi"])
def test_an_adapter_alone_loads_no_verifier(adapter: str) -> None:
    """Importing a middleware loads neither the verifier, IAP nor cryptography: those come
    with the Verifier the application builds (cold-start benchmark: <= 0.5x google-auth)."""
    loaded = _loaded_after(f"import s2sauth.{adapter}")
    heavy = ("s2sauth.verify.verifier", "s2sauth.iap", "cryptography")
    assert [name for name in heavy if name in loaded] == []


def test_a_receiver_does_not_load_the_outbound_core() -> None:
    """import s2sauth.asgi and a Verifier leave the token provider unloaded, and vice versa."""
    inbound = _loaded_after("import s2sauth.asgi\nfrom s2sauth import Verifier")
    assert "s2sauth.tokens.provider" not in inbound
    outbound = _loaded_after("from s2sauth import IDTokenProvider")
    assert "s2sauth.verify.verifier" not in outbound and "cryptography" not in outbound


def test_version_is_pyprojects() -> None:
    """s2sauth.__version__ (a literal) equals the version in pyproject.toml."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)  # no tomllib on 3.10
    assert found is not None and s2sauth.__version__ == found.group(1)


def test_lazy_names_are_public_and_listed() -> None:
    """Every lazily imported name resolves, reads as s2sauth.X, and dir() lists it."""
    for name in s2sauth.__all__:
        getattr(s2sauth, name)
    assert s2sauth.Verifier.__module__ == "s2sauth"
    assert set(s2sauth.__all__) <= set(dir(s2sauth))
    with pytest.raises(AttributeError):
        s2sauth.NoSuchName  # type: ignore[attr-defined]  # noqa: B018


def test_the_import_benchmark_times_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/bench_import times compiled bytecode, even under PYTHONDONTWRITEBYTECODE=1."""
    from benchmarks import bench_import

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    bench_import.measure_imports(1, str(tmp_path))
    compiled = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.pyc")}
    # Both sides of the ratio come from bytecode: s2sauth's modules and the anchor's.
    tag = sys.implementation.cache_tag
    assert any(path.endswith(f"s2sauth/requests.{tag}.pyc") for path in compiled)
    assert any(path.endswith(f"google/oauth2/id_token.{tag}.pyc") for path in compiled)
