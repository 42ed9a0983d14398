"""Hypothesis fuzzing of the Authorization header through the ASGI and WSGI middleware.

Whatever the header holds, the answer is a 401 with a JSON body: never a 500,
never an accepted request.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2sauth._http import HTTPTransport
from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
from s2sauth.emulator import Emulator
from s2sauth.verify.verifier import Verifier
from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture(scope="module")
def emulator(emulator_key: rsa.RSAPrivateKey) -> Iterator[Emulator]:
    """The emulator: keys and tokens."""
    with Emulator(CALLER, signing_key=emulator_key) as emu:
        yield emu


@pytest.fixture(scope="module")
def valid_token(emulator: Emulator) -> str:
    """A token the verifier accepts; fuzzing mutates it."""
    return emulator.mint(AUDIENCE, account=CALLER)


@pytest.fixture(scope="module")
def verifier(emulator: Emulator, valid_token: str) -> Iterator[Verifier]:
    """A verifier with warm keys (so no 503 can hide a crash)."""
    transport = HTTPTransport()
    verifier = Verifier(AUDIENCE, certs_url=emulator.jwks_url, transport=transport)
    assert verifier.verify(valid_token).email == CALLER
    yield verifier
    transport.close()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
jose_headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "none", "HS256", "ES256", "", "rs256"])},
    optional={"kid": st.text(max_size=40), "typ": json_values, "jku": st.text(max_size=20)},
)
segments = st.one_of(
    st.binary(max_size=64).map(b64url),
    json_values.map(lambda value: b64url(json.dumps(value).encode())),
    jose_headers.map(lambda header: b64url(json.dumps(header).encode())),
    st.text(alphabet=B64URL + "=+/.", max_size=64),
)
jwt_shaped = st.lists(segments, min_size=1, max_size=5).map(".".join)


def mutations(token: str) -> st.SearchStrategy[str]:
    """Tokens that differ from ``token`` by one replaced, deleted or inserted character."""
    position = st.integers(0, len(token) - 1)
    replaced = (
        st.tuples(position, st.sampled_from(B64URL + "."))
        .filter(lambda pair: token[pair[0]] != pair[1])
        .map(lambda pair: token[: pair[0]] + pair[1] + token[pair[0] + 1 :])
    )
    deleted = position.map(lambda i: token[:i] + token[i + 1 :])
    inserted = st.tuples(position, st.sampled_from(B64URL + ".")).map(
        lambda pair: token[: pair[0]] + pair[1] + token[pair[0] :]
    )
    return replaced | deleted | inserted


def header_values(token: str) -> st.SearchStrategy[bytes]:
    """Raw bytes, Bearer + junk, Bearer + JWT-shaped junk, and near-misses of a valid token."""
    schemes = st.sampled_from(["Bearer ", "bearer ", "BEARER  ", "Bearer", " Bearer ", ""])
    bearer = st.tuples(schemes, jwt_shaped | mutations(token)).map("".join)
    latin1 = st.text(alphabet=st.characters(max_codepoint=255), max_size=80)
    texts = st.one_of(bearer, st.tuples(schemes, latin1).map("".join))
    return st.binary(max_size=120) | texts.map(lambda text: text.encode("latin-1"))


def assert_rejected(status: int, body: bytes) -> None:
    assert status == 401, body
    assert json.loads(body)["error"] in {"invalid_token", "unauthorized"}


class TestASGI:
    """The ASGI middleware, driven through httpx.ASGITransport."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Parsing does not depend on the event loop: asyncio only."""
        return "asyncio"

    @FUZZ
    @given(data=st.data())
    async def test_authorization_header(
        self, verifier: Verifier, valid_token: str, data: st.DataObject
    ) -> None:
        """Any Authorization value is answered 401: never 500, never accepted."""
        value = data.draw(header_values(valid_token))

        async def hello(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"accepted"})

        transport = httpx.ASGITransport(app=ASGIMiddleware(hello, verifier=verifier))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            response = await client.get("/", headers=[(b"Authorization", value)])
        assert_rejected(response.status_code, response.content)


class TestWSGI:
    """The WSGI middleware, called with a hand-built environ."""

    @FUZZ
    @given(data=st.data())
    def test_authorization_header(
        self, verifier: Verifier, valid_token: str, data: st.DataObject
    ) -> None:
        """Any Authorization value is answered 401: never 500, never accepted."""
        value = data.draw(header_values(valid_token)).decode("latin-1")
        statuses: list[str] = []

        def hello(environ: Any, start_response: Any) -> list[bytes]:
            start_response("200 OK", [])
            return [b"accepted"]

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)

        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "HTTP_AUTHORIZATION": value,
            "wsgi.input": io.BytesIO(),
        }
        body = b"".join(WSGIMiddleware(hello, verifier=verifier)(environ, start_response))
        assert_rejected(int(statuses[0].split()[0]), body)
