"""The :class:`Emulator`: a metadata server and Google certs endpoint on loopback."""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import unquote

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .._errors import ConfigurationError
from ._keys import ECSigningKey, SigningKey, sign_compact
from ._server import LoopbackServer, Reply, Request

__all__ = ["Emulator", "FaultBody", "FaultTarget"]

#: Which endpoints :meth:`Emulator.inject` disturbs.
FaultTarget = Literal["metadata", "certs"]
#: What :meth:`Emulator.inject` puts in place of a successful body.
FaultBody = Literal["garbage", "empty", "html"]

_ISSUER = "https://accounts.google.com"
_METADATA_ROOT = "/computeMetadata/v1"
_JWKS_PATH = "/oauth2/v3/certs"
_PEM_CERTS_PATH = "/oauth2/v1/certs"
# Like https://www.gstatic.com/iap/verify/public_key-jwk, where IAP publishes its keys.
_IAP_JWKS_PATH = "/iap/verify/public_key-jwk"
_IAP_ISSUER = "https://cloud.google.com/iap"
_FLAVOR = ("Metadata-Flavor", "Google")
_TEXT = "application/text"  # what the real metadata server labels plain values with
_DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_ACCOUNT_LEAVES = ("aliases", "email", "identity", "scopes", "token")

_FAULT_BODIES: Mapping[str, tuple[bytes, str | None]] = {
    "garbage": (b"\x89\xfe<<garbage: neither JSON nor a JWT>>\x00{", None),
    "empty": (b"", None),
    "html": (
        b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
        b"<body><p>Sign in to the network to continue.</p></body></html>\n",
        "text/html; charset=utf-8",
    ),
}


class _Delete:
    def __repr__(self) -> str:
        return "Emulator.DELETE"


@dataclass
class _Faults:
    delay: float = 0.0
    statuses: deque[int] = field(default_factory=deque)
    body: str | None = None
    drop: int = 0
    omit_flavor: bool = False


@dataclass(frozen=True)
class _Decision:
    delay: float
    drop: bool
    status: int | None
    body: str | None
    omit_flavor: bool


def _text(status: int, text: str, content_type: str = _TEXT) -> Reply:
    return Reply(status, text.encode("utf-8"), (("Content-Type", content_type),))


def _json(value: object) -> Reply:
    body = json.dumps(value, separators=(",", ":")).encode("utf-8")
    return Reply(200, body, (("Content-Type", "application/json"),))


def _metadata_parts(path: str) -> list[str] | None:
    if path != _METADATA_ROOT and not path.startswith(_METADATA_ROOT + "/"):
        return None
    rest = path[len(_METADATA_ROOT) :].strip("/")
    return [unquote(part) for part in rest.split("/")] if rest else []


def _first(query: Mapping[str, list[str]], name: str, default: str = "") -> str:
    values = query.get(name)
    return values[0] if values else default


def _recursive(query: Mapping[str, list[str]]) -> bool:
    return _first(query, "recursive").lower() == "true"


def _endpoint(path: str, query: Mapping[str, list[str]]) -> str:
    if path == _JWKS_PATH:
        return "jwks"
    if path == _PEM_CERTS_PATH:
        return "pem_certs"
    if path == _IAP_JWKS_PATH:
        return "iap_jwks"
    if path == "/":
        return "ping"
    parts = _metadata_parts(path)
    if parts is None:
        return "other"
    if len(parts) == 4 and parts[:2] == ["instance", "service-accounts"]:
        if parts[3] in ("identity", "token", "email"):
            return parts[3]
    if parts in (["project", "project-id"], ["project", "numeric-project-id"]):
        return "project"
    if _recursive(query):
        return "recursive"
    return "ping" if not parts else "other"


class Emulator:
    """A local metadata server and Google certs endpoint, as a real HTTP server on loopback.

        Use it wherever code would talk to Google Cloud's metadata server or fetch
        Google's signing keys: tests, local development, the ``s2sauth demo``. It
        speaks the metadata protocol (``Metadata-Flavor`` required on requests and
        sent on every reply, 403 with ``X-Forwarded-For``, identity with
        ``audience``/``format``, ``email``, ``token``, ``recursive``, project ids),
        mints RS256 ID tokens shaped like Google's, publishes its keys as a JWKS
        (like ``/oauth2/v3/certs``) and as PEM certificates (like
        ``/oauth2/v1/certs``), mints ES256 assertions shaped like Identity-Aware
        Proxy's with their key set at ``/iap/verify/public_key-jwk``, and can rotate
        keys, shift its clock and inject faults.

        Keys are generated at construction; nothing listens until :meth:`start` (or
        ``with``). Unmodified google-auth works against it too, with one caveat:
        google-auth reads ``GCE_METADATA_HOST`` once, when
        ``google.auth.compute_engine`` is first imported, so set :meth:`environ`
        before that (for example in a child process).

        Each service account can also have a metadata server of its own, on a port
    of its own, where ``default`` is that account (:meth:`host_for`,
    ``environ(account=...)``): point each local service's ``GCE_METADATA_HOST`` at
    its own, and every service runs as its own identity, all verifiable with the
    one key set.

        Tokens are Google-shaped and carry no extra claims, and RS256 signatures are
        deterministic, so two tokens for the same account and audience minted in
        the same second are identical. Count fetches with :attr:`counters`, not tokens.

        Args:
            service_accounts: the instance's service-account emails; the first is ``default``.
            host: the address to listen on.
            port: the port to listen on; 0 picks a free one.
            project_id: the answer to ``project/project-id``.
            numeric_project_id: the answer to ``project/numeric-project-id`` (digits).
            cache_max_age: the ``max-age`` the certs endpoints send (also settable later).
            key_size: bits of each generated RSA key.
            signing_key: an existing RSA key to start with instead of generating one
                (tests share one to save the generation time); rotations still generate.
            region: the region ``instance/region`` and ``instance/zone`` name, as
                Cloud Run's metadata server does (``projects/NUMBER/regions/REGION``).

        Raises:
            ConfigurationError: an argument is invalid.
    """

    #: Claim or header value that makes :meth:`mint` leave that member out.
    DELETE: Final = _Delete()

    #: Endpoint names :attr:`counters` counts.
    ENDPOINTS: Final = (
        "ping",
        "identity",
        "token",
        "email",
        "project",
        "recursive",
        "jwks",
        "pem_certs",
        "iap_jwks",
        "other",
    )

    def __init__(
        self,
        service_accounts: Iterable[str] | str = ("caller@demo-project.iam.gserviceaccount.com",),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        project_id: str = "demo-project",
        numeric_project_id: str = "123456789012",
        cache_max_age: int = 3600,
        key_size: int = 2048,
        signing_key: rsa.RSAPrivateKey | None = None,
        region: str = "us-central1",
    ) -> None:
        accounts = (
            (service_accounts,) if isinstance(service_accounts, str) else tuple(service_accounts)
        )
        if not accounts:
            raise ConfigurationError("the emulator needs at least one service account email")
        for account in accounts:
            if not isinstance(account, str) or "@" not in account or "/" in account:
                raise ConfigurationError(
                    f"service account {account!r} is not an email like "
                    "'name@project.iam.gserviceaccount.com'"
                )
        if len({account.lower() for account in accounts}) != len(accounts):
            raise ConfigurationError("service account emails must be distinct")
        if not host:
            # An empty host would bind every interface and name no usable address.
            raise ConfigurationError("host must be an address such as 127.0.0.1")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an integer from 0 to 65535, not {port!r}")
        if not numeric_project_id.isdigit():
            raise ConfigurationError("numeric_project_id must be digits, like '123456789012'")
        if cache_max_age < 0:
            raise ConfigurationError("cache_max_age must be zero or more seconds")

        self.service_accounts: tuple[str, ...] = accounts
        self.project_id = project_id
        self.numeric_project_id = numeric_project_id
        self.region = region
        #: The answer to ``instance/id``: Cloud Run's are long hex strings.
        self.instance_id = "00" + secrets.token_hex(63)
        #: ``max-age`` seconds the certs endpoints send in ``Cache-Control``.
        self.cache_max_age = cache_max_age
        #: When above 0, the certs endpoints send ``Age: certs_age`` (as a CDN would).
        self.certs_age = 0
        #: Seconds added to the current time for the ``iat``/``exp`` of minted tokens.
        self.clock_offset = 0.0

        self._host = host
        self._port = port
        self._key_size = key_size
        self._lock = threading.Lock()
        self._current = (
            SigningKey(signing_key) if signing_key is not None else SigningKey.generate(key_size)
        )
        self._published: list[SigningKey] = [self._current]
        self._iap_key = ECSigningKey.generate()
        self._counters: Counter[str] = Counter()
        self._faults: dict[str, _Faults] = {"metadata": _Faults(), "certs": _Faults()}
        self._server: LoopbackServer | None = None
        # Metadata servers whose 'default' is another account, by account (see host_for).
        self._own_servers: dict[str, LoopbackServer] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start serving on a daemon thread; returns ``self``. Does nothing if already started.

        Raises:
            ConfigurationError: the address cannot be listened on (e.g. port in use).
        """
        if self._server is None:
            self._server = self._listen(self._port, self.default_account)
        return self

    def _listen(self, port: int, default: str) -> LoopbackServer:
        app = functools.partial(self._handle, default=default)
        try:
            server = LoopbackServer(self._host, port, app, default_headers=(_FLAVOR,))
        except OSError as exc:
            raise ConfigurationError(
                f"the emulator cannot listen on {self._host}:{port}: "
                f"{exc.strerror or exc}. Pick another --port (0 picks a free one)"
            ) from exc
        server.start()
        return server

    def stop(self) -> None:
        """Stop serving: close every connection, end injected delays, join the threads."""
        with self._lock:
            servers = [self._server, *self._own_servers.values()]
            self._server = None
            self._own_servers.clear()
        for server in servers:
            if server is not None:
                server.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<Emulator {where} accounts={list(self.service_accounts)}>"

    # -- addresses --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``host:port`` of the running server: the value for ``GCE_METADATA_HOST``.

        Raises:
            ConfigurationError: the emulator is not started.
        """
        if self._server is None:
            raise ConfigurationError(
                "the emulator is not started: call start() or use it in a 'with' block"
            )
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._server.port}"

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}"

    @property
    def jwks_url(self) -> str:
        """The JWKS endpoint, like ``https://www.googleapis.com/oauth2/v3/certs``."""
        return self.url + _JWKS_PATH

    @property
    def pem_certs_url(self) -> str:
        """The ``{kid: PEM certificate}`` endpoint, like Google's ``/oauth2/v1/certs``."""
        return self.url + _PEM_CERTS_PATH

    @property
    def iap_jwks_url(self) -> str:
        """IAP's key set, like ``https://www.gstatic.com/iap/verify/public_key-jwk``."""
        return self.url + _IAP_JWKS_PATH

    def host_for(self, account: str) -> str:
        """``host:port`` of a metadata server whose ``default`` is ``account``.

        Use it to give each local service an identity of its own: a service
        whose ``GCE_METADATA_HOST`` is ``host_for(email)`` gets ``email``'s
        tokens from ``default``, as a Cloud Run service gets its own service
        account's. The first account's is :attr:`host`; another's listens on a
        free port of the same address, started on the first call and stopped
        with the emulator. Tokens, keys, counters and faults are shared.

        Raises:
            ConfigurationError: the emulator is not started, or ``account`` is not one of
                :attr:`service_accounts`.
        """
        main = self.host
        found = self._resolve(account, self.default_account)
        if found is None or account.lower() == "default":
            raise ConfigurationError(
                f"{account!r} is not one of the emulator's service accounts "
                f"({', '.join(self.service_accounts)})"
            )
        if found == self.default_account:
            return main
        with self._lock:
            server = self._own_servers.get(found)
            if server is None:
                server = self._own_servers[found] = self._listen(0, found)
        return f"{main.rsplit(':', 1)[0]}:{server.port}"

    def environ(self, account: str | None = None) -> dict[str, str]:
        """The environment that points google-auth and s2sauth at this emulator.

        ``GCE_METADATA_HOST`` and ``GCE_METADATA_IP`` (google-auth pings the
        latter), ``S2SAUTH_CERTS_URL`` (the JWKS URL) and ``S2SAUTH_IAP_KEYS_URL``
        (IAP's key set).

        Args:
            account: run as this service account: the metadata server is
                :meth:`host_for` it (default: the first account's, :attr:`host`).

        Raises:
            ConfigurationError: as :meth:`host_for`.
        """
        metadata_host = self.host if account is None else self.host_for(account)
        return {
            "GCE_METADATA_HOST": metadata_host,
            "GCE_METADATA_IP": metadata_host,
            "S2SAUTH_CERTS_URL": self.jwks_url,
            "S2SAUTH_IAP_KEYS_URL": self.iap_jwks_url,
        }

    # -- identities and tokens --------------------------------------------------------------

    @property
    def default_account(self) -> str:
        """The email ``default`` stands for: the first service account."""
        return self.service_accounts[0]

    @staticmethod
    def subject(email: str) -> str:
        """The stable numeric ``sub`` of ``email``: 21 digits, like a Google unique ID."""
        digest = hashlib.sha256(email.lower().encode("utf-8")).digest()
        return "1" + str(int.from_bytes(digest[:16], "big") % 10**20).zfill(20)

    @property
    def kid(self) -> str:
        """The ``kid`` of the key that signs new tokens."""
        with self._lock:
            return self._current.kid

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        """The key that signs new tokens (for tests that forge tokens on purpose)."""
        with self._lock:
            return self._current.private_key

    @property
    def published_kids(self) -> tuple[str, ...]:
        """The kids the certs endpoints publish now, oldest first."""
        with self._lock:
            return tuple(key.kid for key in self._published)

    def mint(
        self,
        audience: str = "https://svc",
        *,
        account: str | None = None,
        full: bool = True,
        claims: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
        lifetime: int = 3600,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """A token shaped like the metadata server's, signed with the current key.

        Header ``{"alg": "RS256", "kid": kid, "typ": "JWT"}``; claims ``aud``,
        ``azp`` and ``sub`` (the account's :meth:`subject`), ``iss``
        ``https://accounts.google.com``, ``iat`` now (plus :attr:`clock_offset`)
        and ``exp = iat + lifetime``, and with ``full`` ``email`` and
        ``email_verified: true``. Use it to make tokens directly, including bad ones.

        Args:
            audience: the ``aud`` claim.
            account: whose token; any email (default: :attr:`default_account`).
            full: include ``email`` and ``email_verified`` (``format=full``).
            claims: claims to add or replace; a value of :attr:`DELETE` removes
                the claim (``None`` is kept, as JSON ``null``). An integer ``exp``
                without ``iat`` moves ``iat`` to ``exp - lifetime`` (not before 1970),
                so ``claims={"exp": 0}`` makes an expired token.
            header: header members to add or replace, :attr:`DELETE` likewise.
            lifetime: seconds from ``iat`` to ``exp``.
            key: sign with this key instead (the ``kid`` stays unless ``header`` changes it).
        """
        with self._lock:
            signing = self._current
        email = account if account is not None else self.default_account
        subject = self.subject(email)
        now = int(time.time() + self.clock_offset)
        payload: dict[str, Any] = {"aud": audience, "azp": subject}
        if full:
            payload.update(email=email, email_verified=True)
        payload.update(exp=now + lifetime, iat=now, iss=_ISSUER, sub=subject)
        given = claims or {}
        if _is_time(given.get("exp")) and "iat" not in given:
            # A token that expires at exp was issued lifetime before it (never before
            # 1970): claims={"exp": 0} is an expired token, not one issued after it expired.
            payload["iat"] = max(0, given["exp"] - lifetime)
        jose: dict[str, Any] = {"alg": "RS256", "kid": signing.kid, "typ": "JWT"}
        _apply(payload, claims)
        _apply(jose, header)
        return sign_compact(jose, payload, key if key is not None else signing.private_key)

    @property
    def iap_kid(self) -> str:
        """The ``kid`` of the P-256 key that signs IAP assertions."""
        return self._iap_key.kid

    @property
    def iap_private_key(self) -> ec.EllipticCurvePrivateKey:
        """The P-256 key that signs IAP assertions (for tests that forge them on purpose)."""
        return self._iap_key.private_key

    def iap_jwks(self) -> dict[str, Any]:
        """The key set the IAP keys endpoint serves."""
        return {"keys": [dict(self._iap_key.jwk)]}

    def mint_iap(
        self,
        audience: str = "/projects/123456789012/global/backendServices/1234567890",
        *,
        email: str = "user@example.com",
        hd: str | None = None,
        claims: Mapping[str, Any] | None = None,
        header: Mapping[str, Any] | None = None,
        lifetime: int = 600,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    ) -> str:
        """An assertion shaped like the ``x-goog-iap-jwt-assertion`` Identity-Aware Proxy adds.

        Header ``{"alg": "ES256", "kid": iap_kid, "typ": "JWT"}``; claims ``aud``,
        ``email``, ``sub`` (``accounts.google.com:`` and the email's :meth:`subject`),
        ``iss`` ``https://cloud.google.com/iap``, ``iat`` now (plus
        :attr:`clock_offset`), ``exp = iat + lifetime`` (IAP's are ten minutes) and,
        for a Google Workspace account, ``hd``. Signed ES256 with the IAP key, the
        signature written as JWS wants it (``r || s``, 64 bytes).

        Args:
            audience: the ``aud`` claim: ``/projects/NUMBER/global/backendServices/ID``
                or ``/projects/NUMBER/apps/PROJECT_ID``.
            email: the person's email.
            hd: the person's Workspace domain, or ``None`` for a consumer account.
            claims: claims to add or replace; :attr:`DELETE` removes one.
            header: header members to add or replace, :attr:`DELETE` likewise.
            lifetime: seconds from ``iat`` to ``exp``.
            key: sign with this key instead (any P-256 or RSA key, for forgeries).
        """
        now = int(time.time() + self.clock_offset)
        payload: dict[str, Any] = {
            "aud": audience,
            "email": email,
            "exp": now + lifetime,
            "iat": now,
            "iss": _IAP_ISSUER,
            "sub": "accounts.google.com:" + self.subject(email),
        }
        if hd is not None:
            payload["hd"] = hd
        jose: dict[str, Any] = {"alg": "ES256", "kid": self._iap_key.kid, "typ": "JWT"}
        _apply(payload, claims)
        _apply(jose, header)
        return sign_compact(jose, payload, key if key is not None else self._iap_key.private_key)

    def sign_raw(
        self, header: bytes | str, payload: bytes | str, *, key: rsa.RSAPrivateKey | None = None
    ) -> str:
        """Sign exact header and payload JSON texts (duplicate members, BOMs, NaN...).

        For tests of a verifier's parser: the two texts are base64url-encoded as
        given and signed RS256 with the current key (or ``key``).
        """
        return sign_compact(header, payload, key if key is not None else self.private_key)

    # -- keys -------------------------------------------------------------------------------

    def rotate_keys(self, *, keep_old: bool = True) -> str:
        """Sign with a new key from now on; returns its ``kid``.

        The previous signing key stays published until the next rotation (or
        :meth:`retire_key`) unless ``keep_old`` is false; older keys are retired.
        """
        new = SigningKey.generate(self._key_size)
        with self._lock:
            keep = [self._current] if keep_old and self._current in self._published else []
            self._published = [*keep, new]
            self._current = new
        return new.kid

    def retire_key(self, kid: str) -> None:
        """Stop publishing the key ``kid``.

        Retiring the current key leaves new tokens signed with a ``kid`` nobody
        publishes until :meth:`rotate_keys`: the unknown-key case.

        Raises:
            ConfigurationError: no published key has that ``kid``.
        """
        with self._lock:
            remaining = [key for key in self._published if key.kid != kid]
            if len(remaining) == len(self._published):
                raise ConfigurationError(f"no published key has kid {kid!r}")
            self._published = remaining

    def jwks(self) -> dict[str, Any]:
        """The JWKS document the ``/oauth2/v3/certs`` endpoint serves."""
        with self._lock:
            return {"keys": [dict(key.jwk) for key in self._published]}

    def pem_certs(self) -> dict[str, str]:
        """The ``{kid: PEM certificate}`` document the ``/oauth2/v1/certs`` endpoint serves."""
        with self._lock:
            return {key.kid: key.pem_certificate for key in self._published}

    # -- counters and faults ----------------------------------------------------------------

    @property
    def counters(self) -> Counter[str]:
        """Requests received so far per endpoint (a snapshot); see :attr:`ENDPOINTS`."""
        with self._lock:
            return Counter(self._counters)

    def reset_counters(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            self._counters.clear()

    def inject(
        self,
        target: FaultTarget = "metadata",
        *,
        delay: float | None = None,
        statuses: Iterable[int] = (),
        body: FaultBody | None = None,
        drop: int = 0,
        omit_flavor: bool = False,
    ) -> None:
        """Make the ``metadata`` or ``certs`` endpoints misbehave, until :meth:`clear_faults`.

        Calls accumulate: a later ``delay`` or ``body`` replaces the earlier one,
        ``statuses`` queue up behind earlier ones, ``drop`` counts add up, and
        ``omit_flavor`` stays on once set. Per request, the order is: wait
        ``delay``, then drop, then an injected status, then the real answer with
        its body replaced.

        Args:
            target: which endpoints.
            delay: seconds to wait before every reply.
            statuses: one per request, in order: reply with that status and a short text.
            body: replace the body of every 200: ``"garbage"`` (bytes that are
                neither JSON nor a JWT), ``"empty"``, or ``"html"`` (a captive portal page).
            drop: close the connection without a reply, for the next ``drop`` requests.
            omit_flavor: leave ``Metadata-Flavor`` off metadata replies.

        Raises:
            ConfigurationError: an argument is out of range.
        """
        if target not in self._faults:
            raise ConfigurationError(f"fault target must be 'metadata' or 'certs', not {target!r}")
        if delay is not None and not delay >= 0:
            raise ConfigurationError("delay must be zero or more seconds")
        queued = list(statuses)
        for status in queued:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ConfigurationError(f"injected status {status!r} is not an HTTP status code")
        if body is not None and body not in _FAULT_BODIES:
            raise ConfigurationError(f"body must be one of {sorted(_FAULT_BODIES)}, not {body!r}")
        if isinstance(drop, bool) or not isinstance(drop, int) or drop < 0:
            raise ConfigurationError("drop must be a count of requests, zero or more")
        with self._lock:
            faults = self._faults[target]
            if delay is not None:
                faults.delay = float(delay)
            faults.statuses.extend(queued)
            if body is not None:
                faults.body = body
            faults.drop += drop
            faults.omit_flavor = faults.omit_flavor or omit_flavor

    def clear_faults(self, target: FaultTarget | None = None) -> None:
        """Remove every injected fault (of one target, or of both)."""
        with self._lock:
            for name in self._faults if target is None else (target,):
                self._faults[name] = _Faults()

    # -- serving ----------------------------------------------------------------------------

    def _decide(self, target: str, endpoint: str) -> _Decision:
        with self._lock:
            self._counters[endpoint] += 1
            faults = self._faults[target]
            drop = faults.drop > 0
            if drop:
                faults.drop -= 1
            status = faults.statuses.popleft() if faults.statuses and not drop else None
            return _Decision(faults.delay, drop, status, faults.body, faults.omit_flavor)

    def _handle(self, request: Request, *, default: str) -> Reply:
        endpoint = _endpoint(request.path, request.query)
        target = "certs" if endpoint in ("jwks", "pem_certs", "iap_jwks") else "metadata"
        decision = self._decide(target, endpoint)
        if decision.drop:
            return Reply(0, delay=decision.delay, drop=True)
        if decision.status is not None:
            reply = _text(decision.status, f"injected fault: HTTP {decision.status}\n")
        elif target == "certs":
            reply = self._certs(request, endpoint)
        else:
            reply = self._metadata(request, default)
        if decision.body is not None and reply.status == 200:
            body, content_type = _FAULT_BODIES[decision.body]
            headers = reply.headers
            if content_type is not None:
                headers = tuple(h for h in headers if h[0] != "Content-Type")
                headers += (("Content-Type", content_type),)
            reply = Reply(200, body, headers)
        headers = reply.headers
        if target == "metadata" and not decision.omit_flavor:
            headers = (_FLAVOR, *headers)
        return Reply(reply.status, reply.body, headers, delay=decision.delay)

    def _certs(self, request: Request, endpoint: str) -> Reply:
        if request.method != "GET":
            return Reply(405, b"method not allowed\n", (("Allow", "GET"),))
        document: Mapping[str, Any]
        if endpoint == "jwks":
            document = self.jwks()
        elif endpoint == "iap_jwks":
            document = self.iap_jwks()
        else:
            document = self.pem_certs()
        max_age = self.cache_max_age
        headers = [
            ("Content-Type", "application/json; charset=UTF-8"),
            ("Cache-Control", f"public, max-age={max_age}, must-revalidate, no-transform"),
            ("Expires", email.utils.formatdate(time.time() + max_age, usegmt=True)),
        ]
        if self.certs_age > 0:
            headers.append(("Age", str(self.certs_age)))
        return Reply(200, json.dumps(document, indent=2).encode("utf-8"), tuple(headers))

    def _metadata(self, request: Request, default: str) -> Reply:
        if "x-forwarded-for" in request.headers:
            return _text(403, "Request contained an X-Forwarded-For header: refused.\n")
        if request.path == "/":
            return _text(200, "computeMetadata/\n")
        parts = _metadata_parts(request.path)
        if parts is None:
            return _text(404, "Not found.\n")
        if request.headers.get("metadata-flavor") != "Google":
            return _text(403, "Missing required header: 'Metadata-Flavor: Google'.\n")
        # POST is how google-auth asks for certificate-bound tokens.
        token_call = len(parts) == 4 and parts[3] in ("identity", "token")
        allowed = ("GET", "POST") if token_call else ("GET",)
        if request.method not in allowed:
            return Reply(405, b"Method not allowed.\n", (("Allow", ", ".join(allowed)),))
        return self._route(parts, request.query, default)

    def _route(self, parts: list[str], query: Mapping[str, list[str]], default: str) -> Reply:
        recursive = _recursive(query)
        match parts:
            case []:
                if recursive:
                    return _json(
                        {
                            "instance": {"serviceAccounts": self._accounts_info(default)},
                            "project": self._project_info(),
                        }
                    )
                return _text(200, "instance/\nproject/\n")
            case ["instance"]:
                if recursive:
                    return _json({"serviceAccounts": self._accounts_info(default)})
                return _text(200, "id\nregion\nservice-accounts/\nzone\n")
            case ["instance", "region"]:
                return _text(200, f"projects/{self.numeric_project_id}/regions/{self.region}")
            case ["instance", "zone"]:
                return _text(200, f"projects/{self.numeric_project_id}/zones/{self.region}-1")
            case ["instance", "id"]:
                return _text(200, self.instance_id)
            case ["instance", "service-accounts"]:
                if recursive:
                    return _json(self._accounts_info(default))
                names = ["default", *self.service_accounts]
                return _text(200, "".join(f"{name}/\n" for name in names))
            case ["project"]:
                if recursive:
                    return _json(self._project_info())
                return _text(200, "numeric-project-id\nproject-id\n")
            case ["project", "project-id"]:
                return _text(200, self.project_id)
            case ["project", "numeric-project-id"]:
                return _text(200, self.numeric_project_id)
            case ["instance", "service-accounts", name, *rest] if len(rest) <= 1:
                account = self._resolve(name, default)
                if account is None:
                    return _text(404, "No such service account on this instance.\n")
                return self._account(account, rest[0] if rest else None, query, default)
        return _text(404, "Not found.\n")

    def _account(
        self, account: str, leaf: str | None, query: Mapping[str, list[str]], default: str
    ) -> Reply:
        info = self._account_info(account, default)
        if leaf is None:
            if _recursive(query):
                return _json(info)
            return _text(200, "".join(f"{name}\n" for name in _ACCOUNT_LEAVES))
        if leaf == "email":
            return _text(200, account)
        if leaf in ("aliases", "scopes"):
            return _text(200, "".join(f"{value}\n" for value in info[leaf]))
        if leaf == "token":
            return _json(
                {
                    "access_token": "ya29." + secrets.token_urlsafe(96),
                    "expires_in": 3599,
                    "token_type": "Bearer",
                }
            )
        if leaf == "identity":
            audience = _first(query, "audience")
            if not audience:
                return _text(400, "non-empty audience parameter required\n")
            token_format = _first(query, "format", "standard")
            if token_format not in ("standard", "full"):
                return _text(400, "format must be 'standard' or 'full'\n")
            # licenses=TRUE adds GCE license claims on real VMs; Cloud Run has
            # none, and neither does the emulator, so the parameter is accepted
            # and ignored.
            return _text(200, self.mint(audience, account=account, full=token_format == "full"))
        return _text(404, "Not found.\n")

    def _resolve(self, name: str, default: str) -> str | None:
        if name == "default":
            return default
        for account in self.service_accounts:
            if account.lower() == name.lower():
                return account
        return None

    def _account_info(self, account: str, default: str) -> dict[str, Any]:
        aliases = ["default"] if account == default else []
        return {"aliases": aliases, "email": account, "scopes": list(_DEFAULT_SCOPES)}

    def _accounts_info(self, default: str) -> dict[str, Any]:
        info = {"default": self._account_info(default, default)}
        info.update(
            (account, self._account_info(account, default)) for account in self.service_accounts
        )
        return info

    def _project_info(self) -> dict[str, Any]:
        return {"numericProjectId": int(self.numeric_project_id), "projectId": self.project_id}


def _is_time(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _apply(target: dict[str, Any], changes: Mapping[str, Any] | None) -> None:
    for name, value in (changes or {}).items():
        if value is Emulator.DELETE:
            target.pop(name, None)
        else:
            target[name] = value
