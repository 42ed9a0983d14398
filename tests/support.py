"""Helpers several test modules share: clocks, polling, throwaway certificates, servers on
loopback, and a fake of Google's token endpoint and IAM Credentials API.

Test modules import it as ``from support import ...``: pytest puts ``tests/`` on ``sys.path``
for ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import google.auth.transport
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from s2sauth.tokens.sources import UrllibRequest

#: The fixed instant injected clocks start at.
T0 = 1_700_000_000.0
IAM_HOST = "iamcredentials.googleapis.com"
IAM_PATH = "/v1/projects/-/serviceAccounts/"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
# google-auth refreshes user credentials at oauth2.googleapis.com whatever token_uri says.
GOOGLE_HOSTS = ("https://oauth2.googleapis.com", f"https://{IAM_HOST}")
#: The only refresh token the fake Google accepts.
REFRESH_TOKEN = "1//fake-refresh-token"
#: What an STS token exchange asks for and hands out (RFC 8693, Google's STS).
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: The workload identity provider a federated config names as its STS audience.
POOL_AUDIENCE = (
    "//iam.googleapis.com/projects/123456789/locations/global/"
    "workloadIdentityPools/github/providers/github"
)
#: Proxy settings a test clears so the outer environment cannot reroute its requests.
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")
#: What the doctor and the token sources read from the environment to find an identity and keys.
PROBED_ENVIRONMENT = (
    "GCE_METADATA_HOST",
    "GCE_METADATA_ROOT",
    "GCE_METADATA_IP",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUDSDK_CONFIG",
    "S2SAUTH_CERTS_URL",
)


class Clock:
    """An injected clock that moves only when told."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_for(condition: Callable[[], bool]) -> None:
    """Poll until ``condition()`` holds; the 10 s deadline only guards against a hang."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.002)


def b64int(value: int) -> str:
    """``value`` as a JWK integer: big-endian bytes, base64url without padding."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- certificates ---------------------------------------------------------------------------


def self_signed_pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    common_name: str = "test",
    *,
    hosts: Sequence[str] = (),
) -> str:
    """A self-signed CA certificate for ``key`` in PEM, valid for ``hosts`` (names or IPs)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class Tls:
    """A throwaway certificate: the CA file that trusts it, and a server context serving it."""

    ca: Path
    server: ssl.SSLContext

    def client(self) -> ssl.SSLContext:
        """A client context trusting this certificate and nothing else."""
        return ssl.create_default_context(cafile=str(self.ca))


def throwaway_tls(directory: Path, hosts: Sequence[str]) -> Tls:
    """Make a self-signed certificate for ``hosts``, writing its files into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = self_signed_pem(key, "s2sauth test", hosts=hosts)
    ca = directory / "ca.pem"
    ca.write_text(pem)
    chain = directory / "chain.pem"
    chain.write_text(_private_pem(key) + pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain)
    return Tls(ca, server)


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# --- servers on loopback --------------------------------------------------------------------


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port for the block; yields the origin."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class StatusHandler(BaseHTTPRequestHandler):
    """``/status/NNN`` answers NNN, ``/body/NAME`` one of :attr:`bodies`, anything else
    ``document`` (with no Cache-Control); each request is recorded in ``seen``."""

    protocol_version = "HTTP/1.1"
    document: bytes
    seen: list[tuple[str, bytes]]
    bodies = {"binary": b"\x89PNG\r\n\x00\xff", "line": b"one line\n", "utf8": "é".encode()}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append((self.command, self.rfile.read(length) if length else b""))
        if self.path.startswith("/status/"):
            status, reply = int(self.path.rsplit("/", 1)[1]), b"odd"
        elif self.path.startswith("/body/"):
            status, reply = 200, self.bodies[self.path.rsplit("/", 1)[1]]
        else:
            status, reply = 200, self.document
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _serve


@contextlib.contextmanager
def status_serving(document: bytes) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A :class:`StatusHandler` on loopback serving ``document``: (origin, requests seen)."""
    seen: list[tuple[str, bytes]] = []
    with serving(type("Handler", (StatusHandler,), {"document": document, "seen": seen})) as url:
        yield url, seen


# --- a fake Google ----------------------------------------------------------------------------


def service_account_info(key: rsa.RSAPrivateKey, email: str, token_uri: str) -> dict[str, Any]:
    """A service-account key file's content for ``email``, getting tokens from ``token_uri``."""
    return {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "test-key",
        "private_key": _private_pem(key),
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }


def google_error(code: int, message: str) -> dict[str, Any]:
    """An error body the way Google APIs write one."""
    status = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}[code]
    return {"error": {"code": code, "message": message, "status": status}}


@dataclass(frozen=True)
class Seen:
    """One request the fake Google received (a token request's body holds its grant's claims)."""

    path: str
    authorization: str | None
    body: Mapping[str, Any]


class FakeGoogle:
    """Google's OAuth token endpoint and IAM Credentials API on 127.0.0.1, trusting one key.

    It also answers CONNECT like an HTTPS proxy and, once ``tls`` is set, plays
    iamcredentials.googleapis.com inside the tunnel: google-auth posts generateIdToken
    with its own ``requests`` session, not through the transport it is given.

    Args:
        key: the service account's key: JWT grants must be signed with it, and the
            ID tokens handed out are.
        tls: the server context for tunnelled requests; without one CONNECT gets a 405.
        access_token: every access token handed out, instead of ones named after the grant.
    """

    def __init__(
        self,
        key: rsa.RSAPrivateKey,
        *,
        tls: ssl.SSLContext | None = None,
        access_token: str | None = None,
    ) -> None:
        self.signer = crypt.RSASigner.from_string(  # type: ignore[no-untyped-call]
            _private_pem(key), key_id="test-key"
        )
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.tls = tls
        self.access_token = access_token
        #: None leaves expires_in out of token replies.
        self.expires_in: int | None = 3599
        #: A status the IAM API refuses every call with, once set.
        self.iam_refusal: int | None = None
        self.seen: list[Seen] = []
        #: Access tokens handed out; the IAM API accepts only these as bearer tokens.
        self.issued: list[str] = []
        #: The host:port of each CONNECT.
        self.tunnels: list[str] = []
        #: The only subject token the STS exchanges (Workload Identity Federation).
        self.subject_token: str | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, body = owner.answer(self.path, self.headers.get("Authorization"), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_CONNECT(self) -> None:
                owner.tunnels.append(self.path)
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
        self.token_uri = f"{self.origin}/token"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def paths(self) -> list[str]:
        """The path of every request received, in order."""
        return [seen.path for seen in self.seen]

    @property
    def exchanges(self) -> list[Seen]:
        """The STS token exchanges received, in order."""
        return [seen for seen in self.seen if seen.body.get("grant_type") == TOKEN_EXCHANGE_GRANT]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeGoogle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def answer(
        self, path: str, authorization: str | None, raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        """The status and JSON body for a POST to ``path``."""
        if path.endswith("/token"):  # through a proxy, the path is the whole URL
            return self.token(path, authorization, raw)
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

    def token(self, path: str, authorization: str | None, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Answer the token endpoint: a refresh-token grant, or a JWT grant signed by the key."""
        form = {name: values[0] for name, values in parse_qs(raw.decode()).items()}
        if form.get("grant_type") == TOKEN_EXCHANGE_GRANT:
            return self.exchange(path, authorization, form)
        grant: dict[str, Any] = {}
        refusal = None
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") != REFRESH_TOKEN:
                refusal = "Bad Request"
        else:
            try:
                # google-auth signs every grant for Google's token endpoint, wherever it sends it.
                grant = jwt.decode(  # type: ignore[no-untyped-call]
                    form["assertion"], certs=self.public_pem, audience=GOOGLE_TOKEN_URI
                )
            except (KeyError, ValueError) as exc:
                refusal = str(exc)
        self.seen.append(Seen(path, authorization, form | grant))
        if refusal is not None:
            return 400, {"error": "invalid_grant", "error_description": refusal}
        if "target_audience" in grant:
            now = int(time.time())
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
        label = f"for-{grant['scope']}" if grant else "user"
        reply: dict[str, Any] = {"access_token": self.issue(label), "token_type": "Bearer"}
        if self.expires_in is not None:
            reply["expires_in"] = self.expires_in
        return 200, reply

    def exchange(
        self, path: str, authorization: str | None, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """Answer an STS token exchange: a federated access token for the one subject token."""
        self.seen.append(Seen(path, authorization, form))
        expected = {
            "audience": POOL_AUDIENCE,
            "subject_token_type": JWT_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "subject_token": self.subject_token,
        }
        for name, value in expected.items():
            if form.get(name) != value:
                # Echoes the subject token back, as a careless upstream might.
                reason = f"Invalid {name} {form.get(name)!r}"
                return 400, {"error": "invalid_grant", "error_description": reason}
        return 200, {
            "access_token": self.issue("federated"),
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": 3599,
        }

    def sign(self, claims: dict[str, Any]) -> str:
        """A JWT over ``claims``, signed with the key the fake trusts."""
        token: bytes = jwt.encode(self.signer, claims)  # type: ignore[no-untyped-call]
        return token.decode()

    def issue(self, label: str) -> str:
        """An access token shaped like Google's, remembered so the IAM API can check it."""
        if self.access_token is not None:
            token = self.access_token
        else:
            token = "ya29.fake-" + re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        self.issued.append(token)
        return token


class ToFake(UrllibRequest):
    """s2sauth's ADC transport, with Google's token and IAM Credentials hosts moved to a fake."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self.origin = origin

    def __call__(self, url: str, *args: Any, **kwargs: Any) -> google.auth.transport.Response:
        for host in GOOGLE_HOSTS:
            if url.startswith(f"{host}/"):
                url = self.origin + url.removeprefix(host)
        return super().__call__(url, *args, **kwargs)


# --- a counting HTTP server -------------------------------------------------------------------

#: The header every genuine metadata server reply carries.
FLAVOR = {"Metadata-Flavor": "Google"}
#: The audience of the ID tokens :func:`metadata_answer` hands out.
ANSWER_AUDIENCE = "https://callee-xyz.a.run.app"

Answer = tuple[int, Mapping[str, str], bytes]


def jwt_with_claims(claims: Mapping[str, Any]) -> str:
    """A JWT-shaped string with `claims` (the signature is junk: nobody here verifies it)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(dict(claims)).encode())}.{b64(b'signature')}"


def metadata_answer(path: str) -> Answer:
    """What a metadata server says to a ping or an identity call."""
    if path == "/":
        return 200, FLAVOR, b""
    return (
        200,
        FLAVOR,
        jwt_with_claims({"aud": ANSWER_AUDIENCE, "exp": int(time.time()) + 3600}).encode(),
    )


class CountingServer:
    """An HTTP server on 127.0.0.1 that counts connections opened and closed by clients.

    Args:
        answer: the status, headers and body for a GET of a path.
        protocol: ``HTTP/1.1`` keeps connections alive; ``HTTP/1.0`` closes after each
            reply without saying ``Connection: close``, as old servers do.
        tls: serve HTTPS with this context.
        barrier: every request waits here before its answer, to hold requests together.
    """

    def __init__(
        self,
        answer: Callable[[str], Answer] = metadata_answer,
        *,
        protocol: str = "HTTP/1.1",
        tls: ssl.SSLContext | None = None,
        barrier: threading.Barrier | None = None,
    ) -> None:
        self.opened = 0
        self.closed = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol
            timeout = 10  # a connection a test forgot cannot hold a thread for ever

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner.opened += 1

            def finish(self) -> None:
                super().finish()
                with owner._lock:
                    owner.closed += 1

            def do_GET(self) -> None:
                if barrier is not None:
                    barrier.wait(10)
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
