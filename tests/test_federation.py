"""Workload Identity Federation (``external_account`` ADC) against loopback STS and IAM fakes.

The subject token comes from a file (as AWS or a CI system writes it) or from a URL (as
GitHub Actions serves it); the fake STS exchanges it for a federated access token, and the
fake IAM Credentials API mints the bound service account's tokens for that federated token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt
from support import (
    IAM_HOST,
    IAM_PATH,
    JWT_TOKEN_TYPE,
    POOL_AUDIENCE,
    PROXY_VARS,
    FakeGoogle,
    ToFake,
    serving,
    throwaway_tls,
)

from s2sauth import TokenFetchError
from s2sauth.tokens.provider import AccessTokenProvider, IDTokenProvider
from s2sauth.tokens.sources import ADCSource

AUDIENCE = "https://callee-xyz.a.run.app"
TARGET = "deployer@demo-project.iam.gserviceaccount.com"
#: What GitHub Actions or AWS would hand the workload: a JWT-shaped subject token.
SUBJECT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOm9jdG8vYXBwIn0.c2lnbmF0dXJlLW9mLWdpdGh1Yg"
#: The bearer token GitHub Actions gives a job to ask for its OIDC token.
REQUEST_TOKEN = "gha-request-token"


@dataclass(frozen=True)
class Federation:
    """A Workload Identity Federation config file, and the fake Google behind it."""

    path: Path
    info: dict[str, Any]
    google: FakeGoogle

    def rewrite(self, **changes: Any) -> Path:
        """The config with ``changes`` applied (a None value drops the key), written anew."""
        info = {key: value for key, value in (self.info | changes).items() if value is not None}
        self.path.write_text(json.dumps(info))
        return self.path


@pytest.fixture
def github_oidc() -> Iterator[str]:
    """GitHub Actions' ID-token endpoint on loopback; yields its request URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {REQUEST_TOKEN}":
                self.send_error(401)
                return
            data = json.dumps({"count": 1, "value": SUBJECT_TOKEN}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as origin:
        yield f"{origin}/token?audience=https://iam.googleapis.com/{POOL_AUDIENCE[2:]}"


@pytest.fixture(params=["file", "url"])
def federation(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    emulator_key: rsa.RSAPrivateKey,
) -> Iterator[Federation]:
    """A federated config as `gcloud iam workload-identity-pools create-cred-config` writes it.

    The subject token is file-sourced (AWS, CI systems) or URL-sourced (GitHub Actions).
    """
    credential_source: dict[str, Any]
    if request.param == "file":
        subject = tmp_path / "oidc-token"
        subject.write_text(SUBJECT_TOKEN)
        credential_source = {"file": str(subject)}
    else:
        credential_source = {
            "url": request.getfixturevalue("github_oidc"),
            "headers": {"Authorization": f"Bearer {REQUEST_TOKEN}"},
            "format": {"type": "json", "subject_token_field_name": "value"},
        }
    # google-auth posts generateIdToken with its own `requests` session, so the fake also
    # stands in as the HTTPS proxy in front of the IAM host (as in test_google_auth_interop);
    # the STS and the GitHub endpoint are plain http on 127.0.0.1, reached directly.
    for name in (*PROXY_VARS, "CURL_CA_BUNDLE", "GOOGLE_API_USE_CLIENT_CERTIFICATE"):
        monkeypatch.delenv(name, raising=False)
    with FakeGoogle(emulator_key) as google:
        google.subject_token = SUBJECT_TOKEN
        for name in ("HTTPS_PROXY", "https_proxy"):
            monkeypatch.setenv(name, google.origin)
        tls = throwaway_tls(tmp_path, [IAM_HOST])
        google.tls = tls.server
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
        info = {
            "universe_domain": "googleapis.com",
            "type": "external_account",
            "audience": POOL_AUDIENCE,
            "subject_token_type": JWT_TOKEN_TYPE,
            "token_url": f"{google.origin}/v1/token",
            "service_account_impersonation_url": (
                f"https://{IAM_HOST}{IAM_PATH}{TARGET}:generateAccessToken"
            ),
            "credential_source": credential_source,
        }
        path = tmp_path / "gha-creds.json"
        path.write_text(json.dumps(info))
        yield Federation(path, info, google)


def test_federated_id_token(federation: Federation) -> None:
    """The bound service account's ID token: one STS exchange, then generateIdToken with it."""
    google = federation.google
    provider = IDTokenProvider(ADCSource(federation.path, request=ToFake(google.origin)))
    token = provider.token(AUDIENCE)
    claims = jwt.decode(token, certs=google.public_pem, audience=AUDIENCE)  # type: ignore[no-untyped-call]
    assert claims["aud"] == AUDIENCE
    assert claims["email"] == TARGET
    assert google.paths == ["/v1/token", f"{IAM_PATH}{TARGET}:generateIdToken"]
    (exchange,) = google.exchanges
    assert exchange.body["subject_token"] == SUBJECT_TOKEN
    generate = google.seen[1]
    # The federated token itself calls generateIdToken; no service-account access token.
    assert generate.authorization == f"Bearer {google.issued[0]}" == "Bearer ya29.fake-federated"
    assert generate.body["audience"] == AUDIENCE
    assert generate.body["includeEmail"] is True
    assert google.tunnels == [f"{IAM_HOST}:443"]  # requests' generateIdToken, nothing else
    assert provider.token(AUDIENCE) == token  # cached: nothing more sent
    assert len(google.seen) == 2


def test_federated_id_token_exchanges_once_per_fetch(federation: Federation) -> None:
    """Each fetch (one per audience through the provider) makes one STS exchange."""
    google = federation.google
    provider = IDTokenProvider(ADCSource(federation.path, request=ToFake(google.origin)))
    for audience in (AUDIENCE, "https://other-xyz.a.run.app", AUDIENCE):
        provider.token(audience)
    assert len(google.exchanges) == 2
    minted = [seen.body["audience"] for seen in google.seen if seen.path.endswith("IdToken")]
    assert minted == [AUDIENCE, "https://other-xyz.a.run.app"]


def test_federated_access_token(federation: Federation) -> None:
    """Access tokens: google-auth's own exchange, then generateAccessToken, cached per scope."""
    google = federation.google
    provider = AccessTokenProvider(ADCSource(federation.path, request=ToFake(google.origin)))
    token = provider.token(["scope-a"])
    assert google.paths == ["/v1/token", f"{IAM_PATH}{TARGET}:generateAccessToken"]
    generate = google.seen[1]
    assert generate.authorization == "Bearer ya29.fake-federated"
    assert generate.body["scope"] == ["scope-a"]
    assert token == google.issued[1]
    assert provider.token("scope-a") == token
    assert len(google.exchanges) == 1
    # No project-ID lookup at Cloud Resource Manager (load_credentials_from_dict makes one).
    assert google.tunnels == []


@pytest.mark.parametrize("kind", ["id", "access"])
def test_sts_refusal(federation: Federation, kind: str) -> None:
    """An STS refusal is a TokenFetchError with its reason and no token text in it."""
    google = federation.google
    google.subject_token = "eyJ.a-different-token.sig"
    source = ADCSource(federation.path, request=ToFake(google.origin))
    with pytest.raises(TokenFetchError) as caught:
        if kind == "id":
            source.fetch_id_token(AUDIENCE)
        else:
            source.fetch_access_token(["scope-a"])
    message = str(caught.value)
    assert "invalid_grant" in message and "Invalid subject_token" in message
    assert SUBJECT_TOKEN not in message
    assert SUBJECT_TOKEN.split(".")[1] not in message
    assert caught.value.retryable is False
    assert google.paths == ["/v1/token"]


def test_without_impersonation_no_id_token(federation: Federation) -> None:
    """A config bound to no service account cannot mint ID tokens, and says how to bind one."""
    path = federation.rewrite(service_account_impersonation_url=None)
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(path).fetch_id_token(AUDIENCE)
    message = str(caught.value)
    assert "service_account_impersonation_url" in message
    assert "create-cred-config" in message and "--service-account=" in message
    assert str(path) in message
    assert federation.google.seen == []


def test_workforce_user_no_id_token(federation: Federation) -> None:
    """A workforce sign-in (external_account_authorized_user) is a person: told to impersonate."""
    path = federation.rewrite(
        type="external_account_authorized_user",
        audience="//iam.googleapis.com/locations/global/workforcePools/pool/providers/idp",
        refresh_token="refresh",
        token_url=f"{federation.google.origin}/v1/oauthtoken",
        token_info_url=f"{federation.google.origin}/v1/introspect",
        client_id="client",
        client_secret="secret",
        subject_token_type=None,
        credential_source=None,
        service_account_impersonation_url=None,
    )
    with pytest.raises(TokenFetchError) as caught:
        ADCSource(path).fetch_id_token(AUDIENCE)
    assert "--impersonate-service-account" in str(caught.value)
    assert federation.google.seen == []


def test_cli_token_with_federated_adc(federation: Federation) -> None:
    """`s2sauth token AUD` with GOOGLE_APPLICATION_CREDENTIALS naming a federated config."""
    google = federation.google
    env = dict(os.environ, GOOGLE_APPLICATION_CREDENTIALS=str(federation.path))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "s2sauth", "token", AUDIENCE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, certs=google.public_pem, audience=AUDIENCE)  # type: ignore[no-untyped-call]
    assert claims["email"] == TARGET
    assert google.paths == ["/v1/token", f"{IAM_PATH}{TARGET}:generateIdToken"]
    assert token not in result.stderr
