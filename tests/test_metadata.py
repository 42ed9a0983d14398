"""The metadata protocol without I/O: requests built, replies read, retries decided."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from s2sauth._errors import TokenFetchError
from s2sauth._http import HTTPRequest, HTTPResponse, TransportError
from s2sauth._retry import is_retryable_status
from s2sauth.tokens import metadata
from s2sauth.tokens._tokens import AccessToken, IDToken, safe_text

HOST = "169.254.169.254"
FLAVOR = {"metadata-flavor": "Google"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt(claims: dict[str, Any]) -> str:
    header = b64(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.{b64(b'signature')}"


def reply(
    status: int = 200, body: bytes | str = b"", headers: dict[str, str] | None = None
) -> HTTPResponse:
    raw = body.encode() if isinstance(body, str) else body
    return HTTPResponse(status, FLAVOR if headers is None else headers, raw)


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- requests -----------------------------------------------------------------


def test_identity_request_shape() -> None:
    """The identity request is a GET with format=full and the Metadata-Flavor header."""
    request = metadata.identity_request(HOST, "https://callee-xyz.a.run.app", timeout=2.5)
    parts = urlsplit(request.url)
    assert request.method == "GET"
    assert parts.scheme == "http" and parts.netloc == HOST
    assert parts.path == "/computeMetadata/v1/instance/service-accounts/default/identity"
    assert query(request.url) == {"audience": ["https://callee-xyz.a.run.app"], "format": ["full"]}
    assert request.headers == {"Metadata-Flavor": "Google"}
    assert request.timeout == 2.5
    assert request.body is None


def test_identity_request_encodes_audience() -> None:
    """An audience with reserved characters is URL-encoded, never spliced raw."""
    audience = "https://svc.example/path?x=1&format=short#frag"
    request = metadata.identity_request(HOST, audience)
    assert "&format=short" not in request.url
    assert "audience=https%3A%2F%2Fsvc.example" in request.url
    assert query(request.url) == {"audience": [audience], "format": ["full"]}


def test_identity_request_for_named_account() -> None:
    """A named service account goes in the path; a slash in it cannot escape the path."""
    request = metadata.identity_request(HOST, "aud", account="caller@p.iam.gserviceaccount.com")
    assert "/service-accounts/caller@p.iam.gserviceaccount.com/identity?" in request.url
    sneaky = metadata.identity_request(HOST, "aud", account="../../project")
    assert "/service-accounts/..%2F..%2Fproject/identity?" in sneaky.url


def test_access_token_request_shape() -> None:
    """The token request names its scopes comma-separated, with the flavor header."""
    request = metadata.access_token_request(HOST, ["scope-a", "scope-b"])
    assert urlsplit(request.url).path.endswith("/service-accounts/default/token")
    assert query(request.url) == {"scopes": ["scope-a,scope-b"]}
    assert request.headers == {"Metadata-Flavor": "Google"}


def test_ping_request_shape() -> None:
    """The ping asks for the root with the flavor header."""
    request = metadata.ping_request("127.0.0.1:8080", timeout=0.5)
    assert request.url == "http://127.0.0.1:8080/"
    assert request.headers == {"Metadata-Flavor": "Google"}
    assert request.timeout == 0.5


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, "metadata.google.internal", id="nothing set"),
        pytest.param({"GCE_METADATA_HOST": "127.0.0.1:8080"}, "127.0.0.1:8080", id="host"),
        pytest.param({"GCE_METADATA_ROOT": "legacy:1"}, "legacy:1", id="legacy root"),
        pytest.param(
            {"GCE_METADATA_HOST": "new:2", "GCE_METADATA_ROOT": "legacy:1"}, "new:2", id="host wins"
        ),
        pytest.param({"GCE_METADATA_HOST": "http://h:3/"}, "h:3", id="scheme and slash dropped"),
        pytest.param({"GCE_METADATA_HOST": ""}, "metadata.google.internal", id="empty ignored"),
    ],
)
def test_resolve_host(environ: dict[str, str], expected: str) -> None:
    """The host comes from GCE_METADATA_HOST, then GCE_METADATA_ROOT, then the default."""
    assert metadata.resolve_host(environ) == expected


def test_resolve_host_reads_environment_at_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is read when asked, not at import."""
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1234")
    assert metadata.resolve_host() == "127.0.0.1:1234"


# --- identity replies --------------------------------------------------------


def test_identity_reply_gives_token_with_its_own_expiry() -> None:
    """A genuine 200 with a JWT gives an IDToken whose expiry is the token's exp."""
    token = fake_jwt({"aud": "a", "exp": 1_700_003_600, "email": "x@y"})
    assert "/identity?" in metadata.identity_request(HOST, "a").url
    result = metadata.parse_identity_response(reply(200, token), host=HOST)
    assert result == IDToken(token, 1_700_003_600.0)
    assert token not in repr(result)


def test_identity_body_whitespace_is_tolerated() -> None:
    """A trailing newline after the JWT does not make it invalid."""
    token = fake_jwt({"exp": 5})
    assert metadata.parse_identity_response(reply(200, token + "\n"), host=HOST).value == token


def test_missing_flavor_is_rejected() -> None:
    """A 200 without Metadata-Flavor: Google did not come from the metadata server."""
    response = reply(200, fake_jwt({"exp": 5}), headers={})
    with pytest.raises(TokenFetchError, match="did not come from the metadata server") as info:
        metadata.parse_identity_response(response, host=HOST)
    assert not info.value.retryable


def test_wrong_flavor_is_rejected() -> None:
    """Only the exact flavor value counts."""
    response = reply(200, fake_jwt({"exp": 5}), headers={"metadata-flavor": "Amazon"})
    with pytest.raises(TokenFetchError, match="did not come from the metadata server"):
        metadata.parse_identity_response(response, host=HOST)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("<html><body>Sign in to the Wi-Fi</body></html>", id="html"),
        pytest.param("", id="empty"),
        pytest.param("aaaa.bbbb", id="two segments"),
        pytest.param("a.b.c.d", id="four segments"),
        pytest.param("not a token at all \x00\xff", id="garbage"),
        pytest.param(f"{b64(b'{}')}.{b64(b'not json')}.{b64(b's')}", id="payload not json"),
        pytest.param(f"{b64(b'{}')}.{b64(b'[1, 2]')}.{b64(b's')}", id="payload not object"),
        pytest.param(fake_jwt({"aud": "a"}), id="no exp"),
        pytest.param(fake_jwt({"exp": "1700000000"}), id="string exp"),
        pytest.param(fake_jwt({"exp": 1.5}), id="float exp"),
        pytest.param(fake_jwt({"exp": True}), id="boolean exp"),
        pytest.param("eyJ.eyJ.\r\nX-Injected: 1", id="header injection"),
    ],
)
def test_non_jwt_bodies_are_errors(body: str) -> None:
    """A body that is not a three-part JWT with an integer exp is an error, never a token."""
    with pytest.raises(TokenFetchError) as info:
        metadata.parse_identity_response(reply(200, body), host=HOST)
    assert not info.value.retryable
    assert HOST in info.value.message


def test_404_fails_with_server_text_and_status() -> None:
    """An unknown account is a non-retryable error carrying the server's message and status."""
    response = reply(404, "<html><b>Error 404</b>: service account nobody@x not found</html>")
    with pytest.raises(TokenFetchError) as info:
        metadata.parse_identity_response(response, host=HOST)
    exc = info.value
    assert exc.status == 404
    assert not exc.retryable
    assert "service account nobody@x not found" in exc.message
    assert "<b>" not in exc.message


@pytest.mark.parametrize("status", [400, 401, 403])
def test_other_4xx_fail_at_once(status: int) -> None:
    """Client errors other than 408/429 are not retried."""
    with pytest.raises(TokenFetchError) as info:
        metadata.parse_identity_response(reply(status, "bad request: missing audience"), host=HOST)
    assert info.value.status == status
    assert not info.value.retryable
    assert "missing audience" in info.value.message


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    """408, 429 and 5xx are retryable, with or without the flavor header."""
    assert is_retryable_status(status)
    for headers in (FLAVOR, {}):
        with pytest.raises(TokenFetchError) as info:
            metadata.parse_identity_response(reply(status, "busy", headers), host=HOST)
        assert info.value.retryable
        assert info.value.status == status


@pytest.mark.parametrize("status", [200, 301, 400, 404, 407])
def test_non_retryable_statuses(status: int) -> None:
    """Success, redirects and ordinary client errors are not retryable statuses."""
    assert not is_retryable_status(status)


def test_error_text_never_carries_a_token() -> None:
    """A token echoed in an error body is cut out of the message."""
    token = fake_jwt({"exp": 5})
    with pytest.raises(TokenFetchError) as info:
        metadata.parse_identity_response(reply(403, f"denied for {token}"), host=HOST)
    assert token not in info.value.message
    assert token.split(".")[1] not in info.value.message
    assert "[redacted]" in info.value.message


def test_safe_text_trims() -> None:
    """Long server text is collapsed and shortened; empty text says so."""
    assert len(safe_text("x " * 1000)) <= 200
    assert safe_text("  a\n\n b  ") == "a b"
    assert safe_text("") == "(empty reply)"
    assert "ya29" not in safe_text("token ya29.a0AfH6SMB-secret.x")


def test_transport_error_is_retryable() -> None:
    """A request that got no reply becomes a retryable TokenFetchError."""
    error = metadata.no_answer(TransportError("connection refused"), HOST)
    assert error.message.startswith("no answer from the metadata server")
    assert error.retryable
    assert error.status is None


# --- access tokens ------------------------------------------------------------


def test_access_token_reply_good() -> None:
    """A JSON token reply gives an AccessToken expiring expires_in after now."""
    assert "/token?" in metadata.access_token_request(HOST, ["s"]).url
    body = json.dumps({"access_token": "ya29.secret", "expires_in": 3599, "token_type": "Bearer"})
    result = metadata.parse_access_token_response(reply(200, body), host=HOST, now=1000.0)
    assert result == AccessToken("ya29.secret", 4599.0)
    assert "ya29.secret" not in repr(result)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("not json", id="not json"),
        pytest.param("[]", id="not an object"),
        pytest.param('{"expires_in": 3599}', id="no token"),
        pytest.param('{"access_token": "", "expires_in": 3599}', id="empty token"),
        pytest.param('{"access_token": 5, "expires_in": 3599}', id="token not a string"),
        pytest.param('{"access_token": "t"}', id="no expires_in"),
        pytest.param('{"access_token": "t", "expires_in": "3599"}', id="string expires_in"),
        pytest.param('{"access_token": "t", "expires_in": -1}', id="negative expires_in"),
    ],
)
def test_access_token_bad_json(body: str) -> None:
    """A token reply without a string access_token and numeric expires_in is an error."""
    with pytest.raises(TokenFetchError, match="access_token") as info:
        metadata.parse_access_token_response(reply(200, body), host=HOST, now=0.0)
    assert not info.value.retryable


def test_access_token_missing_flavor() -> None:
    """Access-token replies need the flavor header too."""
    body = json.dumps({"access_token": "t", "expires_in": 10})
    with pytest.raises(TokenFetchError, match="did not come from the metadata server"):
        metadata.parse_access_token_response(reply(200, body, {}), host=HOST, now=0.0)


# --- ping ---------------------------------------------------------------------


def test_ping_accepts_any_genuine_reply() -> None:
    """Any reply with the flavor header means a metadata server is there."""
    assert metadata.ping_request(HOST).url == f"http://{HOST}/"
    for status in (200, 404, 503):
        assert metadata.parse_ping_response(reply(status, "ok"), host=HOST) is None


def test_ping_rejects_other_servers_and_silence() -> None:
    """A reply without the flavor header, or no connection, means no metadata server."""
    with pytest.raises(TokenFetchError, match="not a metadata server") as info:
        metadata.parse_ping_response(reply(200, "<html>", {}), host=HOST)
    assert info.value.retryable
    silence = metadata.no_answer(TransportError("timed out", timeout=True), HOST)
    assert "no answer" in silence.message and silence.retryable


def test_the_doctor_probes_the_host_the_library_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no override, the doctor pings metadata.google.internal, as MetadataServerSource
    does, not an address of its own (issue "Code health": it used to ask 169.254.169.254)."""
    from s2sauth._doctor import find_identity
    from s2sauth.tokens.sources import MetadataServerSource

    sent: list[str] = []

    def unreachable(request: HTTPRequest) -> HTTPResponse:
        sent.append(request.url)
        raise TransportError("connection refused")

    for name in ("GCE_METADATA_HOST", "GCE_METADATA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TokenFetchError):
        MetadataServerSource(transport=unreachable).ping()
    find_identity({"HOME": "/nonexistent"}, transport=unreachable)
    assert sent == [f"http://{metadata.DEFAULT_HOST}/"] * 2
