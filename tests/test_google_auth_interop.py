"""s2sauth and unmodified google-auth agree: same metadata server, same tokens, same ADC files."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import google.auth.transport.requests
import google.oauth2.id_token
import google.oauth2.service_account
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import ADCSource, MetadataServerSource

CALLER = "caller@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://callee-xyz.a.run.app"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The emulator on loopback, exported the way `s2sauth emulator` tells users to."""
    for name in (*PROXY_VARS, "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    with Emulator(service_accounts=(CALLER,)) as emu:
        for name, value in emu.environ().items():
            monkeypatch.setenv(name, value)
        yield emu


def test_google_auth_fetch_id_token_from_emulator(emulator: Emulator) -> None:
    """Unmodified google.oauth2.id_token.fetch_id_token gets a token from the emulator."""
    request = google.auth.transport.requests.Request()
    token = google.oauth2.id_token.fetch_id_token(request, AUDIENCE)
    claims = google.oauth2.id_token.verify_token(
        token, request, audience=AUDIENCE, certs_url=emulator.pem_certs_url
    )
    assert claims["aud"] == AUDIENCE


def test_google_auth_verifies_provider_tokens(emulator: Emulator) -> None:
    """google-auth's verify_token accepts what IDTokenProvider fetched, email included."""
    provider = IDTokenProvider(MetadataServerSource())
    token = provider.token(AUDIENCE)
    claims = google.oauth2.id_token.verify_token(
        token,
        google.auth.transport.requests.Request(),
        audience=AUDIENCE,
        certs_url=emulator.pem_certs_url,
    )
    assert claims["aud"] == AUDIENCE
    assert claims["iss"] in ("https://accounts.google.com", "accounts.google.com")
    assert claims["email"] == CALLER
    assert claims["email_verified"] is True


# --- ADC with a service-account key file, against a local fake token endpoint ---------


class FakeOAuth:
    """A tiny OAuth token endpoint on 127.0.0.1 that trusts one service-account key."""

    def __init__(self, public_key: rsa.RSAPublicKey, signer: crypt.RSASigner) -> None:
        self.public_pem = public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.signer = signer
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.paths.append(self.path)
                length = int(self.headers["Content-Length"])
                form = parse_qs(self.rfile.read(length).decode())
                status, body = owner.answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def answer(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        try:
            # google-auth signs every grant for Google's token endpoint, wherever it sends it.
            grant = jwt.decode(
                form["assertion"][0], certs=self.public_pem, audience=GOOGLE_TOKEN_URI
            )
        except (KeyError, ValueError) as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        now = int(time.time())
        if "target_audience" in grant:
            claims = {
                "iss": "https://accounts.google.com",
                "aud": grant["target_audience"],
                "sub": "1234567890",
                "email": grant["iss"],
                "email_verified": True,
                "iat": now,
                "exp": now + 3600,
            }
            return 200, {"id_token": jwt.encode(self.signer, claims).decode()}
        return 200, {"access_token": f"ya29.fake-for-{grant['scope']}", "expires_in": 3599}


@pytest.fixture
def service_account(tmp_path: Path) -> Iterator[tuple[Path, FakeOAuth]]:
    """A throwaway service-account key file whose token_uri is a local fake endpoint."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    oauth = FakeOAuth(key.public_key(), crypt.RSASigner.from_string(pem, key_id="test-key"))
    oauth.thread.start()
    path = tmp_path / "key.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "demo-project",
                "private_key_id": "test-key",
                "private_key": pem,
                "client_email": CALLER,
                "client_id": "1234567890",
                "token_uri": oauth.url,
            }
        )
    )
    try:
        yield path, oauth
    finally:
        oauth.server.shutdown()
        oauth.server.server_close()


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run without proxy settings from the outer environment."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_proxies")
def test_adc_key_file_from_environment(
    monkeypatch: pytest.MonkeyPatch, service_account: tuple[Path, FakeOAuth]
) -> None:
    """ADCSource finds GOOGLE_APPLICATION_CREDENTIALS and mints an ID token through google-auth."""
    path, oauth = service_account
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    provider = IDTokenProvider(ADCSource())
    token = provider.token(AUDIENCE)
    assert provider.token(AUDIENCE) == token
    claims = jwt.decode(token, certs=oauth.public_pem, audience=AUDIENCE)
    assert claims["email"] == CALLER
    assert oauth.paths == ["/token"]


@pytest.mark.usefixtures("no_proxies")
def test_adc_access_token_from_key_file(service_account: tuple[Path, FakeOAuth]) -> None:
    """Access tokens come from the same key file, cached per scope set."""
    path, oauth = service_account
    provider = AccessTokenProvider(ADCSource(path))
    token = provider.token(["scope-a"])
    assert token == "ya29.fake-for-scope-a"
    assert provider.token("scope-a") == token
    assert len(oauth.paths) == 1


def test_adc_honours_https_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, service_account: tuple[Path, FakeOAuth]
) -> None:
    """The ADC transport goes through HTTP(S)_PROXY, as corporate networks need."""
    path, oauth = service_account
    info = json.loads(path.read_text())
    # The token endpoint's name does not resolve: only the proxy can reach it.
    info["token_uri"] = "http://oauth2.invalid/token"
    proxied = tmp_path / "proxied.json"
    proxied.write_text(json.dumps(info))
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    proxy = oauth.url.removesuffix("/token")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    token = ADCSource(proxied).fetch_id_token(AUDIENCE)
    assert token.value.count(".") == 2
    assert oauth.paths == ["http://oauth2.invalid/token"]


@pytest.mark.usefixtures("no_proxies")
def test_adc_with_a_credentials_object(service_account: tuple[Path, FakeOAuth]) -> None:
    """ID-token credentials handed in are re-targeted at each audience asked for."""
    path, oauth = service_account
    credentials = google.oauth2.service_account.IDTokenCredentials.from_service_account_file(
        str(path), target_audience="https://placeholder"
    )
    token = ADCSource(credentials).fetch_id_token(AUDIENCE)
    assert jwt.decode(token.value, certs=oauth.public_pem, audience=AUDIENCE)["email"] == CALLER
