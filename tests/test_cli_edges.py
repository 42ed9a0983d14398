"""Edges of the command line and the doctor: the paths the main CLI tests do not take."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support import PROBED_ENVIRONMENT, serving

import s2sauth.cli.emulator  # noqa: F401  (imported so a test can take it out of sys.modules)
from s2sauth import __version__
from s2sauth._doctor import (
    Finding,
    Identity,
    Status,
    check_keys,
    diagnose,
    find_identity,
    mint_token,
)
from s2sauth._http import HTTPRequest, HTTPResponse, HTTPTransport, TransportError
from s2sauth.cli import build_parser, main
from s2sauth.cli._serve import bind
from s2sauth.emulator import Emulator
from s2sauth.tokens._tokens import IDToken
from s2sauth.verify.keys import KeySet
from s2sauth.verify.verifier import Verifier

AUDIENCE = "https://svc.example"
CALLER = "caller@demo-project.iam.gserviceaccount.com"
STRANGER = "stranger@other-project.iam.gserviceaccount.com"


# -- fixtures and helpers ------------------------------------------------------------------


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
def transport() -> Iterator[HTTPTransport]:
    """A connection pool for direct calls to the doctor's checks, closed afterwards."""
    pool = HTTPTransport()
    yield pool
    pool.close()


class _Handler(BaseHTTPRequestHandler):
    """``/status/NNN`` answers NNN; ``/jwks`` serves ``document`` with no Cache-Control."""

    protocol_version = "HTTP/1.1"
    document: bytes
    seen: list[tuple[str, bytes]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append((self.command, self.rfile.read(length) if length else b""))
        if self.path.startswith("/status/"):
            status, reply = int(self.path.rsplit("/", 1)[1]), b"odd"
        else:
            status, reply = 200, self.document
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _serve


@pytest.fixture
def server(emulator: Emulator) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A plain HTTP server on loopback: (origin, requests seen as (method, body))."""
    seen: list[tuple[str, bytes]] = []
    attributes = {"document": json.dumps(emulator.jwks()).encode(), "seen": seen}
    with serving(type("Handler", (_Handler,), attributes)) as origin:
        yield origin, seen


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
    assert [request.url for request in sent] == ["http://169.254.169.254/"]
    assert isinstance(finding, Finding) and finding.status is Status.FAIL
    assert "set GCE_METADATA_HOST too" in finding.details[0]


def test_doctor_probes_the_link_local_address_by_default(home: Path) -> None:
    """With no override, the probe goes to 169.254.169.254 (no DNS), once, with a short timeout."""
    sent: list[HTTPRequest] = []

    def unreachable(request: HTTPRequest) -> HTTPResponse:
        sent.append(request)
        raise TransportError("connection refused")

    finding = find_identity({"HOME": str(home)}, transport=unreachable)
    assert [request.url for request in sent] == ["http://169.254.169.254/"]
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
    """ADC of a type s2sauth cannot mint with (workload identity federation) is a WARN naming it."""
    info = {"type": "external_account", "audience": "//iam.googleapis.com/x"}
    path = _write(home / "adc.json", info)
    environ = {"GCE_METADATA_HOST": dead_host, "GOOGLE_APPLICATION_CREDENTIALS": path}
    finding = find_identity(environ, transport=transport)
    assert isinstance(finding, Finding)
    assert finding.status is Status.WARN
    assert "of type 'external_account'" in finding.summary
    assert finding.fix == "use a service-account key file or an impersonated service account"


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


# -- s2sauth verify ------------------------------------------------------------------------


def test_verify_takes_the_keys_url_from_the_environment(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --certs-url, the keys come from $S2SAUTH_CERTS_URL (as the emulator prints it)."""
    monkeypatch.setenv("S2SAUTH_CERTS_URL", emulator.jwks_url)
    token = emulator.mint(AUDIENCE)
    assert main(["verify", token, "-a", AUDIENCE, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["caller"]["email"] == CALLER


def test_verify_leeway_accepts_a_recently_expired_token(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token expired 45 s ago is rejected with the default 30 s leeway but passes --leeway 60."""
    now = int(time.time())
    token = emulator.mint(AUDIENCE, claims={"iat": now - 3645, "exp": now - 45})
    argv = ["verify", token, "-a", AUDIENCE, "--certs-url", emulator.jwks_url]
    assert main(argv) == 1
    assert "rejected (401 expired)" in capsys.readouterr().err
    assert main([*argv, "--leeway", "60"]) == 0
    assert capsys.readouterr().out.startswith("valid token\n")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            ["--leeway", "61"], "leeway must be between 0 and 60 seconds, not 61.0", id="leeway"
        ),
        pytest.param(
            ["--certs-url", "ftp://keys.example/certs"],
            "certs_url must be an http(s) URL, not 'ftp://keys.example/certs'",
            id="certs url",
        ),
    ],
)
def test_verify_bad_options_exit_2(
    options: list[str], message: str, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad verifier option is a usage error: exit 2, one line on stderr, nothing on stdout."""
    token = emulator.mint(AUDIENCE)
    assert main(["verify", token, "-a", AUDIENCE, *options]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"s2sauth verify: {message}\n"


# -- s2sauth call --------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "exit_status"), [(299, 0), (599, 1)])
def test_call_status_without_a_reason_phrase(
    status: int,
    exit_status: int,
    emulator: Emulator,
    server: tuple[str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A status code with no standard phrase prints as 'HTTP NNN'; 2xx still exits 0."""
    monkeypatch.setenv("GCE_METADATA_HOST", emulator.host)
    assert main(["call", f"{server[0]}/status/{status}"]) == exit_status
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("odd", f"HTTP {status}\n")


def test_call_reads_the_body_from_stdin(
    emulator: Emulator,
    server: tuple[str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-d @- posts standard input's bytes unchanged."""
    monkeypatch.setenv("GCE_METADATA_HOST", emulator.host)
    body = b"\x00binary\xffbody\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    origin, seen = server
    assert main(["call", origin + "/in", "-d", "@-"]) == 0
    assert seen == [("POST", body)]


# -- the s2sauth command itself -----------------------------------------------------------


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`s2sauth` with no command prints the help, listing every command, to stderr; exit 2."""
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: s2sauth")
    for command in ("demo", "emulator", "token", "call", "verify", "doctor"):
        assert command in captured.err


def test_a_missing_command_module_is_left_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subcommand whose module is not installed is dropped; the other commands remain."""
    monkeypatch.setitem(sys.modules, "s2sauth.cli.demo", None)
    listed = re.findall(r"^    (\w+)  ", build_parser().format_help(), re.MULTILINE)
    assert listed == ["emulator", "token", "call", "verify", "doctor", "push"]
    with pytest.raises(SystemExit) as caught:
        main(["demo"])
    assert caught.value.code == 2
    assert "invalid choice: 'demo'" in capsys.readouterr().err


def test_a_command_with_a_broken_import_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """A subcommand whose own import fails raises that error instead of silently vanishing."""
    monkeypatch.delitem(sys.modules, "s2sauth.cli.emulator")
    monkeypatch.setitem(sys.modules, "s2sauth.emulator", None)
    with pytest.raises(ModuleNotFoundError) as caught:
        build_parser()
    assert caught.value.name == "s2sauth.emulator"


def test_python_dash_m_version() -> None:
    """`python -m s2sauth --version` prints the version and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "s2sauth", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, f"s2sauth {__version__}\n")


def test_python_dash_m_without_a_command() -> None:
    """`python -m s2sauth` alone exits 2 with the usage on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "s2sauth"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: s2sauth")


# -- s2sauth emulator ----------------------------------------------------------------------


def test_emulator_command_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that is taken exits 1 with one line, and the signal handlers are put back."""
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with bind() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"s2sauth emulator: the emulator cannot listen on 127.0.0.1:{port}"
    )
    assert captured.err.count("\n") == 1 and "Pick another --port" in captured.err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_emulator_command_bad_account(capsys: pytest.CaptureFixture[str]) -> None:
    """An --account that is not an email exits 1 before serving anything."""
    assert main(["emulator", "--port", "0", "--account", "not-an-email"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("s2sauth emulator: service account 'not-an-email' is not")


def _lines(stream: Iterator[str]) -> queue.Queue[str]:
    """The lines of ``stream`` as they come, then "" at its end, read on a thread."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


@dataclass(frozen=True)
class _Served:
    """What one run of `s2sauth emulator` printed, and whom its token named."""

    exports: dict[str, str]
    caller: str | None
    out: str
    err: str


def _serve_then_stop(extra: list[str], signum: signal.Signals) -> _Served:
    """Run `s2sauth emulator`, mint and verify a token with what it printed, then signal it."""
    command = [sys.executable, "-m", "s2sauth", "emulator", "--port", "0", *extra]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        lines = _lines(process.stdout)
        printed: list[str] = []
        try:
            while not printed or not printed[-1].startswith("# accounts: "):
                line = lines.get(timeout=60)
                assert line, f"the emulator stopped early: {printed}"
                printed.append(line.rstrip("\n"))
            exports = dict(
                shlex.split(text)[1].split("=", 1) for text in printed if text.startswith("export ")
            )
            identity = (
                f"http://{exports['GCE_METADATA_HOST']}/computeMetadata/v1/instance/"
                f"service-accounts/default/identity?audience={AUDIENCE}&format=full"
            )
            pool = HTTPTransport()
            try:
                reply = pool(HTTPRequest("GET", identity, {"Metadata-Flavor": "Google"}))
                assert reply.status == 200, reply.text
                verifier = Verifier(
                    AUDIENCE, certs_url=exports["S2SAUTH_CERTS_URL"], transport=pool
                )
                caller = verifier.verify(reply.text).email
            finally:
                pool.close()
        finally:
            process.send_signal(signum)
            _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return _Served(exports, caller, "\n".join(printed), err)


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child are POSIX")
def test_emulator_command_serves_until_ctrl_c() -> None:
    """`s2sauth emulator` prints exports that work, serves tokens that verify, and exits 0 on ^C."""
    served = _serve_then_stop([], signal.SIGINT)
    host = served.exports["GCE_METADATA_HOST"]
    assert host.startswith("127.0.0.1:") and host != "127.0.0.1:0"
    assert served.exports == {
        "GCE_METADATA_HOST": host,
        "GCE_METADATA_IP": host,
        "S2SAUTH_CERTS_URL": f"http://{host}/oauth2/v3/certs",
        "S2SAUTH_IAP_KEYS_URL": f"http://{host}/iap/verify/public_key-jwk",
    }
    assert served.caller == CALLER
    assert f"# PEM certs: http://{host}/oauth2/v1/certs" in served.out
    assert served.out.endswith(f"# accounts: {CALLER}, {STRANGER}")
    assert served.err == "s2sauth emulator: serving; press Ctrl-C to stop\n"


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child are POSIX")
def test_emulator_command_stops_cleanly_on_sigterm() -> None:
    """SIGTERM stops the emulator as cleanly as ^C; --account sets the default account."""
    worker = "worker@p.iam.gserviceaccount.com"
    served = _serve_then_stop(["--account", worker], signal.SIGTERM)
    assert served.caller == worker
    assert served.out.endswith(f"# accounts: {worker}")
    assert served.err == "s2sauth emulator: serving; press Ctrl-C to stop\n"
