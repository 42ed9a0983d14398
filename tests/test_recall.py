"""The shortcut every inbound adapter tries first: Gate.recall and Verifier.recall.

It may only ever answer what the full check would answer: a caller let in before,
with the same token, still current, its key still published, allowed by the policy
in force. Anything else is None, with no side effect, so the full check decides,
counts and logs as if the shortcut had not been tried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest
from support import Clock

from s2sauth import (
    CallerNotAllowedError,
    ExpiredTokenError,
    InvalidTokenError,
    UnknownKeyError,
    Verifier,
)
from s2sauth.emulator import Emulator
from s2sauth.iap import IAPVerifier
from s2sauth.verify.audience import PushAudience
from s2sauth.verify.caller import Caller
from s2sauth.verify.http import EXEMPT, Gate
from s2sauth.verify.keys import KeySet
from s2sauth.verify.policy import CallerPolicy, Rule

AUDIENCE = "https://receiver.example.run.app"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
OPS = "ops@demo-project.iam.gserviceaccount.com"


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def keys(emulator: Emulator, clock: Clock) -> Iterator[KeySet]:
    keyset = KeySet(emulator.jwks_url, clock=clock)
    yield keyset
    keyset.close()


@pytest.fixture
def verifier(keys: KeySet, clock: Clock) -> Verifier:
    return Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=keys, clock=clock)


def _admitted(gate: Gate, token: str, path: str = "/") -> Caller:
    """Let ``token`` in the full way once, as an adapter does on first sight."""
    policy = gate.route("GET", path)
    assert policy is not EXEMPT
    return gate.authenticate([f"Bearer {token}"], policy=policy, method="GET", path=path)


def test_a_token_let_in_before_is_recalled_and_counted_once(
    emulator: Emulator, verifier: Verifier
) -> None:
    gate = Gate(verifier)
    token = emulator.mint(AUDIENCE, account=CALLER)
    assert gate.recall([f"Bearer {token}"], (), gate.default) is None  # never seen
    caller = _admitted(gate, token)
    before = verifier.stats
    assert gate.recall([f"Bearer {token}"], (), gate.default) is caller
    after = verifier.stats
    assert (after.verified, after.cache_hits) == (before.verified + 1, before.cache_hits + 1)


@pytest.mark.parametrize(
    ("authorization", "serverless"),
    [
        pytest.param(["bearer {token}"], [], id="lower-case scheme"),
        pytest.param(["Bearer  {token}"], [], id="two spaces"),
        pytest.param(["Bearer {token}", "Bearer {token}"], [], id="two Authorization headers"),
        pytest.param(["Bearer {token}"], ["Bearer {token}"], id="X-Serverless-Authorization"),
        pytest.param(["Bearer {token}"], [""], id="empty X-Serverless-Authorization"),
        pytest.param([], [], id="no header"),
    ],
)
def test_anything_but_the_plain_header_takes_the_full_way(
    emulator: Emulator, verifier: Verifier, authorization: list[str], serverless: list[str]
) -> None:
    gate = Gate(verifier)
    token = emulator.mint(AUDIENCE, account=CALLER)
    _admitted(gate, token)
    before = verifier.stats
    values = [value.format(token=token) for value in authorization]
    assert gate.recall(values, [v.format(token=token) for v in serverless], gate.default) is None
    assert verifier.stats == before  # nothing counted: the full check will


def test_a_policy_that_refuses_leaves_the_refusal_to_the_full_check(
    emulator: Emulator, verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    """Recalled for the open route, not for the admin route; there a 403, logged with its name."""
    gate = Gate(verifier, rules=[Rule("/admin", [OPS])])
    token = emulator.mint(AUDIENCE, account=CALLER)
    _admitted(gate, token)
    admin = gate.route("POST", "/admin")
    assert isinstance(admin, CallerPolicy)
    before = verifier.stats
    assert gate.recall([f"Bearer {token}"], (), admin) is None
    assert verifier.stats == before
    with caplog.at_level(logging.INFO, logger="s2sauth"), pytest.raises(CallerNotAllowedError):
        gate.authenticate([f"Bearer {token}"], policy=admin, method="POST", path="/admin")
    assert verifier.stats.rejected_by_reason == {
        **before.rejected_by_reason,
        "caller_not_allowed": 1,
    }
    (line,) = [r.getMessage() for r in caplog.records if "rejected:" in r.getMessage()]
    assert line.startswith("rejected: caller_not_allowed (403) POST /admin: ")
    assert gate.recall([f"Bearer {token}"], (), gate.default) is not None


def test_an_expired_token_is_not_recalled_and_the_full_check_says_why(
    emulator: Emulator, verifier: Verifier, clock: Clock
) -> None:
    gate = Gate(verifier)
    token = emulator.mint(AUDIENCE, account=CALLER, lifetime=600)
    _admitted(gate, token)
    clock.advance(600 + 120)  # past the leeway
    assert gate.recall([f"Bearer {token}"], (), gate.default) is None
    with pytest.raises(ExpiredTokenError, match="expired"):
        _admitted(gate, token)


def test_a_token_whose_key_was_retired_is_not_recalled(
    emulator: Emulator, verifier: Verifier, keys: KeySet
) -> None:
    gate = Gate(verifier)
    token = emulator.mint(AUDIENCE, account=CALLER)
    _admitted(gate, token)
    emulator.rotate_keys(keep_old=False)
    keys.refresh()
    assert gate.recall([f"Bearer {token}"], (), gate.default) is None
    with pytest.raises(UnknownKeyError):
        _admitted(gate, token)


def test_a_verifier_without_a_cache_recalls_nothing(emulator: Emulator, keys: KeySet) -> None:
    verifier = Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=keys, cache_size=0)
    gate = Gate(verifier)
    token = emulator.mint(AUDIENCE, account=CALLER)
    _admitted(gate, token)
    assert gate.recall([f"Bearer {token}"], (), gate.default) is None


class Stricter(Verifier):
    """A user's verifier that adds a check of its own to every token."""

    refused = False

    def authenticate(self, token: str) -> Caller:
        if self.refused:
            raise InvalidTokenError("turned away by the subclass")
        return super().authenticate(token)


def test_a_subclass_that_adds_to_authenticate_is_never_bypassed(
    emulator: Emulator, keys: KeySet
) -> None:
    verifier = Stricter(AUDIENCE, allowed_callers=[CALLER], keyset=keys)
    gate = Gate(verifier)
    token = emulator.mint(AUDIENCE, account=CALLER)
    _admitted(gate, token)
    verifier.refused = True
    assert gate.recall([f"Bearer {token}"], (), gate.default) is None
    with pytest.raises(InvalidTokenError, match="subclass"):
        _admitted(gate, token)


def test_gates_whose_check_is_more_than_the_token_recall_nothing(
    emulator: Emulator, keys: KeySet
) -> None:
    """People beside services, and push audiences bound to the request URL, take the full way."""
    token = emulator.mint(AUDIENCE, account=CALLER)
    service = Verifier(AUDIENCE, allowed_callers=[CALLER], keyset=keys)
    service.authenticate(token)
    iap = IAPVerifier("/projects/1/apps/demo", keys_url=emulator.iap_jwks_url)
    with_people = Gate(service, iap=iap)
    assert with_people.recall([f"Bearer {token}"], (), with_people.default) is None
    iap.close()

    pushed = emulator.mint(f"{AUDIENCE}/push", account=CALLER)
    push = Verifier(PushAudience(AUDIENCE), allowed_callers=[CALLER], keyset=keys)
    gate = Gate(push)
    gate.authenticate([f"Bearer {pushed}"], policy=gate.default, path="/push")
    assert gate.recall([f"Bearer {pushed}"], (), gate.default) is None


def test_a_recalled_request_leaves_no_name_for_a_later_refusal(
    emulator: Emulator, verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    """The shortcut names no request, so a refusal outside one is logged without a path."""
    gate = Gate(verifier)
    token = emulator.mint(AUDIENCE, account=CALLER)
    _admitted(gate, token, "/first")
    assert gate.recall([f"Bearer {token}"], (), gate.default) is not None
    with caplog.at_level(logging.INFO, logger="s2sauth"), pytest.raises(CallerNotAllowedError):
        verifier.verify(emulator.mint(AUDIENCE, account=OPS))
    (line,) = [r.getMessage() for r in caplog.records if "rejected:" in r.getMessage()]
    assert "/first" not in line and "/second" not in line


def _flask_client(verifier: Verifier) -> Callable[[str], int]:
    from flask import Flask

    from s2sauth.flask import require_id_token

    app = Flask(__name__)

    @app.get("/orders")
    @require_id_token(verifier=verifier)
    def orders() -> str:
        return "ok"

    client = app.test_client()
    return lambda token: (
        client.get("/orders", headers={"Authorization": f"Bearer {token}"}).status_code
    )


def _fastapi_client(verifier: Verifier) -> Callable[[str], int]:
    import asyncio

    import httpx
    from fastapi import Depends, FastAPI

    from s2sauth.fastapi import IDTokenBearer

    app = FastAPI()

    @app.get("/orders")
    def orders(caller: Caller = Depends(IDTokenBearer(verifier))) -> str:  # noqa: B008
        return "ok"

    async def get(token: str) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            response = await client.get("/orders", headers={"Authorization": f"Bearer {token}"})
            return response.status_code

    return lambda token: asyncio.run(get(token))


@pytest.mark.parametrize("make", [_flask_client, _fastapi_client], ids=["flask", "fastapi"])
def test_decorator_and_dependency_recall_and_name_their_refusals(
    emulator: Emulator,
    verifier: Verifier,
    caplog: pytest.LogCaptureFixture,
    make: Callable[[Verifier], Callable[[str], int]],
) -> None:
    """Flask's decorator and FastAPI's dependency answer a known token from the cache, and a
    refusal that follows is logged under its own request."""
    get = make(verifier)
    token = emulator.mint(AUDIENCE, account=CALLER)
    assert [get(token), get(token)] == [200, 200]
    assert verifier.stats.cache_hits == 1
    with caplog.at_level(logging.INFO, logger="s2sauth"):
        assert get(emulator.mint(AUDIENCE, account=OPS)) == 403
    (line,) = [r.getMessage() for r in caplog.records if "rejected:" in r.getMessage()]
    assert line.startswith("rejected: caller_not_allowed (403) GET /orders: ")
