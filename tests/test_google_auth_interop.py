"""s2sauth and unmodified google-auth agree: same metadata server, same tokens, same ADC files."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google.auth.transport.requests
import google.oauth2.id_token
import google.oauth2.service_account
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt
from support import (
    IAM_HOST,
    IAM_PATH,
    PROXY_VARS,
    REFRESH_TOKEN,
    FakeGoogle,
    ToFake,
    service_account_info,
    throwaway_tls,
)

from s2sauth import TokenFetchError
from s2sauth.emulator import Emulator
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import ADCSource, MetadataServerSource

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
