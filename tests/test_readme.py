"""Every ```python block in README.md compiles, defines what it uses, and runs where it can."""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import symtable
from pathlib import Path
from typing import Any

import httpx
import pytest

from s2sauth.emulator import Emulator

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = [
    pytest.param(match.group(1), id=f"README.md:{TEXT.count(chr(10), 0, match.start()) + 2}")
    for match in re.finditer(r"^```python\n(.*?)^```", TEXT, re.DOTALL | re.MULTILINE)
]

# Blocks that do what a test may not (call a service over the network) or need what only a
# real project has; each still compiles and defines every name it uses.
NOT_RUN = {
    "session.get(url)": "calls a Cloud Run service over the network",
    "client.get(url)": "calls a Cloud Run service over the network",
    "aiohttp.ClientSession(": "calls a Cloud Run service over the network",
    "from orders_pb2": "needs your generated gRPC stubs",
    "from django.": "needs a configured Django project",
    "from rest_framework": "needs a configured Django project",
    "CloudRunAudience()": "asks Cloud Run for the service's URL",
}


def undefined_names(source: str) -> set[str]:
    """Names ``source`` reads at module level or as globals that it never binds or imports."""
    top = symtable.symtable(source, "README.md", "exec")
    bound = {
        symbol.get_name()
        for symbol in top.get_symbols()
        if symbol.is_assigned() or symbol.is_imported()
    }
    used: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table is top or symbol.is_global()):
                used.add(symbol.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return used - bound - set(dir(builtins))


def test_the_readme_has_python_blocks() -> None:
    """The extraction finds the README's examples (a broken regex would pass everything)."""
    assert len(BLOCKS) >= 15


@pytest.mark.parametrize("source", BLOCKS)
def test_every_block_compiles_and_defines_what_it_uses(source: str) -> None:
    """Each block is valid Python at top level (no bare await) and uses no undefined name."""
    compile(source, "README.md", "exec")  # a top-level await or async with is a SyntaxError
    assert undefined_names(source) == set()


@pytest.mark.parametrize("source", BLOCKS)
def test_every_block_that_can_runs_against_the_emulator(
    source: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each block needing no network and no project of its own runs as written."""
    reasons = [reason for marker, reason in NOT_RUN.items() if marker in source]
    if reasons:
        pytest.skip(reasons[0])
    for name, value in emulator.environ().items():
        monkeypatch.setenv(name, value)
    exec(compile(source, "README.md", "exec"), {"__name__": "readme"})


def _fastapi_block() -> str:
    return next(str(p.values[0]) for p in BLOCKS if "IDTokenBearer" in str(p.values[0]))


def test_the_fastapi_error_body_shown_is_the_one_returned(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's FastAPI refusal body is what the README's FastAPI app answers."""
    shown = re.search(r"FastAPI's own error shape.*?```json\n(.*?)```", TEXT, re.DOTALL)
    assert shown is not None
    for name, value in emulator.environ().items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(_fastapi_block(), "README.md", "exec"), namespace)
    audience = "https://orders-abc123-ew.a.run.app"
    expired = emulator.mint(
        audience, account="frontend@my-project.iam.gserviceaccount.com", claims={"exp": 0}
    )

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=namespace["app"])
        async with httpx.AsyncClient(transport=transport, base_url=audience) as client:
            return await client.get("/orders/7", headers={"Authorization": f"Bearer {expired}"})

    response = asyncio.run(ask())
    assert response.status_code == 401
    assert response.json() == json.loads(shown.group(1))
