"""s2sauth and unmodified google-auth agree: same metadata server, same tokens, same ADC files."""

from __future__ import annotations

import base64
import datetime
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import google.oauth2.id_token
import google.oauth2.service_account
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import impersonated_credentials, jwt
from support import (
    IAM_HOST,
    IAM_PATH,
    PROXY_VARS,
    REFRESH_TOKEN,
    CountingServer,
    FakeGoogle,
    Tls,
    ToFake,
    service_account_info,
    throwaway_tls,
)

from s2sauth import TokenFetchError
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import (
    ADCSource,
    MetadataServerSource,
    UrllibRequest,
)

CALLER = "caller@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://callee-xyz.a.run.app"
TARGET = "target@demo-project.iam.gserviceaccount.com"


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


@pytest.fixture
def service_account(
    tmp_path: Path, emulator_key: rsa.RSAPrivateKey
) -> Iterator[tuple[Path, FakeGoogle]]:
    """A throwaway service-account key file whose token_uri is a local fake endpoint."""
    with FakeGoogle(emulator_key) as oauth:
        path = tmp_path / "key.json"
        path.write_text(json.dumps(service_account_info(emulator_key, CALLER, oauth.token_uri)))
        yield path, oauth


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run without proxy settings from the outer environment."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_proxies")
def test_adc_key_file_from_environment(
    monkeypatch: pytest.MonkeyPatch, service_account: tuple[Path, FakeGoogle]
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
def test_adc_access_token_from_key_file(service_account: tuple[Path, FakeGoogle]) -> None:
    """Access tokens come from the same key file, cached per scope set."""
    path, oauth = service_account
    provider = AccessTokenProvider(ADCSource(path))
    token = provider.token(["scope-a"])
    assert token == "ya29.fake-for-scope-a"
    assert provider.token("scope-a") == token
    assert len(oauth.paths) == 1


def test_adc_honours_https_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, service_account: tuple[Path, FakeGoogle]
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
    proxy = oauth.origin
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    token = ADCSource(proxied).fetch_id_token(AUDIENCE)
    assert token.value.count(".") == 2
    assert oauth.paths == ["http://oauth2.invalid/token"]


@pytest.mark.usefixtures("no_proxies")
def test_adc_with_a_credentials_object(service_account: tuple[Path, FakeGoogle]) -> None:
    """ID-token credentials handed in are re-targeted at each audience asked for."""
    path, oauth = service_account
    credentials = google.oauth2.service_account.IDTokenCredentials.from_service_account_file(
        str(path), target_audience="https://placeholder"
    )
    token = ADCSource(credentials).fetch_id_token(AUDIENCE)
    assert jwt.decode(token.value, certs=oauth.public_pem, audience=AUDIENCE)["email"] == CALLER


# --- ADC impersonating a service account, against a local fake IAM Credentials API ----


@dataclass(frozen=True)
class Impersonation:
    """An impersonated-service-account ADC file, the fake behind it, and the transport to use."""

    path: Path
    oauth: FakeGoogle
    request: ToFake


@pytest.fixture(params=["service_account", "authorized_user"])
def impersonation(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    service_account: tuple[Path, FakeGoogle],
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
    tls = throwaway_tls(tmp_path, [IAM_HOST])
    oauth.tls = tls.server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
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


# -- helpers of the tests below ------------------------------------------------------------


ADC_FILE = "application_default_credentials.json"


#: A loopback port nothing listens on (the discard port), as in conftest.
DEAD = "127.0.0.1:9"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


@pytest.fixture
def fake_google(emulator_key: rsa.RSAPrivateKey, tls: Tls) -> Iterator[FakeGoogle]:
    """The fake token endpoint and IAM proxy, stopped after the test."""
    with FakeGoogle(emulator_key, tls=tls.server, access_token="ya29.fake-access") as fake:
        yield fake


@pytest.fixture
def write_key(emulator_key: rsa.RSAPrivateKey, fake_google: FakeGoogle) -> Callable[[Path], Path]:
    """Write a service-account key file that gets its tokens from the fake Google."""

    def write(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(service_account_info(emulator_key, CALLER, fake_google.token_uri))
        )
        return path

    return write


class ScriptedCredentials(google.auth.credentials.Credentials):
    """Third-party credentials whose refresh sets a fixed token and expiry."""

    def __init__(self, token: str | None, expiry: datetime.datetime | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.next_token = token
        self.next_expiry = expiry
        self.audiences: list[str] = []

    def refresh(self, request: Any) -> None:
        self.token = self.next_token
        self.expiry = self.next_expiry

    def with_target_audience(self, audience: str) -> ScriptedCredentials:
        self.audiences.append(audience)
        return self


# -- UrllibRequest -------------------------------------------------------------------------


@pytest.mark.usefixtures("no_outer_settings")
def test_urllib_request_returns_status_headers_and_body(
    counting: Callable[..., CountingServer],
) -> None:
    """The ADC transport hands google-auth the reply's status, headers and body."""
    server = counting(lambda path: (201, {"X-Probe": path}, b"made"))
    response = UrllibRequest()(f"http://{server.host}/thing")
    assert response.status == 201
    assert response.headers["X-Probe"] == "/thing"
    assert response.data == b"made"


@pytest.mark.usefixtures("no_outer_settings")
def test_urllib_request_unreachable_is_a_google_auth_transport_error() -> None:
    """A refused connection is google-auth's TransportError naming the method and URL."""
    with pytest.raises(google.auth.exceptions.TransportError) as caught:
        UrllibRequest(timeout=2)(f"http://{DEAD}/token", method="POST", body=b"x=1")
    assert str(caught.value).startswith(f"POST http://{DEAD}/token failed: ")
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_unreachable_token_endpoint_is_retryable(
    tmp_path: Path, emulator_key: rsa.RSAPrivateKey
) -> None:
    """A key file whose token endpoint refuses connections is a retryable TokenFetchError."""
    path = tmp_path / "key.json"
    path.write_text(json.dumps(service_account_info(emulator_key, CALLER, f"http://{DEAD}/token")))
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(path).fetch_id_token(AUDIENCE)
    assert caught.value.retryable is True
    assert caught.value.message.startswith(
        "Application Default Credentials could not mint an ID token: "
    )
    assert f"http://{DEAD}/token failed" in caught.value.message


# -- ADCSource: where the file is found ----------------------------------------------------


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_found_in_cloudsdk_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_key: Callable[[Path], Path]
) -> None:
    """Without GOOGLE_APPLICATION_CREDENTIALS, gcloud's file under CLOUDSDK_CONFIG is used."""
    config = tmp_path / "gcloud-config"
    write_key(config / ADC_FILE)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(config))
    token = ADCSource().fetch_id_token(AUDIENCE)
    assert claims_of(token.value)["email"] == CALLER
    assert claims_of(token.value)["aud"] == AUDIENCE


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_found_in_home_gcloud_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_key: Callable[[Path], Path]
) -> None:
    """Without CLOUDSDK_CONFIG, the file is looked for in ~/.config/gcloud."""
    write_key(tmp_path / ".config" / "gcloud" / ADC_FILE)
    monkeypatch.setenv("HOME", str(tmp_path))
    token = ADCSource().fetch_id_token(AUDIENCE)
    assert claims_of(token.value)["email"] == CALLER


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_found_in_appdata_on_windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On Windows the gcloud file is looked for in %APPDATA%/gcloud."""
    path = tmp_path / "gcloud" / ADC_FILE
    path.parent.mkdir()
    path.write_text(json.dumps({"type": "authorized_user", "refresh_token": "r"}))
    monkeypatch.setenv("APPDATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    source = ADCSource()
    with monkeypatch.context() as windows, pytest.raises(TokenFetchError) as caught:
        windows.setattr(os, "name", "nt")
        source.fetch_id_token(AUDIENCE)
    # User credentials are refused, naming the file that was found.
    assert f"(found {path})" in caught.value.message


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_file_is_read_once(tmp_path: Path, write_key: Callable[[Path], Path]) -> None:
    """The ADC file is read at first use: ID and access tokens still come after it is removed."""
    path = write_key(tmp_path / "key.json")
    source = ADCSource(path)
    first = source.fetch_id_token(AUDIENCE)
    path.unlink()
    second = source.fetch_id_token("https://other.example")
    assert claims_of(first.value)["aud"] == AUDIENCE
    assert claims_of(second.value)["aud"] == "https://other.example"
    # Access tokens use the same contents (so the same key after a rotation), not a re-read.
    assert source.fetch_access_token(["scope-a"]).value


@pytest.mark.usefixtures("no_outer_settings")
@pytest.mark.parametrize("content", ["[]", '"key"', "null", "42"])
def test_adc_file_not_a_json_object(tmp_path: Path, content: str) -> None:
    """A credentials file holding JSON that is not an object is a TokenFetchError naming it."""
    path = tmp_path / "adc.json"
    path.write_text(content)
    for fetch in (
        lambda: ADCSource(path).fetch_id_token(AUDIENCE),
        lambda: ADCSource(path).fetch_access_token(["scope-a"]),
    ):
        with pytest.raises(TokenFetchError) as caught:
            fetch()
        assert caught.value.message == f"{path} is not a JSON credentials object"


# -- ADCSource: credentials objects --------------------------------------------------------


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_source_repr_names_credentials_never_secrets(tmp_path: Path) -> None:
    """repr names the file, the credentials class, or 'ADC'; never a token."""
    credentials = ScriptedCredentials("ya29.secret-token", None)
    source = ADCSource(credentials)
    source.fetch_access_token(["scope-a"])
    assert repr(source) == "ADCSource(credentials=ScriptedCredentials)"
    path = tmp_path / "key.json"
    assert repr(ADCSource(path)) == f"ADCSource(credentials={str(path)!r})"
    assert repr(ADCSource()) == "ADCSource(credentials=ADC)"


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_credentials_object_that_mints_no_id_token() -> None:
    """ID-token credentials whose refresh leaves no token give a TokenFetchError."""
    credentials = ScriptedCredentials(None, None)
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(credentials).fetch_id_token(AUDIENCE)
    assert caught.value.message == "Application Default Credentials returned no ID token"
    assert credentials.audiences == [AUDIENCE]


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_access_token_from_credentials_object(
    emulator_key: rsa.RSAPrivateKey, fake_google: FakeGoogle
) -> None:
    """A service-account credentials object mints access tokens with the scopes asked for."""
    credentials = google.oauth2.service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        service_account_info(emulator_key, CALLER, fake_google.token_uri)
    )
    before = time.time()
    token = ADCSource(credentials).fetch_access_token(["scope-a", "scope-b"])
    after = time.time()
    assert token.value == "ya29.fake-access"
    # google-auth keeps a naive UTC expiry; it is read as UTC, not local time.
    assert before + 3599 - 1 <= token.expires_at <= after + 3599 + 1
    (grant,) = fake_google.seen
    assert grant.body["scope"] == "scope-a scope-b"


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_empty_access_token_is_an_error(
    tmp_path: Path, write_key: Callable[[Path], Path], fake_google: FakeGoogle
) -> None:
    """A token endpoint answering an empty access_token gives a TokenFetchError, not ''."""
    fake_google.access_token = ""
    source = ADCSource(write_key(tmp_path / "key.json"))
    with pytest.raises(TokenFetchError) as caught:
        source.fetch_access_token(["scope-a"])
    assert caught.value.message == "Application Default Credentials returned no access token"
    assert len(fake_google.seen) == 1


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_access_token_without_expiry_lives_five_minutes(fake_google: FakeGoogle) -> None:
    """A token endpoint that omits expires_in: the access token is assumed to last 300 s."""
    fake_google.expires_in = None
    credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        None,
        refresh_token=REFRESH_TOKEN,
        token_uri=fake_google.token_uri,
        client_id="client-id",
        client_secret="client-secret",
    )
    before = time.time()
    token = ADCSource(credentials).fetch_access_token(["scope-a"])
    after = time.time()
    assert token.value == "ya29.fake-access"
    assert before + 300 <= token.expires_at <= after + 300
    assert fake_google.seen[0].body["grant_type"] == "refresh_token"


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_expiry_with_a_time_zone_is_kept() -> None:
    """An aware expiry is read in its own zone; a naive one as UTC: both give the same instant."""
    instant = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    aware = ScriptedCredentials("ya29.aware", datetime.datetime(2030, 1, 1, 2, tzinfo=plus_two))
    naive = ScriptedCredentials("ya29.naive", datetime.datetime(2030, 1, 1))
    assert ADCSource(aware).fetch_access_token(["s"]).expires_at == instant
    assert ADCSource(naive).fetch_access_token(["s"]).expires_at == instant


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_impersonated_credentials_object_mints_id_token(
    monkeypatch: pytest.MonkeyPatch, tls: Tls, fake_google: FakeGoogle
) -> None:
    """Impersonated credentials handed in mint the target's ID token through generateIdToken."""
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, fake_google.origin)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
    fake_google.issued.append("ya29.caller-token")  # as if the fake had handed it out earlier
    caller = google.oauth2.credentials.Credentials("ya29.caller-token")  # type: ignore[no-untyped-call]
    credentials = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
        source_credentials=caller,
        target_principal=TARGET,
        target_scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    token = ADCSource(credentials).fetch_id_token(AUDIENCE)
    claims = claims_of(token.value)
    assert claims["email"] == TARGET and claims["aud"] == AUDIENCE
    assert token.expires_at == claims["exp"]
    assert fake_google.tunnels == [f"{IAM_HOST}:443"]
    (generate,) = fake_google.seen
    assert generate.path == f"/v1/projects/-/serviceAccounts/{TARGET}:generateIdToken"
    assert generate.authorization == "Bearer ya29.caller-token"
    assert generate.body["audience"] == AUDIENCE
    assert generate.body["includeEmail"] is True


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_user_credentials_object_cannot_mint_id_tokens() -> None:
    """A gcloud user credentials object is refused with what to do instead, before any call."""
    credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        None,
        refresh_token="1//fake-refresh-token",
        token_uri=f"http://{DEAD}/token",
        client_id="client-id",
        client_secret="client-secret",
    )
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(credentials).fetch_id_token(AUDIENCE)
    assert "--impersonate-service-account" in caught.value.message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.message
    assert "1//fake-refresh-token" not in caught.value.message
    assert caught.value.retryable is False


@pytest.mark.usefixtures("no_outer_settings")
def test_adc_other_credentials_object_cannot_mint_id_tokens() -> None:
    """Credentials that cannot mint ID tokens are refused, naming their class and the options."""
    anonymous = google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(anonymous).fetch_id_token(AUDIENCE)
    message = caught.value.message
    assert message.startswith("AnonymousCredentials cannot mint ID tokens: ")
    assert "IDTokenCredentials" in message and "impersonated" in message and "key file" in message
