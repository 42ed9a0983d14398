"""No secret leaks: no token, token segment or piece of signature in any output.

Every rejection reason goes through the Verifier (sync and async), the four
inbound adapters under real servers, and the ``s2sauth verify`` command;
outbound fetch failures (including replies that *carry* a token) go through
the metadata source and provider. Each scenario collects everything a person
or a log pipeline could see: log records of the ``s2sauth`` loggers at DEBUG,
stdout and stderr, exception ``str``/``repr``/traceback (with chained causes),
and response status, headers and bodies. The scan looks for the token, its
header and payload segments, and every 16-character window of its signature.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from attack_kit import AUDIENCE, CALLER, STRANGER, Forge, fetch, find_leaks, soak

from s2sauth._errors import S2SAuthError, TokenFetchError
from s2sauth._http import HTTPRequest, HTTPResponse, HTTPTransport
from s2sauth.emulator import Emulator

Build = Callable[[Forge, Emulator], str]


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture every ``s2sauth`` log record, down to DEBUG."""
    caplog.set_level(logging.DEBUG, logger="s2sauth")


def _expired(f: Forge, emulator: Emulator) -> str:
    now = int(time.time())
    return emulator.mint(AUDIENCE, account=CALLER, claims={"iat": now - 7200, "exp": now - 3600})


def _immature(f: Forge, emulator: Emulator) -> str:
    now = int(time.time())
    return emulator.mint(AUDIENCE, account=CALLER, claims={"iat": now + 3600, "exp": now + 7200})


#: One token per rejection reason the verifier has; the id is the expected ``reason``.
REASONS = [
    pytest.param(lambda f, e: f.good + "." + f.good, id="malformed"),
    pytest.param(
        lambda f, e: "{}.{}.{}".format(f.unsigned(f.header(alg="none")), *f.good.split(".")[1:]),
        id="malformed-five-segments",
    ),
    pytest.param(
        lambda f, e: (
            f"{f.unsigned(f.header(alg='none')).rpartition('.')[0]}.{f.good.rpartition('.')[2]}"
        ),
        id="invalid_header",
    ),
    pytest.param(
        lambda f, e: f.sign(f.header(kid="no-such-key"), key=f.attacker), id="unknown_key"
    ),
    pytest.param(lambda f, e: f.sign(key=f.attacker), id="bad_signature"),
    pytest.param(
        lambda f, e: f.good.rpartition(".")[0] + ".SIGNATURE_REMOVED_BY_GOOGLE",
        id="signature_removed",
    ),
    pytest.param(_expired, id="expired"),
    pytest.param(_immature, id="not_yet_valid"),
    pytest.param(
        lambda f, e: e.mint(AUDIENCE, account=CALLER, claims={"iss": "https://evil.example"}),
        id="issuer_mismatch",
    ),
    pytest.param(
        lambda f, e: e.mint("https://another.example.run.app", account=CALLER),
        id="audience_mismatch",
    ),
    pytest.param(
        lambda f, e: e.mint(AUDIENCE, account=CALLER, claims={"sub": e.DELETE}),
        id="invalid_claims",
    ),
    pytest.param(lambda f, e: e.mint(AUDIENCE, account=STRANGER), id="caller_not_allowed"),
]


def _exception_texts(exc: BaseException) -> str:
    """Everything an exception shows: str, repr, message, and the formatted chain."""
    parts = [str(exc), repr(exc), getattr(exc, "message", "")]
    parts += traceback.format_exception(type(exc), exc, exc.__traceback__)
    return "\n".join(parts)


def _seen(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], *texts: str) -> str:
    out, err = capfd.readouterr()
    records = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        for record in caplog.records
    )
    return "\n".join([*texts, caplog.text, records, out, err])


def _reason(param_id: str) -> str:
    return param_id.split("-")[0]


@pytest.mark.parametrize("build", REASONS)
def test_verifier_rejections_leak_nothing(
    build: Build,
    request: pytest.FixtureRequest,
    forge: Forge,
    emulator: Emulator,
    verifier: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Each rejection reason's exception and log lines hold no part of the token."""
    token = build(forge, emulator)
    with pytest.raises(S2SAuthError) as refused:
        verifier.verify(token)
    assert refused.value.reason == _reason(request.node.callspec.id)
    seen = _seen(caplog, capfd, _exception_texts(refused.value))
    assert not find_leaks(seen, [token])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("build", REASONS)
async def test_async_verifier_rejections_leak_nothing(
    build: Build,
    forge: Forge,
    emulator: Emulator,
    verifier: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``averify`` rejections hold no part of the token either."""
    token = build(forge, emulator)
    with pytest.raises(S2SAuthError) as refused:
        await verifier.averify(token)
    assert not find_leaks(_seen(caplog, capfd, _exception_texts(refused.value)), [token])


@pytest.mark.parametrize("header", ["Authorization", "X-Serverless-Authorization"])
@pytest.mark.parametrize("build", REASONS)
def test_middleware_rejections_leak_nothing(
    build: Build,
    header: str,
    forge: Forge,
    emulator: Emulator,
    servers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Replies and server-side logs of every adapter hold no part of the token."""
    token = build(forge, emulator)
    replies = [fetch(url, headers={header: f"Bearer {token}"}).text for url in servers.values()]
    assert all(not reply.startswith("200") for reply in replies)
    seen = _seen(caplog, capfd, *replies)
    assert "rejected" in caplog.text  # the rejections were logged, and scanned
    assert not find_leaks(seen, [token])


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Bearer {token} {token}", id="two tokens"),
        pytest.param("Basic {token}", id="another scheme"),
        pytest.param("Bearer\t{token}", id="tab separator"),
        pytest.param("{token}", id="no scheme"),
        pytest.param("Bearer {token}=====", id="padding junk"),
    ],
)
def test_junk_authorization_headers_leak_nothing(
    value: str,
    forge: Forge,
    servers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Malformed Authorization headers carrying a genuine token are refused without echo."""
    token = forge.good
    replies = [
        fetch(url, headers={"Authorization": value.format(token=token)}) for url in servers.values()
    ]
    assert {reply.status for reply in replies} == {401}
    assert not find_leaks(_seen(caplog, capfd, *(r.text for r in replies)), [token])


@pytest.fixture(scope="module")
def keyless_servers(transport: HTTPTransport) -> Iterator[dict[str, Any]]:
    """ASGI and WSGI servers whose verifier can never fetch keys (connection refused)."""
    from s2sauth.asgi import IDTokenMiddleware as ASGIMiddleware
    from s2sauth.verify.verifier import Verifier
    from s2sauth.wsgi import IDTokenMiddleware as WSGIMiddleware

    verifier = Verifier(
        AUDIENCE,
        allowed_callers=[CALLER],
        certs_url="http://127.0.0.1:9/certs",
        transport=transport,
    )
    asgi = ASGIMiddleware(soak.asgi_app, verifier=verifier)
    wsgi = WSGIMiddleware(soak.wsgi_app, verifier=verifier)
    with soak.serve_asgi(asgi) as asgi_url, soak.serve_wsgi(wsgi) as wsgi_url:
        yield {"asgi": asgi_url, "wsgi": wsgi_url, "verifier": verifier}


def test_keys_unavailable_leaks_nothing(
    forge: Forge,
    keyless_servers: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With no keys to be had: 503 replies, KeyFetchError and logs hold no part of the token."""
    token = forge.good
    with pytest.raises(S2SAuthError) as refused:
        keyless_servers["verifier"].verify(token)
    assert refused.value.reason == "keys_unavailable"
    replies = [fetch(keyless_servers[name], token) for name in ("asgi", "wsgi")]
    assert {reply.status for reply in replies} == {503}
    seen = _seen(caplog, capfd, _exception_texts(refused.value), *(r.text for r in replies))
    assert not find_leaks(seen, [token])


@pytest.mark.parametrize("build", REASONS)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_verify_rejections_leak_nothing(
    build: Build,
    as_json: bool,
    forge: Forge,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``s2sauth verify BAD_TOKEN`` exits 1 and prints the reason, never the token."""
    from s2sauth.cli import main

    token = build(forge, emulator)
    argv = ["verify", token, "--audience", AUDIENCE, "--allow", CALLER]
    argv += ["--certs-url", emulator.jwks_url] + (["--json"] if as_json else [])
    assert main(argv) == 1
    seen = _seen(caplog, capfd)
    assert "reason" in seen or "rejected" in seen
    assert not find_leaks(seen, [token])


class Recording:
    """A transport that remembers every token it carried back, to scan for them later."""

    def __init__(self, inner: Callable[[HTTPRequest], HTTPResponse]) -> None:
        self.inner = inner
        self.tokens: list[str] = []

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        response = self.inner(request)
        body = response.body.decode("utf-8", "replace").strip()
        if body.count(".") == 2 and body.startswith("eyJ"):
            self.tokens.append(body)
        return response


def _echoing(
    status: int, token: str, *, flavor: bool = True
) -> Callable[[HTTPRequest], HTTPResponse]:
    headers = {"metadata-flavor": "Google"} if flavor else {}

    def transport(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(status, headers, f"error: {token} was refused\n".encode())

    return transport


@pytest.mark.parametrize(
    ("status", "flavor"),
    [(404, True), (403, True), (400, True), (500, True), (503, True), (200, False)],
    ids=["404", "403", "400", "500", "503", "200 without Metadata-Flavor"],
)
def test_metadata_errors_quoting_a_token_leak_nothing(
    status: int,
    flavor: bool,
    forge: Forge,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A metadata reply whose error text quotes a token: the TokenFetchError does not."""
    from s2sauth.tokens.provider import IDTokenProvider
    from s2sauth.tokens.sources import MetadataServerSource

    token = forge.good
    source = MetadataServerSource(
        CALLER, host="127.0.0.1:9", transport=_echoing(status, token, flavor=flavor), deadline=0.5
    )
    with pytest.raises(TokenFetchError) as failed:
        IDTokenProvider(source).token(AUDIENCE)
    assert not find_leaks(_seen(caplog, capfd, _exception_texts(failed.value)), [token])


def test_reply_without_metadata_flavor_leaks_its_token_nowhere(
    emulator: Emulator,
    transport: HTTPTransport,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The emulator's genuine token, sent without Metadata-Flavor, is refused and never quoted."""
    from s2sauth.tokens.provider import IDTokenProvider
    from s2sauth.tokens.sources import MetadataServerSource

    recording = Recording(transport)
    source = MetadataServerSource(CALLER, host=emulator.host, transport=recording, deadline=1.0)
    emulator.inject("metadata", omit_flavor=True)
    try:
        with pytest.raises(TokenFetchError) as failed:
            IDTokenProvider(source).token(AUDIENCE)
    finally:
        emulator.clear_faults()
    assert recording.tokens, "the emulator should have answered with a token"
    seen = _seen(caplog, capfd, _exception_texts(failed.value))
    assert not find_leaks(seen, recording.tokens)


def test_failed_background_refresh_leaks_nothing(
    emulator: Emulator,
    transport: HTTPTransport,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A refresh-ahead that fails logs a warning naming the audience, not the cached token."""
    from s2sauth.tokens.provider import IDTokenProvider
    from s2sauth.tokens.sources import MetadataServerSource

    offset = [0.0]
    recording = Recording(transport)
    source = MetadataServerSource(CALLER, host=emulator.host, transport=recording, deadline=0.5)
    provider = IDTokenProvider(source, clock=lambda: time.time() + offset[0])
    token = provider.token(AUDIENCE)
    emulator.inject("metadata", statuses=[500] * 50)
    try:
        offset[0] = 3500.0  # inside the refresh-ahead window
        assert provider.token(AUDIENCE) == token
        deadline = time.monotonic() + 10
        # The failure is counted before the warning is logged, on the refresh thread:
        # wait for the warning itself.
        while "background refresh" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        emulator.clear_faults()
    assert provider.stats.failures >= 1
    assert "background refresh" in caplog.text
    assert not find_leaks(_seen(caplog, capfd), [token, *recording.tokens])


def test_outbound_retry_after_401_leaks_nothing(
    emulator: Emulator,
    transport: HTTPTransport,
    servers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """requests' IDTokenAuth refused twice (wrong audience) logs none of the tokens it sent."""
    import requests

    from s2sauth.requests import IDTokenAuth
    from s2sauth.tokens.provider import IDTokenProvider
    from s2sauth.tokens.sources import MetadataServerSource

    recording = Recording(transport)
    provider = IDTokenProvider(
        MetadataServerSource(CALLER, host=emulator.host, transport=recording)
    )
    # A token for another audience, sent here on purpose (targets): the service refuses it.
    auth = IDTokenAuth(
        "https://not-this-service.example", provider=provider, targets=[servers["asgi"]]
    )
    with requests.Session() as session:
        reply = session.get(servers["asgi"], auth=auth, timeout=10)
    assert reply.status_code == 401
    texts = [reply.text, str(reply.headers), *(r.text for r in reply.history)]
    assert len(recording.tokens) == 2  # the first token, and the one fetched after the 401
    assert not find_leaks(_seen(caplog, capfd, *texts), recording.tokens)


def test_the_scanner_finds_any_piece_of_a_token(forge: Forge) -> None:
    """The scan can fail: it spots a token, a segment or 16 characters of a signature.

    It ignores 15 characters and Cloud Run's public placeholder.
    """
    token = forge.good
    header, payload, signature = token.split(".")
    for leaked in (token, header, payload, signature, signature[100:116]):
        assert find_leaks(f"log line: {leaked} (end)", [token])
    assert not find_leaks(f"log line: {signature[100:115]} (end)", [token])
    removed = f"{header}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE"
    assert not find_leaks("signature was SIGNATURE_REMOVED_BY_GOOGLE", [removed])
