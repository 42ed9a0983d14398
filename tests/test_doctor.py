"""``s2sauth doctor``: identity, the default-account warning, minting and keys."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import PROBED_ENVIRONMENT

from s2sauth._doctor import Identity, Status, check_service_account, find_identity
from s2sauth._http import HTTPTransport
from s2sauth.cli import main
from s2sauth.cli._serve import bind
from s2sauth.emulator import Emulator

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
