"""s2sauth and unmodified google-auth agree: same metadata server, same tokens, same ADC files."""

from __future__ import annotations

import datetime
import json
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import google.auth.transport.requests
import google.oauth2.id_token
import google.oauth2.service_account
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from s2sauth import TokenFetchError
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import ADCSource, MetadataServerSource, UrllibRequest

CALLER = "caller@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://callee-xyz.a.run.app"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
TARGET = "target@demo-project.iam.gserviceaccount.com"
IAM_HOST = "iamcredentials.googleapis.com"
# google-auth refreshes user credentials at oauth2.googleapis.com whatever token_uri says.
GOOGLE_HOSTS = ("https://oauth2.googleapis.com", f"https://{IAM_HOST}")
IAM_PATH = "/v1/projects/-/serviceAccounts/"
REFRESH_TOKEN = "1//fake-refresh-token"
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


@dataclass(frozen=True)
class Seen:
    """One request the fake endpoint received."""

    path: str
    authorization: str | None
    body: Mapping[str, Any]


def google_error(code: int, message: str) -> dict[str, Any]:
    """An error body the way Google APIs write one."""
    status = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}[code]
    return {"error": {"code": code, "message": message, "status": status}}


class FakeOAuth:
    """Google's token endpoint and IAM Credentials API on 127.0.0.1, trusting one key.

    It also answers CONNECT like an HTTPS proxy, and then plays
    iamcredentials.googleapis.com inside the tunnel once `tls` is set.
    """

    def __init__(self, public_key: rsa.RSAPublicKey, signer: crypt.RSASigner) -> None:
        self.public_pem = public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.signer = signer
        self.paths: list[str] = []
        self.seen: list[Seen] = []
        self.issued: list[str] = []
        self.tls: ssl.SSLContext | None = None
        self.iam_refusal: int | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.paths.append(self.path)
                length = int(self.headers["Content-Length"])
                status, body = owner.answer(
                    self.path, self.headers.get("Authorization"), self.rfile.read(length)
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_CONNECT(self) -> None:
                if owner.tls is None:
                    self.send_error(405)
                    return
                self.send_response(200)
                self.end_headers()
                self.rfile.close()
                self.connection = owner.tls.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb")
                self.wfile = self.connection.makefile("wb")
                self.close_connection = False  # the tunnelled request is still to come

            def finish(self) -> None:
                super().finish()
                if self.connection is not self.request:
                    self.connection.close()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.origin}/token"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def answer(
        self, path: str, authorization: str | None, raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        if path.endswith("/token"):
            form = {name: values[0] for name, values in parse_qs(raw.decode()).items()}
            self.seen.append(Seen(path, authorization, form))
            return self.token(form)
        body = json.loads(raw)
        self.seen.append(Seen(path, authorization, body))
        if authorization not in [f"Bearer {token}" for token in self.issued]:
            return 401, google_error(401, "Request had invalid authentication credentials.")
        if self.iam_refusal is not None:
            # Echoes the credential back, as a careless upstream might.
            message = f"Permission denied on resource (or it may not exist): {authorization}"
            return self.iam_refusal, google_error(self.iam_refusal, message)
        principal, _, method = path.removeprefix(IAM_PATH).partition(":")
        now = int(time.time())
        if method == "generateIdToken":
            claims = {
                "iss": "https://accounts.google.com",
                "aud": body["audience"],
                "azp": "1234567890",
                "sub": "1234567890",
                "iat": now,
                "exp": now + 3600,
            }
            if body.get("includeEmail"):
                claims |= {"email": principal, "email_verified": True}
            return 200, {"token": self.sign(claims)}
        if method == "generateAccessToken":
            expires = datetime.datetime.fromtimestamp(now + 3600, datetime.timezone.utc)
            return 200, {
                "accessToken": self.issue(f"impersonated-{len(self.issued)}"),
                "expireTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        return 404, google_error(404, f"unknown method {method!r}")

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") != REFRESH_TOKEN:
                return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
            return 200, {"access_token": self.issue("user"), "expires_in": 3599}
        try:
            # google-auth signs every grant for Google's token endpoint, wherever it sends it.
            grant = jwt.decode(form["assertion"], certs=self.public_pem, audience=GOOGLE_TOKEN_URI)
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
            return 200, {"id_token": self.sign(claims)}
        return 200, {"access_token": self.issue(f"for-{grant['scope']}"), "expires_in": 3599}

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT over `claims`, signed with the key the fake trusts."""
        token: bytes = jwt.encode(self.signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()

    def issue(self, label: str) -> str:
        """An access token shaped like Google's, remembered so the IAM API can check it."""
        token = "ya29.fake-" + re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        self.issued.append(token)
        return token


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


# --- ADC impersonating a service account, against a local fake IAM Credentials API ----


class ToFake(UrllibRequest):
    """s2sauth's ADC transport, with Google's token and IAM Credentials hosts moved to a fake."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self.origin = origin

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        for host in GOOGLE_HOSTS:
            if url.startswith(f"{host}/"):
                url = self.origin + url.removeprefix(host)
        return super().__call__(url, method, body, headers, timeout, **kwargs)


@dataclass(frozen=True)
class Impersonation:
    """An impersonated-service-account ADC file, the fake behind it, and the transport to use."""

    path: Path
    oauth: FakeOAuth
    request: ToFake


def trust_fake_iam(oauth: FakeOAuth, directory: Path) -> Path:
    """Let `oauth` serve TLS as the IAM host; return the CA file that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, IAM_HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(IAM_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    ca = directory / "iam-ca.pem"
    ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    chain = directory / "iam-tls.pem"
    chain.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    oauth.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    oauth.tls.load_cert_chain(chain)
    return ca


@pytest.fixture(params=["service_account", "authorized_user"])
def impersonation(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    service_account: tuple[Path, FakeOAuth],
) -> Impersonation:
    """An impersonated ADC file (gcloud writes the authorized_user kind) and its fake."""
    key_file, oauth = service_account
    if request.param == "service_account":
        source = json.loads(key_file.read_text())
    else:
        source = {
            "type": "authorized_user",
            "client_id": "764086051850-fake.apps.googleusercontent.com",
            "client_secret": "fake-client-secret",
            "refresh_token": REFRESH_TOKEN,
        }
    path = tmp_path / "application_default_credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "impersonated_service_account",
                "service_account_impersonation_url": (
                    f"https://{IAM_HOST}{IAM_PATH}{TARGET}:generateAccessToken"
                ),
                "delegates": [],
                "source_credentials": source,
            }
        )
    )
    # google-auth posts generateIdToken with its own `requests` session rather than through
    # the transport it is given, so the fake also stands in as the HTTPS proxy in front of
    # the IAM host; only 127.0.0.1 is ever dialled.
    for name in (*PROXY_VARS, "CURL_CA_BUNDLE", "GOOGLE_API_USE_CLIENT_CERTIFICATE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, oauth.origin)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(trust_fake_iam(oauth, tmp_path)))
    return Impersonation(path, oauth, ToFake(oauth.origin))


def test_adc_impersonated_id_token(impersonation: Impersonation) -> None:
    """An impersonated ADC file mints the target's ID token through generateIdToken."""
    oauth = impersonation.oauth
    provider = IDTokenProvider(ADCSource(impersonation.path, request=impersonation.request))
    token = provider.token(AUDIENCE)
    claims = jwt.decode(token, certs=oauth.public_pem, audience=AUDIENCE)  # type: ignore[no-untyped-call]
    assert claims["email"] == TARGET
    assert claims["aud"] == AUDIENCE
    assert [seen.path for seen in oauth.seen] == [
        "/token",
        f"{IAM_PATH}{TARGET}:generateIdToken",
    ]
    generate = oauth.seen[1]
    assert generate.authorization == f"Bearer {oauth.issued[0]}"
    assert generate.body["audience"] == AUDIENCE
    assert generate.body["includeEmail"] is True
    assert provider.token(AUDIENCE) == token
    assert len(oauth.seen) == 2


def test_adc_impersonated_access_token(impersonation: Impersonation) -> None:
    """An impersonated ADC file mints the target's access token through generateAccessToken."""
    oauth = impersonation.oauth
    provider = AccessTokenProvider(ADCSource(impersonation.path, request=impersonation.request))
    token = provider.token(["scope-a"])
    assert [seen.path for seen in oauth.seen] == [
        "/token",
        f"{IAM_PATH}{TARGET}:generateAccessToken",
    ]
    generate = oauth.seen[1]
    assert generate.authorization == f"Bearer {oauth.issued[0]}"
    assert generate.body["scope"] == ["scope-a"]
    assert token == oauth.issued[1]
    assert provider.token("scope-a") == token
    assert len(oauth.seen) == 2


@pytest.mark.parametrize("kind", ["id", "access"])
def test_adc_impersonation_refused(impersonation: Impersonation, kind: str) -> None:
    """The IAM API refusing surfaces as TokenFetchError, with no token in its message."""
    oauth = impersonation.oauth
    oauth.iam_refusal = 403
    source = ADCSource(impersonation.path, request=impersonation.request)
    with pytest.raises(TokenFetchError) as caught:
        if kind == "id":
            source.fetch_id_token(AUDIENCE)
        else:
            source.fetch_access_token(["scope-a"])
    assert [seen.path.rpartition(":")[2] for seen in oauth.seen] == [
        "/token",
        "generateIdToken" if kind == "id" else "generateAccessToken",
    ]
    message = str(caught.value)
    assert "denied" in message
    for token in oauth.issued:
        assert token not in message
    assert "ya29." not in message


def test_adc_impersonation_without_requests(
    impersonation: Impersonation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without requests, an impersonated ID token is a TokenFetchError naming the extra."""
    monkeypatch.setitem(sys.modules, "requests", None)  # what `import requests` meets when absent
    monkeypatch.delitem(sys.modules, "google.auth.transport.requests")
    source = ADCSource(impersonation.path, request=impersonation.request)
    with pytest.raises(TokenFetchError) as caught:
        source.fetch_id_token(AUDIENCE)
    assert "pip install 's2sauth[requests]'" in caught.value.message
    assert [seen.path for seen in impersonation.oauth.seen] == []


def test_adc_impersonation_unreachable_is_retryable(
    impersonation: Impersonation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IAM Credentials API that cannot be reached is a TokenFetchError worth retrying."""
    with socket.socket() as closed:  # a loopback port with nothing listening
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, dead)
    source = ADCSource(impersonation.path, request=impersonation.request)
    with pytest.raises(TokenFetchError) as caught:
        source.fetch_id_token(AUDIENCE)
    assert caught.value.retryable is True
    assert [seen.path for seen in impersonation.oauth.seen] == ["/token"]
