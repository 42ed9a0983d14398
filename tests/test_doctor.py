"""``s2sauth doctor``: identity, the default-account warning, minting and keys."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support import PROBED_ENVIRONMENT, status_serving

from s2sauth._doctor import (
    Finding,
    Identity,
    Status,
    check_keys,
    check_service_account,
    diagnose,
    find_identity,
    mint_token,
)
from s2sauth._http import HTTPRequest, HTTPResponse, HTTPTransport, TransportError
from s2sauth.cli import main
from s2sauth.cli._serve import bind
from s2sauth.emulator import Emulator
from s2sauth.tokens._tokens import IDToken
from s2sauth.verify.keys import KeySet

AUDIENCE = "https://svc.example"

CALLER = "caller@demo-project.iam.gserviceaccount.com"
COMPUTE_DEFAULT = "123456789012-compute@developer.gserviceaccount.com"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No metadata override, no ADC, and a HOME without gcloud credentials."""
    for name in PROBED_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused at once."""
    with bind() as sock:
        yield sock.getsockname()[1]


@pytest.fixture
def transport() -> Iterator[HTTPTransport]:
    """A connection pool for direct calls to the doctor's checks, closed afterwards."""
    pool = HTTPTransport()
    yield pool
    pool.close()


def _lines(output: str) -> dict[str, str]:
    """The status of each check, by check name."""
    found = re.findall(r"^(OK|WARN|FAIL)\s+(\S+(?: \S+)?)\s{2,}", output, re.MULTILINE)
    return {check: status for status, check in found}


def test_doctor_ok_against_the_emulator(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the emulator's environment, every check is OK and the claims are shown."""
    with Emulator([CALLER]) as em:
        for name, value in em.environ().items():
            monkeypatch.setenv(name, value)
        status = main(["doctor", "--audience", "https://svc.example"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert _lines(out) == {
        "identity": "OK",
        "service account": "OK",
        "ID token": "OK",
        "keys endpoint": "OK",
        "verification": "OK",
    }
    assert CALLER in out and "project: demo-project" in out
    assert "aud: https://svc.example" in out and "email_verified: true" in out
    assert "1 usable key(s), max-age 3600 s" in out
    assert "eyJ" not in out  # the token itself is never printed


def test_doctor_warns_about_the_compute_default_account(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running as PROJECT_NUMBER-compute@developer... is a loud WARN with the fix, not a FAIL."""
    with Emulator([COMPUTE_DEFAULT]) as em:
        for name, value in em.environ().items():
            monkeypatch.setenv(name, value)
        status = main(["doctor"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert _lines(out)["service account"] == "WARN"
    assert f"WARNING: {COMPUTE_DEFAULT} is the Compute Engine default service account" in out
    assert "Editor role" in out
    assert "gcloud run services update SERVICE --service-account" in out
    assert "0 FAIL" in out


@pytest.mark.timeout(20)
def test_doctor_fails_with_advice_when_there_is_no_identity(
    dead_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No metadata server and no ADC: FAIL with what to do, exit 1, and no hanging."""
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{dead_port}")
    status = main(["doctor", "--certs-url", f"http://127.0.0.1:{dead_port}/certs"])
    out = capsys.readouterr().out
    assert status == 1
    assert _lines(out) == {"identity": "FAIL", "ID token": "FAIL", "keys endpoint": "FAIL"}
    assert "no metadata server answers and no Application Default Credentials" in out
    assert "fix: locally, run `s2sauth emulator`" in out
    assert "set by GCE_METADATA_HOST" in out


def test_doctor_fails_when_the_token_does_not_verify_with_the_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tokens from one issuer checked against another's keys: a FAIL that names the cause."""
    with Emulator([CALLER]) as issuer, Emulator([CALLER]) as other:
        monkeypatch.setenv("GCE_METADATA_HOST", issuer.host)
        status = main(["doctor", "--certs-url", other.jwks_url])
    out = capsys.readouterr().out
    assert status == 1
    assert _lines(out)["verification"] == "FAIL"
    assert "S2SAUTH_CERTS_URL" in out


@pytest.mark.parametrize(
    ("email", "status"),
    [
        pytest.param(COMPUTE_DEFAULT, Status.WARN, id="compute default"),
        pytest.param("1-compute@developer.gserviceaccount.com", Status.WARN, id="short number"),
        pytest.param(CALLER, Status.OK, id="dedicated"),
        pytest.param("x123-compute@developer.gserviceaccount.com", Status.OK, id="not a number"),
        pytest.param("123-compute@developer.gserviceaccount.com.evil", Status.OK, id="suffix"),
    ],
)
def test_service_account_check(email: str, status: Status) -> None:
    """Only PROJECT_NUMBER-compute@developer.gserviceaccount.com is the compute default."""
    assert check_service_account(email).status is status


def _write(path: Path, info: dict[str, str]) -> str:
    path.write_text(json.dumps(info), encoding="utf-8")
    return str(path)


def test_identity_from_a_service_account_key_file(
    dead_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: HTTPTransport
) -> None:
    """Off Google Cloud, GOOGLE_APPLICATION_CREDENTIALS names the identity: the key's email."""
    key = {"type": "service_account", "client_email": "svc@p.iam.gserviceaccount.com"}
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", _write(tmp_path / "key.json", key))
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{dead_port}")
    identity = find_identity(transport=transport)
    assert isinstance(identity, Identity)
    assert identity.email == "svc@p.iam.gserviceaccount.com"
    assert "key file" in identity.origin


def test_identity_from_gcloud_impersonation(
    dead_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: HTTPTransport
) -> None:
    """gcloud's ADC file with impersonation names the impersonated service account."""
    gcloud = tmp_path / ".config" / "gcloud"
    gcloud.mkdir(parents=True)
    url = (
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
        "runner@p.iam.gserviceaccount.com:generateAccessToken"
    )
    info = {"type": "impersonated_service_account", "service_account_impersonation_url": url}
    _write(gcloud / "application_default_credentials.json", info)
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{dead_port}")
    identity = find_identity(transport=transport)
    assert isinstance(identity, Identity)
    assert identity.email == "runner@p.iam.gserviceaccount.com"


@pytest.mark.parametrize("bound", [True, False], ids=["bound", "unbound"])
def test_identity_from_workload_identity_federation(
    dead_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    transport: HTTPTransport,
    bound: bool,
) -> None:
    """A federated config names the service account it is bound to, or says how to bind one."""
    info = {"type": "external_account", "audience": "//iam.googleapis.com/projects/1/x"}
    if bound:
        info["service_account_impersonation_url"] = (
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
            "deployer@p.iam.gserviceaccount.com:generateAccessToken"
        )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", _write(tmp_path / "wif.json", info))
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{dead_port}")
    identity = find_identity(transport=transport)
    if bound:
        assert isinstance(identity, Identity)
        assert identity.email == "deployer@p.iam.gserviceaccount.com"
        assert "Workload Identity Federation" in identity.origin
    else:
        assert not isinstance(identity, Identity)
        assert identity.status is Status.WARN
        assert identity.fix is not None and "--service-account=SA_EMAIL" in identity.fix


def test_user_credentials_cannot_mint(
    dead_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """gcloud user credentials are reported, with the impersonation fix; minting is a FAIL."""
    info = {"type": "authorized_user", "client_id": "x", "refresh_token": "y"}
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", _write(tmp_path / "adc.json", info))
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{dead_port}")
    monkeypatch.setenv("S2SAUTH_CERTS_URL", f"http://127.0.0.1:{dead_port}/certs")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert _lines(out)["identity"] == "WARN"
    assert "--impersonate-service-account SA_EMAIL" in out


def test_metadata_server_wins_over_adc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: HTTPTransport
) -> None:
    """When a metadata server answers, it is the identity (as DefaultSource does), noted."""
    key = {"type": "service_account", "client_email": "svc@p.iam.gserviceaccount.com"}
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", _write(tmp_path / "key.json", key))
    with Emulator([CALLER]) as em:
        monkeypatch.setenv("GCE_METADATA_HOST", em.host)
        identity = find_identity(transport=transport)
    assert isinstance(identity, Identity)
    assert identity.email == CALLER
    assert any("metadata server wins" in line for line in identity.details)


# -- what the checks do at their edges ----------------------------------------------------


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A HOME without gcloud credentials, so no real ADC file is ever found."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def dead_host() -> Iterator[str]:
    """``host:port`` of a loopback port bound but not listening: connections are refused."""
    with bind() as sock:
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def server(emulator: Emulator) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A plain HTTP server on loopback: (origin, requests seen as (method, body))."""
    with status_serving(json.dumps(emulator.jwks()).encode()) as served:
        yield served


class _FixedSource:
    """An ID-token source that hands out one given token (for mint_token's unit tests)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def fetch_id_token(self, audience: str) -> IDToken:
        return IDToken(self.token, time.time() + 3600)


def _write(path: Path, info: object) -> str:
    path.write_text(json.dumps(info), encoding="utf-8")
    return str(path)


# -- doctor: where the metadata server is looked for -----------------------------------------


def test_doctor_probes_gce_metadata_root_when_host_is_unset(
    emulator: Emulator, home: Path, transport: HTTPTransport
) -> None:
    """With only the legacy GCE_METADATA_ROOT set, the identity comes from the server it names."""
    identity = find_identity({"GCE_METADATA_ROOT": emulator.host}, transport=transport)
    assert isinstance(identity, Identity)
    assert identity.email == CALLER
    assert identity.origin == f"metadata server at {emulator.host}, set by GCE_METADATA_ROOT"


def test_doctor_does_not_probe_gce_metadata_ip(home: Path) -> None:
    """GCE_METADATA_IP alone is google-auth's ping address, not where tokens come from: the
    doctor probes the default address, as s2sauth's own calls would, and says why."""
    sent: list[HTTPRequest] = []

    def unreachable(request: HTTPRequest) -> HTTPResponse:
        sent.append(request)
        raise TransportError("connection refused")

    environ = {"GCE_METADATA_IP": "127.0.0.1:9", "HOME": str(home)}
    finding = find_identity(environ, transport=unreachable)
    assert [request.url for request in sent] == ["http://metadata.google.internal/"]
    assert isinstance(finding, Finding) and finding.status is Status.FAIL
    assert "set GCE_METADATA_HOST too" in finding.details[0]


def test_doctor_probes_the_host_the_library_calls_by_default(home: Path) -> None:
    """With no override, the probe goes where s2sauth's own calls go (metadata.google.internal),
    once, with a short timeout."""
    sent: list[HTTPRequest] = []

    def unreachable(request: HTTPRequest) -> HTTPResponse:
        sent.append(request)
        raise TransportError("connection refused")

    finding = find_identity({"HOME": str(home)}, transport=unreachable)
    assert [request.url for request in sent] == ["http://metadata.google.internal/"]
    assert sent[0].timeout == 1.0
    assert isinstance(finding, Finding) and finding.status is Status.FAIL
    assert "no metadata server answers" in finding.summary
    assert finding.details[0].startswith("tried the metadata server (the default address): ")


# -- doctor: a metadata server that answers, but not fully ---------------------------------


def test_doctor_fails_when_the_metadata_server_has_no_default_account(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """A metadata server that answers the ping but 404s the account email: FAIL with the fix."""
    emulator.inject("metadata", statuses=[200, 404])  # the ping, then the email
    finding = find_identity({"GCE_METADATA_HOST": emulator.host}, transport=transport)
    assert isinstance(finding, Finding)
    assert finding.status is Status.FAIL
    assert finding.summary == (
        f"the metadata server at {emulator.host}, set by GCE_METADATA_HOST answers but "
        "reports no default service account"
    )
    assert finding.fix is not None and "--service-account SA_EMAIL" in finding.fix


def test_doctor_fails_when_the_email_call_breaks_off(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """A connection lost while asking for the account email is a FAIL that says so."""

    def email_breaks(request: HTTPRequest) -> HTTPResponse:
        if request.url.endswith("/service-accounts/default/email"):
            raise TransportError("connection reset by peer")
        return transport(request)

    finding = find_identity({"GCE_METADATA_HOST": emulator.host}, transport=email_breaks)
    assert isinstance(finding, Finding)
    assert (finding.check, finding.status) == ("identity", Status.FAIL)
    assert "connection reset by peer" in finding.summary
    assert "no default service account" not in finding.summary


def test_doctor_identity_without_a_project(
    emulator_key: rsa.RSAPrivateKey, transport: HTTPTransport
) -> None:
    """A metadata server with an empty project id gives an identity with no 'project:' line."""
    with Emulator([CALLER], project_id="", signing_key=emulator_key) as em:
        identity = find_identity({"GCE_METADATA_HOST": em.host}, transport=transport)
    assert isinstance(identity, Identity)
    assert identity.email == CALLER
    assert identity.details == ()


# -- doctor: Application Default Credentials -----------------------------------------------


def test_doctor_reads_adc_from_cloudsdk_config(
    dead_host: str, home: Path, transport: HTTPTransport
) -> None:
    """CLOUDSDK_CONFIG moves gcloud's ADC file, and the doctor follows it there."""
    config = home / "elsewhere"
    config.mkdir()
    key = {"type": "service_account", "client_email": "svc@p.iam.gserviceaccount.com"}
    path = _write(config / "application_default_credentials.json", key)
    environ = {"GCE_METADATA_HOST": dead_host, "CLOUDSDK_CONFIG": str(config)}
    identity = find_identity(environ, transport=transport)
    assert isinstance(identity, Identity)
    assert identity.email == "svc@p.iam.gserviceaccount.com"
    assert identity.origin == f"service-account key file {path} (gcloud)"
    assert any("key files are long-lived secrets" in line for line in identity.details)


def test_doctor_reads_adc_from_appdata_on_windows(
    dead_host: str, home: Path, transport: HTTPTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Windows, gcloud's ADC file is looked for under %APPDATA%\\gcloud."""
    (home / "gcloud").mkdir()
    key = {"type": "service_account", "client_email": "win@p.iam.gserviceaccount.com"}
    _write(home / "gcloud" / "application_default_credentials.json", key)
    environ = {"GCE_METADATA_HOST": dead_host, "APPDATA": str(home)}
    with monkeypatch.context() as patched:
        patched.setattr(os, "name", "nt")
        identity = find_identity(environ, transport=transport)
    assert isinstance(identity, Identity)
    assert identity.email == "win@p.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        pytest.param(
            '{"type": "service_account", "private_key": "SECRET', "JSONDecodeError", id="not json"
        ),
        pytest.param(None, "FileNotFoundError", id="missing"),
    ],
)
def test_doctor_fails_on_an_unreadable_adc_file(
    content: str | None,
    error: str,
    dead_host: str,
    home: Path,
    transport: HTTPTransport,
) -> None:
    """An ADC file that cannot be read or parsed is a FAIL naming the file and error class only."""
    path = home / "adc.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    environ = {"GCE_METADATA_HOST": dead_host, "GOOGLE_APPLICATION_CREDENTIALS": str(path)}
    finding = find_identity(environ, transport=transport)
    assert isinstance(finding, Finding)
    assert finding.status is Status.FAIL
    assert finding.summary == (
        f"Application Default Credentials at {path} (GOOGLE_APPLICATION_CREDENTIALS) cannot "
        f"be read: {error}"
    )
    assert "SECRET" not in finding.summary  # the file's content is never quoted
    assert finding.fix is not None and "GOOGLE_APPLICATION_CREDENTIALS" in finding.fix


def test_doctor_warns_about_an_unsupported_adc_type(
    dead_host: str, home: Path, transport: HTTPTransport
) -> None:
    """ADC of a type s2sauth cannot mint ID tokens with (gdch) is a WARN naming it."""
    info = {"type": "gdch_service_account", "name": "svc"}
    path = _write(home / "adc.json", info)
    environ = {"GCE_METADATA_HOST": dead_host, "GOOGLE_APPLICATION_CREDENTIALS": path}
    finding = find_identity(environ, transport=transport)
    assert isinstance(finding, Finding)
    assert finding.status is Status.WARN
    assert "of type 'gdch_service_account'" in finding.summary
    assert finding.fix is not None and "impersonated service account" in finding.fix


def test_doctor_does_not_trust_an_impersonation_url_it_cannot_read(
    dead_host: str, home: Path, transport: HTTPTransport
) -> None:
    """Impersonated ADC whose URL names no service account is a WARN saying so, with the fix."""
    info = {
        "type": "impersonated_service_account",
        "service_account_impersonation_url": "https://iamcredentials.example/v1/elsewhere",
    }
    path = _write(home / "adc.json", info)
    environ = {"GCE_METADATA_HOST": dead_host, "GOOGLE_APPLICATION_CREDENTIALS": path}
    finding = find_identity(environ, transport=transport)
    assert isinstance(finding, Finding)
    assert finding.status is Status.WARN
    assert "name no service account" in finding.summary
    assert finding.fix is not None and "--impersonate-service-account" in finding.fix


# -- doctor: minting -----------------------------------------------------------------------


def test_doctor_mint_failure_is_a_fail_with_the_reason(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """When the metadata server refuses the identity call, minting is a FAIL quoting why."""
    identity = find_identity({"GCE_METADATA_HOST": emulator.host}, transport=transport)
    assert isinstance(identity, Identity)
    emulator.inject("metadata", statuses=[403])
    finding, token = mint_token(identity, AUDIENCE)
    assert token is None
    assert finding.status is Status.FAIL
    assert finding.summary.startswith(f"cannot mint one for {AUDIENCE}: ")
    assert "HTTP 403" in finding.summary
    assert finding.fix is not None and "serviceAccountOpenIdTokenCreator" in finding.fix


def test_doctor_warns_when_the_token_has_no_email(emulator: Emulator) -> None:
    """A token minted without format=full is a WARN: an email allow-list would reject it."""
    minted = emulator.mint(AUDIENCE, full=False)
    identity = Identity(CALLER, "a test source", _FixedSource(minted))
    finding, token = mint_token(identity, AUDIENCE)
    assert token == minted
    assert finding.status is Status.WARN
    assert finding.summary.startswith(f"minted for {AUDIENCE}, expires in ")
    assert finding.summary.endswith(", but it has no email claim")
    assert finding.fix == "an email allow-list needs tokens minted with format=full"
    assert not any(line.startswith("email:") for line in finding.details)
    assert all(minted not in line for line in (finding.summary, *finding.details))


def test_doctor_shows_a_non_integer_time_claim_as_is(emulator: Emulator) -> None:
    """An iat that is not an integer is shown verbatim rather than as a date."""
    minted = emulator.mint(AUDIENCE, claims={"iat": 1700000000.5})
    identity = Identity(CALLER, "a test source", _FixedSource(minted))
    finding, _ = mint_token(identity, AUDIENCE)
    assert finding.status is Status.OK
    assert "iat: 1700000000.5" in finding.details
    assert any(line.startswith("exp: ") and line.endswith(" UTC") for line in finding.details)


# -- doctor: the keys endpoint -------------------------------------------------------------


def test_doctor_keys_endpoint_error_status(emulator: Emulator, transport: HTTPTransport) -> None:
    """A keys endpoint answering 503 is a FAIL quoting the status and its text; no fetch follows."""
    emulator.inject("certs", statuses=[503])
    keyset = KeySet(emulator.jwks_url, transport=transport)
    finding = check_keys(keyset, transport=transport)
    assert finding.status is Status.FAIL
    assert finding.summary == f"{emulator.jwks_url} answered HTTP 503: injected fault: HTTP 503"
    assert finding.fix is not None and "S2SAUTH_CERTS_URL" in finding.fix
    assert keyset.stats.fetches == 0


def test_doctor_keys_endpoint_with_no_usable_key(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """A keys endpoint publishing an empty JWKS is a FAIL saying no usable key is published."""
    emulator.retire_key(emulator.kid)
    keyset = KeySet(emulator.jwks_url, transport=transport)
    finding = check_keys(keyset, transport=transport)
    assert finding.status is Status.FAIL
    assert finding.summary == (
        f"{emulator.jwks_url}: {emulator.jwks_url} published no usable verification key"
    )
    assert keyset.stats.keys == 0


def test_doctor_keys_endpoint_without_max_age(
    emulator: Emulator, server: tuple[str, list[Any]], transport: HTTPTransport
) -> None:
    """Keys served with no Cache-Control are OK, and the report says they are refetched often."""
    url = server[0] + "/jwks"
    finding = check_keys(KeySet(url, transport=transport), transport=transport)
    assert finding.status is Status.OK
    assert finding.summary == (
        f"{url}: 1 usable key(s), no max-age, so keys are refetched every few minutes"
    )
    assert finding.details == (f"kid: {emulator.kid}",)


# -- doctor: diagnose as a whole -----------------------------------------------------------


def test_diagnose_sends_every_call_through_the_given_transport(
    emulator: Emulator, transport: HTTPTransport
) -> None:
    """diagnose(transport=...) makes its metadata, minting and keys calls through that transport."""
    paths: list[str] = []

    def recording(request: HTTPRequest) -> HTTPResponse:
        paths.append(request.url.removeprefix(emulator.url).partition("?")[0])
        return transport(request)

    findings = diagnose(AUDIENCE, environ=emulator.environ(), transport=recording)
    assert [f.status for f in findings] == [Status.OK] * 5
    account = "/computeMetadata/v1/instance/service-accounts/default"
    assert paths[:3] == ["/", f"{account}/email", "/computeMetadata/v1/project/project-id"]
    assert f"{account}/identity" in paths
    assert paths.count("/oauth2/v3/certs") == 2  # the raw look at the headers, then the key set


def test_doctor_bad_certs_url(
    dead_host: str,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A keys URL that is not http(s) is a keys-endpoint FAIL naming it and the fix; exit 1."""
    for name in PROBED_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GCE_METADATA_HOST", dead_host)
    assert main(["doctor", "--certs-url", "ftp://keys.example/certs"]) == 1
    out = capsys.readouterr().out
    assert (
        "FAIL  keys endpoint     certs_url must be an http(s) URL of a key set, not "
        "'ftp://keys.example/certs'" in out
    )
    assert "fix: pass --certs-url or set $S2SAUTH_CERTS_URL to an http(s) URL" in out
    assert "verification" not in out
    assert out.rstrip().endswith("0 OK, 0 WARN, 3 FAIL")
