"""Odd input at the edges: bad URLs and headers, broken requests to the emulator, bad CLI values."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from s2sauth._errors import ConfigurationError
from s2sauth._http import HTTPRequest, HTTPTransport, TransportError
from s2sauth.cli import main
from s2sauth.emulator import Emulator

SECRET = "s3cret-\u20ac-value"


def exchange(emulator: Emulator, data: bytes) -> bytes:
    """Send raw bytes to the emulator and read until it closes the connection."""
    host, port = emulator.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        with sock.makefile("rb") as stream:
            return stream.read()


@pytest.fixture
def env(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the CLI at the emulator, with no ADC around."""
    monkeypatch.setenv("GCE_METADATA_HOST", emulator.host)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))


@pytest.mark.parametrize(
    "url", ["http://[x/", "http://127.0.0.1:99999/", "http://127.0.0.1:port/", "http://a..b/"]
)
def test_transport_bad_url_is_transport_error(url: str) -> None:
    """A URL urlsplit or the IDNA codec refuses is a TransportError naming it."""
    with pytest.raises(TransportError, match="^bad URL ") as caught:
        HTTPTransport()(HTTPRequest("GET", url))
    assert repr(url) in str(caught.value)


def test_transport_unencodable_request_is_transport_error(emulator: Emulator) -> None:
    """A non-ASCII path or non-latin-1 header is a TransportError; the value is not quoted."""
    transport = HTTPTransport()
    assert transport(HTTPRequest("GET", emulator.jwks_url)).status == 200  # pools a connection
    with pytest.raises(TransportError, match="must be ASCII/latin-1") as caught:
        transport(HTTPRequest("GET", emulator.jwks_url, {"X-Note": SECRET}))
    assert SECRET not in str(caught.value) and "\u20ac" not in str(caught.value)
    with pytest.raises(TransportError, match="must be ASCII/latin-1"):
        transport(HTTPRequest("GET", emulator.url + "/caf\u00e9"))
    assert transport(HTTPRequest("GET", emulator.jwks_url)).status == 200
    assert emulator.counters["jwks"] == 2  # nothing unencodable was sent, nor retried
    transport.close()


@pytest.mark.parametrize(
    "data",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\nab",
        b"GET http://[x/computeMetadata/v1/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["unicode-digit-content-length", "bad-ipv6-target"],
)
def test_emulator_refuses_broken_request_with_400(emulator: Emulator, data: bytes) -> None:
    """A Content-Length like '²' or an unparsable target gets a flavoured 400; serving goes on."""
    head = exchange(emulator, data).split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 400")
    assert "metadata-flavor: google" in head
    after = exchange(emulator, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert after.startswith(b"HTTP/1.1 200")


def test_emulator_empty_host_is_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An empty host (every interface) is refused, by the class and by the CLI in one line."""
    with pytest.raises(ConfigurationError, match="host must be an address"):
        Emulator(host="")
    assert main(["emulator", "--host", "", "--port", "0"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "s2sauth emulator: host must be an address such as 127.0.0.1"
    ]


@pytest.mark.parametrize("timeout", ["nan", "inf"])
def test_call_non_finite_timeout_exits_2(timeout: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``call --timeout nan|inf`` is a usage error: exit 2, one line, no traceback."""
    assert main(["call", "http://127.0.0.1:9/", "--timeout", timeout]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["s2sauth call: --timeout must be a positive number of seconds"]


def test_call_non_latin1_header_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A ``-H`` value that cannot be sent as latin-1 is malformed: exit 2, value not echoed."""
    assert main(["call", "http://127.0.0.1:9/", "-H", f"X-Note: {SECRET}"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["s2sauth call: header #1 is malformed: use -H 'Name: value'"]


@pytest.mark.usefixtures("env")
def test_call_non_ascii_path_is_one_line(
    emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """``call`` to a non-ASCII path fails with exit 1 and one line naming the problem."""
    assert main(["call", emulator.url + "/caf\u00e9"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert "must be ASCII/latin-1" in captured.err and "Traceback" not in captured.err
