"""The key set: parsing, hygiene, caching, refresh and failure handling (s2sauth.verify.keys)."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support import T0, Clock, b64int, self_signed_pem, wait_for

from s2sauth._errors import ConfigurationError, KeyFetchError, UnknownKeyError
from s2sauth._http import HTTPRequest, HTTPResponse, TransportError
from s2sauth.verify.keys import KeySet, parse_key_set

URL = "https://keys.example/oauth2/v3/certs"


def jwk(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, **extra: Any
) -> dict[str, Any]:
    """The public JWK of ``key``, with ``extra`` members (None removes one)."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        entry: dict[str, Any] = {
            "kty": "RSA",
            "kid": kid,
            "n": b64int(numbers.n),
            "e": b64int(numbers.e),
            "alg": "RS256",
            "use": "sig",
        }
    else:
        point = key.public_key().public_numbers()
        entry = {
            "kty": "EC",
            "kid": kid,
            "crv": "P-256",
            "x": b64int(point.x),
            "y": b64int(point.y),
        }
    for name, value in extra.items():
        if value is None:
            entry.pop(name, None)
        else:
            entry[name] = value
    return entry


class Endpoint:
    """A fake keys endpoint: a transport that serves a document and counts requests."""

    def __init__(self, document: Any = None, *, headers: Mapping[str, str] | None = None) -> None:
        self.document = document
        self.body: bytes | None = None
        self.status = 200
        self.headers = {"cache-control": "public, max-age=3600"} if headers is None else headers
        self.error: str | None = None
        self.gate: threading.Event | None = None
        self.requests: list[HTTPRequest] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        with self._lock:
            self.requests.append(request)
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.error is not None:
            raise TransportError(self.error)
        body = self.body if self.body is not None else json.dumps(self.document).encode()
        return HTTPResponse(self.status, dict(self.headers), body)


@pytest.fixture(scope="session")
def key() -> rsa.RSAPrivateKey:
    """The session's RSA-2048 key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def key2() -> rsa.RSAPrivateKey:
    """A second RSA-2048 key, for rotations."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> Clock:
    """A fresh injected clock."""
    return Clock()


@pytest.fixture
def endpoint(key: rsa.RSAPrivateKey) -> Endpoint:
    """An endpoint publishing one good key, ``k1``."""
    return Endpoint({"keys": [jwk(key, "k1")]})


def keyset(endpoint: Endpoint, clock: Clock, **options: Any) -> KeySet:
    return KeySet(URL, transport=endpoint, clock=clock, **options)


def loaded(endpoint: Endpoint, clock: Clock, **options: Any) -> KeySet:
    """A key set that has fetched once."""
    keys = keyset(endpoint, clock, **options)
    keys.refresh()
    return keys


def same_key(a: Any, b: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bool:
    return bool(a.public_numbers() == b.public_key().public_numbers())


# -- parsing and hygiene ---------------------------------------------------------------------


def test_jwks_is_parsed(endpoint: Endpoint, clock: Clock, key: rsa.RSAPrivateKey) -> None:
    """A JWKS entry becomes the RSA public key for its kid, fetched once."""
    keys = keyset(endpoint, clock)
    assert same_key(keys.get("k1"), key)
    assert same_key(keys.get("k1"), key)
    assert endpoint.calls == 1
    assert endpoint.requests[0].url == URL
    assert keys.kids == ("k1",)


def test_pem_map_is_parsed(clock: Clock, key: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey) -> None:
    """A {kid: PEM certificate} map (Google's v1 format) is understood too."""
    endpoint = Endpoint({"a": self_signed_pem(key), "b": self_signed_pem(key2)})
    keys = keyset(endpoint, clock)
    assert same_key(keys.get("a"), key)
    assert same_key(keys.get("b"), key2)


def test_pem_entries_are_checked(clock: Clock, key: rsa.RSAPrivateKey) -> None:
    """A PEM map entry that is not a certificate, or a weak key, is skipped."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    endpoint = Endpoint(
        {"good": self_signed_pem(key), "junk": "not a cert", "weak": self_signed_pem(weak)}
    )
    keys = loaded(endpoint, clock)
    assert keys.kids == ("good",)


def test_duplicate_pem_member_is_not_used(clock: Clock, key: rsa.RSAPrivateKey) -> None:
    """A kid that appears twice in a PEM map is not used."""
    pem = json.dumps(self_signed_pem(key))
    endpoint = Endpoint()
    endpoint.body = f'{{"dup": {pem}, "dup": {pem}, "ok": {pem}}}'.encode()
    assert loaded(endpoint, clock).kids == ("ok",)


def test_es256_keys_need_es256(clock: Clock, key: rsa.RSAPrivateKey, ec_key: Any) -> None:
    """A P-256 key is used only by a key set configured for ES256."""
    document = {"keys": [jwk(key, "rsa"), jwk(ec_key, "ec")]}
    assert loaded(Endpoint(document), clock).kids == ("rsa",)
    both = loaded(Endpoint(document), clock, algorithms=("RS256", "ES256"))
    assert both.kids == ("ec", "rsa")
    assert same_key(both.get("ec"), ec_key)
    pem = keyset(Endpoint({"ec": self_signed_pem(ec_key)}), clock, algorithms=["ES256"])
    assert same_key(pem.get("ec"), ec_key)


def _bad_entries(key: rsa.RSAPrivateKey, ec_key: Any) -> list[Any]:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return [
        pytest.param(jwk(weak, "bad"), id="1024-bit"),
        pytest.param(jwk(key, "bad", e=b64int(3)), id="e=3"),
        pytest.param(jwk(key, "bad", e=b64int(65539)), id="e=65539"),
        # A lenient decoder would drop the '!' and read 65537.
        pytest.param(jwk(key, "bad", e="AQ!AB"), id="e with a stray character"),
        pytest.param(jwk(key, "bad", alg="HS256"), id="alg HS256"),
        pytest.param(jwk(key, "bad", alg="RS512"), id="alg RS512"),
        pytest.param(jwk(key, "bad", alg="ES256"), id="alg ES256 on an RSA key"),
        pytest.param(jwk(key, "bad", use="enc"), id="use enc"),
        pytest.param(jwk(key, "bad", key_ops=["encrypt"]), id="key_ops without verify"),
        pytest.param(jwk(key, "bad", key_ops="verify"), id="key_ops not a list"),
        pytest.param(jwk(key, "bad", kty="oct"), id="kty oct"),
        pytest.param(jwk(key, "bad", kty=None), id="kty missing"),
        pytest.param(jwk(key, "bad", n=None), id="n missing"),
        pytest.param(jwk(key, "bad", n="!!!"), id="n not base64url"),
        pytest.param(jwk(key, "bad", e=5), id="e a number"),
        pytest.param(jwk(ec_key, "bad", crv="P-384"), id="EC P-384"),
        pytest.param(jwk(ec_key, "bad", x=b64int(5)), id="EC point off the curve"),
        pytest.param(jwk(ec_key, "bad"), id="EC key, ES256 not configured"),
    ]


def test_hygiene_rejections(key: rsa.RSAPrivateKey, ec_key: Any, clock: Clock) -> None:
    """Weak, mislabelled or unusable keys are skipped; good keys beside them still serve."""
    for case in _bad_entries(key, ec_key):
        (entry,) = case.values
        endpoint = Endpoint({"keys": [entry, jwk(key, "good")]})
        keys = loaded(endpoint, clock)
        assert keys.kids == ("good",), case.id
        with pytest.raises(UnknownKeyError):
            keys.get("bad")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="no alg, use or key_ops"),
        pytest.param({"alg": None, "use": None}, id="alg and use absent"),
        pytest.param({"key_ops": ["verify"]}, id="key_ops verify"),
    ],
)
def test_optional_members_may_be_absent(
    key: rsa.RSAPrivateKey, clock: Clock, extra: dict[str, Any]
) -> None:
    """alg, use and key_ops are checked only when present."""
    assert loaded(Endpoint({"keys": [jwk(key, "k", **extra)]}), clock).kids == ("k",)


def test_duplicate_kid_uses_neither(
    key: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey, clock: Clock
) -> None:
    """Two keys with one kid are both skipped; the other keys still serve."""
    endpoint = Endpoint({"keys": [jwk(key, "dup"), jwk(key2, "dup"), jwk(key, "ok")]})
    keys = loaded(endpoint, clock)
    assert keys.kids == ("ok",)
    with pytest.raises(UnknownKeyError):
        keys.get("dup")


def test_skipped_entries_are_logged(
    key: rsa.RSAPrivateKey, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A skipped key is logged with its kid and the reason."""
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        keyset(Endpoint({"keys": [jwk(key, "bad", use="enc"), jwk(key, "ok")]}), clock).get("ok")
    assert any("'bad'" in r.getMessage() and "enc" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"\x00\xff garbage", "did not answer with a JSON key set", id="garbage"),
        pytest.param(b"", "did not answer with a JSON key set", id="empty"),
        pytest.param(b"<html><body>Sign in</body></html>", "HTML", id="html"),
        pytest.param(b"[]", "did not answer with a JSON key set", id="JSON array"),
        pytest.param(b'{"hello": 1}', "neither a JWKS", id="other JSON object"),
        pytest.param(b"{}", "neither a JWKS", id="empty object"),
        pytest.param(b'{"keys": []}', "no usable verification key", id="no keys"),
        pytest.param(b'{"keys": [1, "x"]}', "no usable verification key", id="junk keys"),
        pytest.param(b'{"keys": [], "keys": []}', "two 'keys' members", id="two keys members"),
    ],
)
def test_unusable_documents(body: bytes, message: str) -> None:
    """A document that is not a usable key set is a KeyFetchError saying what is wrong."""
    with pytest.raises(KeyFetchError, match=message):
        parse_key_set(body)


@pytest.mark.parametrize(
    ("status", "attempts"),
    [
        pytest.param(503, 2, id="503 retried"),
        pytest.param(500, 2, id="500 retried"),
        pytest.param(429, 2, id="429 retried"),
        pytest.param(408, 2, id="408 retried"),
        pytest.param(501, 2, id="501 retried, like every 5xx"),
        pytest.param(404, 1, id="404 not retried"),
        pytest.param(403, 1, id="403 not retried"),
        pytest.param(302, 1, id="redirect not followed"),
    ],
)
def test_error_statuses(clock: Clock, status: int, attempts: int) -> None:
    """A non-200 reply fails the fetch, after one retry for transient statuses."""
    endpoint = Endpoint({"keys": []})
    endpoint.status = status
    with pytest.raises(KeyFetchError, match=f"HTTP {status}"):
        keyset(endpoint, clock).get("k1")
    assert endpoint.calls == attempts


def test_html_error_page_is_named(clock: Clock) -> None:
    """An HTML error page is called out as such."""
    endpoint = Endpoint()
    endpoint.status = 502
    endpoint.headers = {"content-type": "text/html"}
    endpoint.body = b"<html>Bad Gateway</html>"
    with pytest.raises(KeyFetchError, match="HTML"):
        keyset(endpoint, clock).get("k1")


def test_transport_errors_are_retried_once(clock: Clock) -> None:
    """A connection failure is tried twice, then is a KeyFetchError naming the URL."""
    endpoint = Endpoint()
    endpoint.error = "connection refused"
    with pytest.raises(KeyFetchError, match="connection refused") as caught:
        keyset(endpoint, clock).get("k1")
    assert endpoint.calls == 2
    assert URL in caught.value.message
    assert caught.value.status_code == 503


def test_unexpected_transport_exception_fails_closed(clock: Clock) -> None:
    """A transport raising something unexpected still yields a KeyFetchError."""

    def broken(request: HTTPRequest) -> HTTPResponse:
        raise RuntimeError("boom")

    with pytest.raises(KeyFetchError, match="RuntimeError"):
        KeySet(URL, transport=broken, clock=clock).get("k1")


# -- cache lifetime --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        pytest.param({"cache-control": "public, max-age=600"}, 600, id="max-age"),
        pytest.param({"cache-control": "max-age=600", "age": "100"}, 500, id="max-age minus Age"),
        pytest.param({"cache-control": "max-age=600", "age": "590"}, 60, id="clamped to min"),
        pytest.param({"cache-control": "max-age=600", "age": "9999"}, 60, id="Age above max-age"),
        pytest.param({"cache-control": "max-age=5"}, 60, id="short max-age"),
        pytest.param({"cache-control": "max-age=10000000"}, 86400, id="clamped to max"),
        pytest.param({"cache-control": 'max-age="900"'}, 900, id="quoted max-age"),
        pytest.param({"cache-control": "max-age=abc"}, 300, id="bad max-age"),
        pytest.param({"cache-control": "max-age=600", "age": "x"}, 600, id="bad Age"),
        # '²' passes str.isdigit() but not int(): the header is junk, the keys are fine.
        pytest.param({"cache-control": "max-age=600", "age": "\u00b2"}, 600, id="Age '²'"),
        pytest.param({"cache-control": "max-age=\u0666\u0660"}, 300, id="Arabic-digit max-age"),
        pytest.param({"cache-control": "max-age=600", "age": "9" * 5000}, 600, id="Age too long"),
        pytest.param({}, 300, id="no Cache-Control"),
        pytest.param({"cache-control": "public"}, 300, id="no max-age"),
        pytest.param({"cache-control": "no-store, max-age=600"}, 60, id="no-store"),
        pytest.param({"cache-control": "No-Cache"}, 60, id="no-cache"),
    ],
)
def test_ttl_from_cache_control(
    key: rsa.RSAPrivateKey, clock: Clock, headers: dict[str, str], ttl: float
) -> None:
    """Keys live max-age minus Age, clamped to [min_ttl, max_ttl]; default_ttl without max-age."""
    keys = keyset(Endpoint({"keys": [jwk(key, "k1")]}, headers=headers), clock)
    keys.get("k1")
    assert keys.expires_at == T0 + ttl


def test_no_refetch_before_expiry_then_one(endpoint: Endpoint, clock: Clock) -> None:
    """Before the refresh window nothing is fetched; after expiry one blocking fetch runs."""
    endpoint.headers = {"cache-control": "max-age=1000"}
    keys = keyset(endpoint, clock)
    keys.get("k1")
    clock.advance(939)
    keys.get("k1")
    assert endpoint.calls == 1
    clock.advance(100)
    keys.get("k1")
    assert endpoint.calls == 2
    assert keys.expires_at == clock.now + 1000


def test_refresh_ahead_runs_once_in_the_background(endpoint: Endpoint, clock: Clock) -> None:
    """In the refresh window the current keys serve at once and one background fetch runs."""
    endpoint.headers = {"cache-control": "max-age=1000"}
    keys = keyset(endpoint, clock)
    keys.get("k1")
    clock.advance(950)  # the last 60 s of the lifetime
    endpoint.gate = threading.Event()
    for _ in range(100):
        keys.get("k1")  # never waits for the gated fetch
    wait_for(lambda: endpoint.calls == 2)
    endpoint.gate.set()
    wait_for(lambda: keys.expires_at == clock.now + 1000)
    for _ in range(100):
        keys.get("k1")
    assert endpoint.calls == 2
    assert keys.stats.fetches == 2


# -- unknown kids ----------------------------------------------------------------------------


def test_rotated_key_is_found_by_one_refetch(
    endpoint: Endpoint, clock: Clock, key: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey
) -> None:
    """A kid published after the last fetch is found by one refetch, without a restart."""
    keys = keyset(endpoint, clock)
    keys.get("k1")
    endpoint.document = {"keys": [jwk(key, "k1"), jwk(key2, "k2")]}
    assert same_key(keys.get("k2"), key2)
    assert endpoint.calls == 2


def test_threads_asking_for_a_new_kid_share_its_refetch(
    endpoint: Endpoint, clock: Clock, key: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey
) -> None:
    """Lookups of a just-published kid wait for the one refetch; none is refused meanwhile."""
    keys = keyset(endpoint, clock)
    keys.get("k1")
    endpoint.document = {"keys": [jwk(key, "k1"), jwk(key2, "k2")]}
    endpoint.gate = threading.Event()
    start = threading.Barrier(21)
    found: list[bool] = []

    def lookup() -> None:
        start.wait()
        found.append(same_key(keys.get("k2"), key2))

    threads = [threading.Thread(target=lookup) for _ in range(20)]
    for thread in threads:
        thread.start()
    start.wait()
    wait_for(lambda: endpoint.calls == 2)
    endpoint.gate.set()
    for thread in threads:
        thread.join()
    assert found == [True] * 20
    assert endpoint.calls == 2


def test_random_kid_flood_costs_at_most_one_refetch_per_cooldown(
    endpoint: Endpoint, clock: Clock
) -> None:
    """1,000 random kids cause at most one refetch; the next comes only after the cooldown."""
    keys = keyset(endpoint, clock)
    keys.get("k1")
    for _ in range(1000):
        with pytest.raises(UnknownKeyError):
            keys.get(uuid.uuid4().hex)
    assert endpoint.calls <= 2
    clock.advance(29)
    with pytest.raises(UnknownKeyError):
        keys.get("still-unknown")
    assert endpoint.calls <= 2
    clock.advance(1)
    with pytest.raises(UnknownKeyError):
        keys.get("unknown-after-cooldown")
    assert endpoint.calls == 3
    assert keys.get("k1") is not None


def test_random_kid_flood_from_threads(endpoint: Endpoint, clock: Clock) -> None:
    """Random kids from 20 threads at once still cost at most one refetch."""
    keys = keyset(endpoint, clock)
    keys.get("k1")
    start = threading.Barrier(20)
    refused: list[int] = []

    def flood() -> None:
        start.wait()
        for _ in range(50):
            try:
                keys.get(uuid.uuid4().hex)
            except UnknownKeyError:
                refused.append(1)

    threads = [threading.Thread(target=flood) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(refused) == 1000
    assert endpoint.calls <= 2


# -- failures --------------------------------------------------------------------------------


def test_never_fetched_and_down_fails_closed(clock: Clock) -> None:
    """With no keys ever fetched and the endpoint down, lookups raise KeyFetchError (503)."""
    endpoint = Endpoint()
    endpoint.status = 503
    keys = keyset(endpoint, clock)
    with pytest.raises(KeyFetchError, match="every token is refused") as caught:
        keys.get("k1")
    assert caught.value.retry_after >= 1
    assert keys.stats.failures == 1


def test_failures_are_not_retried_within_the_backoff(
    endpoint: Endpoint, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    """After a failed fetch, lookups fail fast until failure_backoff has passed."""
    endpoint.status = 503
    keys = keyset(endpoint, clock, failure_backoff=5)
    for _ in range(50):
        with pytest.raises(KeyFetchError, match="HTTP 503"):
            keys.get("k1")
    assert endpoint.calls == 2  # one fetch of two attempts
    endpoint.status = 200
    clock.advance(5)
    assert same_key(keys.get("k1"), key)
    assert endpoint.calls == 3


def test_failed_refresh_keeps_stale_keys_within_grace(
    endpoint: Endpoint, clock: Clock, key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """When refreshes fail, the last good keys serve until stale_grace after expiry, then 503."""
    endpoint.headers = {"cache-control": "max-age=300"}
    keys = keyset(endpoint, clock, stale_grace=3600)
    keys.get("k1")
    endpoint.status = 503
    clock.advance(301)
    with caplog.at_level(logging.WARNING, logger="s2sauth"):
        assert same_key(keys.get("k1"), key)
        for _ in range(10):
            clock.advance(60)
            assert same_key(keys.get("k1"), key)
    stale_warnings = [r for r in caplog.records if "expired at" in r.getMessage()]
    assert len(stale_warnings) == 1
    assert keys.stats.stale
    with pytest.raises(UnknownKeyError):
        keys.get("other")
    clock.now = T0 + 300 + 3600
    with pytest.raises(KeyFetchError, match="expired more than 3600 s ago"):
        keys.get("k1")


def test_stale_keys_are_refreshed_in_the_background(
    endpoint: Endpoint, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    """Once degraded, lookups answer from stale keys while retries run in the background."""
    endpoint.headers = {"cache-control": "max-age=300"}
    keys = keyset(endpoint, clock)
    keys.get("k1")
    endpoint.status = 503
    clock.advance(301)
    keys.get("k1")  # the blocking attempt fails: degraded from now on
    calls = endpoint.calls
    endpoint.status = 200
    endpoint.gate = threading.Event()
    clock.advance(10)
    assert same_key(keys.get("k1"), key)  # answered at once, retry started behind it
    wait_for(lambda: endpoint.calls == calls + 1)
    endpoint.gate.set()
    wait_for(lambda: not keys.stats.stale)
    assert keys.expires_at == clock.now + 300


def test_failed_unknown_kid_refetch_keeps_the_keys(
    endpoint: Endpoint, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    """A failing refetch for an unknown kid reports the kid unknown and keeps the keys."""
    keys = keyset(endpoint, clock)
    keys.get("k1")
    endpoint.error = "connection reset"
    with pytest.raises(UnknownKeyError):
        keys.get("k9")
    assert same_key(keys.get("k1"), key)


def test_refresh_raises_and_keeps_keys(endpoint: Endpoint, clock: Clock) -> None:
    """refresh() fetches now; a failure raises and the held keys stay."""
    keys = keyset(endpoint, clock)
    keys.refresh()
    assert endpoint.calls == 1
    endpoint.status = 500
    with pytest.raises(KeyFetchError):
        keys.refresh()
    assert keys.kids == ("k1",)


# -- concurrency -----------------------------------------------------------------------------


def test_cold_start_from_100_threads_fetches_once(endpoint: Endpoint, clock: Clock) -> None:
    """100 threads asking a cold key set at once share one fetch."""
    keys = keyset(endpoint, clock)
    endpoint.gate = threading.Event()
    start = threading.Barrier(101)
    results: list[Any] = []

    def lookup() -> None:
        start.wait()
        results.append(keys.get("k1"))

    threads = [threading.Thread(target=lookup) for _ in range(100)]
    for thread in threads:
        thread.start()
    start.wait()
    wait_for(lambda: endpoint.calls >= 1)
    endpoint.gate.set()
    for thread in threads:
        thread.join()
    assert len(results) == 100
    assert endpoint.calls == 1


@pytest.mark.anyio
async def test_async_cold_start_from_200_tasks_fetches_once(
    endpoint: Endpoint, clock: Clock, key: rsa.RSAPrivateKey
) -> None:
    """200 tasks asking a cold key set share one fetch, made off the event loop."""
    keys = keyset(endpoint, clock)
    results: list[Any] = []

    async def lookup() -> None:
        results.append(await keys.aget("k1"))

    async with anyio.create_task_group() as group:
        for _ in range(200):
            group.start_soon(lookup)
    assert len(results) == 200
    assert all(same_key(result, key) for result in results)
    assert endpoint.calls == 1


@pytest.mark.anyio
async def test_async_failures_and_refresh(endpoint: Endpoint, clock: Clock) -> None:
    """aget fails closed like get; arefresh fetches."""
    endpoint.status = 503
    keys = keyset(endpoint, clock)
    with pytest.raises(KeyFetchError):
        await keys.aget("k1")
    endpoint.status = 200
    await keys.arefresh()
    assert keys.kids == ("k1",)


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options"),
    [
        pytest.param("ftp://keys.example/certs", {}, id="ftp URL"),
        pytest.param("keys.example/certs", {}, id="no scheme"),
        pytest.param(URL, {"algorithms": ["HS256"]}, id="HMAC"),
        pytest.param(URL, {"algorithms": []}, id="no algorithm"),
        pytest.param(URL, {"min_ttl": -1}, id="negative min_ttl"),
        pytest.param(URL, {"min_ttl": 0}, id="zero min_ttl"),
        pytest.param(URL, {"timeout": 0}, id="zero timeout"),
        pytest.param(URL, {"stale_grace": "1h"}, id="string duration"),
        pytest.param(URL, {"unknown_kid_cooldown": True}, id="boolean duration"),
        pytest.param(URL, {"min_ttl": 600, "default_ttl": 300}, id="default below min"),
        pytest.param(URL, {"max_ttl": 100, "default_ttl": 300}, id="default above max"),
    ],
)
def test_configuration_errors(url: str, options: dict[str, Any]) -> None:
    """Bad URLs, algorithms and durations are refused at construction."""
    with pytest.raises(ConfigurationError):
        KeySet(url, **options)


def test_construction_does_no_io(endpoint: Endpoint, clock: Clock) -> None:
    """Building a key set fetches nothing; stats start at zero."""
    keys = keyset(endpoint, clock)
    assert endpoint.calls == 0
    assert keys.expires_at is None
    assert keys.kids == ()
    assert (keys.stats.fetches, keys.stats.failures, keys.stats.keys) == (0, 0, 0)
    assert repr(keys) == f"KeySet({URL!r})"
    keys.close()
