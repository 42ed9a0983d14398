"""Where tokens come from: the metadata server, or Application Default Credentials.

A *source* mints a new token every time it is asked; caching, refresh-ahead
and single flight are the provider's job (:mod:`s2sauth.tokens.provider`).
Every source has ``fetch_id_token(audience) -> IDToken`` and
``fetch_access_token(scopes) -> AccessToken``, raises only
:class:`~s2sauth.TokenFetchError`, and does no I/O in its constructor.

* :class:`MetadataServerSource`: the instance's own service account, on
  Cloud Run, GCE, GKE, Cloud Functions, or the local ``s2sauth emulator``.
* :class:`ADCSource`: Application Default Credentials through google-auth, off
  Google Cloud (a service-account key file, an impersonated service account, a
  Workload Identity Federation config bound to a service account).
* :class:`DefaultSource`: the metadata server when one answers, else ADC.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import json
import os
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar, cast

from .. import _otel
from .._check import non_empty_string
from .._errors import ConfigurationError, TokenFetchError
from .._http import HTTPRequest, HTTPResponse, HTTPTransport, Transport, TransportError
from .._retry import Backoff
from . import metadata
from ._tokens import (
    AccessToken,
    AccessTokenSource,
    IDToken,
    IDTokenSource,
    TokenSource,
    id_token_expiry,
    safe_text,
)

if TYPE_CHECKING:  # pragma: no cover
    # google-auth is imported only when ADC is used: on Cloud Run it never is (cold start).
    import google.auth.credentials
    import google.auth.transport


__all__ = [
    "ADCSource",
    "AccessToken",
    "AccessTokenSource",
    "DefaultSource",
    "IDToken",
    "IDTokenSource",
    "MetadataServerSource",
    "TokenSource",
]

T = TypeVar("T")


#: Seconds one metadata fetch may take by default, retries included.
DEFAULT_DEADLINE = 30.0
#: Most calls to the metadata server in progress at once, from all sources together.
MAX_CONCURRENT_FETCHES = 4
_fetch_slots = threading.BoundedSemaphore(MAX_CONCURRENT_FETCHES)


@contextlib.contextmanager
def _fetch_slot(host: str, timeout: float) -> Iterator[None]:
    # Bounds the calls in flight, so a hung metadata server ties up a few threads, not
    # one per audience; waiting for a slot counts against the attempt's time.
    if not _fetch_slots.acquire(timeout=timeout):
        raise TokenFetchError(
            f"no answer from the metadata server at {host}: {MAX_CONCURRENT_FETCHES} earlier "
            f"calls were still waiting after {timeout:g}s",
            retryable=True,
        )
    try:
        yield
    finally:
        _fetch_slots.release()


class MetadataServerSource:
    """Tokens for a service account from the metadata server.

    Use it on Google Cloud (or against ``s2sauth emulator``) when the fallback
    to Application Default Credentials is not wanted. Calls go over a pooled,
    proxy-free connection that never follows redirects, and are retried on
    connection errors, timeouts, 408, 429 and 5xx with exponential backoff and
    full jitter until ``deadline``; any other error fails at once.

    Args:
        account: ``"default"`` or the email of a service account attached to the instance.
        host: ``host[:port]`` of the metadata server; when omitted,
            ``GCE_METADATA_HOST``, then ``GCE_METADATA_ROOT``, then
            ``metadata.google.internal``, read at each use.
        transport: what performs the HTTP calls; one :class:`~s2sauth._http.HTTPTransport`
            per source by default.
        deadline: total seconds one fetch may take, wall clock, retries included.
            The default leaves room for the GKE metadata server, which can take
            up to ~30 s to issue a token.
        timeout: seconds one attempt may take; by default the rest of the
            deadline, so a slow but working server is never cut short.

    Raises:
        ConfigurationError: ``account`` is empty, or ``deadline``/``timeout`` not positive.

    .. versionchanged:: 0.2
       ``deadline`` is wall-clock time (a trickling server is cut off), 30 s by
       default; an attempt may use all of it; at most :data:`MAX_CONCURRENT_FETCHES`
       calls to the metadata server run at once.
    """

    def __init__(
        self,
        account: str = "default",
        *,
        host: str | None = None,
        transport: Transport | None = None,
        deadline: float = DEFAULT_DEADLINE,
        timeout: float | None = None,
    ) -> None:
        non_empty_string("account", account, example="default")
        if timeout is None:
            timeout = deadline
        if deadline <= 0 or timeout <= 0:
            raise ConfigurationError("deadline and timeout must be positive numbers of seconds")
        if host is not None:
            cleaned = metadata.normalize_host(host) if isinstance(host, str) else ""
            if not cleaned or "/" in cleaned:
                raise ConfigurationError(
                    f"host must be the metadata server's host[:port], not {host!r}"
                )
            host = cleaned
        self.account = account.strip()
        self._host = host
        self._owns_transport = transport is None
        if transport is None:
            pooled = HTTPTransport()
            # Idle pooled sockets are closed with the source, not left to the garbage collector.
            weakref.finalize(self, pooled.close)
            transport = pooled
        self._transport: Transport = transport
        self._deadline = deadline
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"MetadataServerSource(account={self.account!r}, host={self.host!r})"

    @property
    def host(self) -> str:
        """The ``host[:port]`` the next call goes to."""
        return self._host if self._host is not None else metadata.resolve_host()

    def fetch_id_token(self, audience: str) -> IDToken:
        """Fetch a new ID token for ``audience`` (with ``format=full``).

        Raises:
            TokenFetchError: the server refused (at once, with its status and
                message), or no good answer came before the deadline (``retryable``).
        """
        return self._fetch(
            "an ID token",
            lambda host, timeout: metadata.identity_request(
                host, audience, account=self.account, timeout=timeout
            ),
            lambda response, host, sent: metadata.parse_identity_response(response, host=host),
        )

    def fetch_access_token(self, scopes: Sequence[str]) -> AccessToken:
        """Fetch a new OAuth access token for ``scopes``.

        Raises:
            TokenFetchError: as :meth:`fetch_id_token`.
        """
        return self._fetch(
            "an access token",
            lambda host, timeout: metadata.access_token_request(
                host, scopes, account=self.account, timeout=timeout
            ),
            lambda response, host, sent: metadata.parse_access_token_response(
                response, host=host, now=sent
            ),
        )

    def ping(self, *, timeout: float = 1.0) -> None:
        """Check, with one short call, that a metadata server answers.

        Raises:
            TokenFetchError: nothing answered, or what answered is not a metadata server.
        """
        host = self.host
        response = _exchange(self._transport, metadata.ping_request(host, timeout=timeout), host)
        metadata.parse_ping_response(response, host=host)

    def close(self) -> None:
        """Close the idle connections of the default transport (a given one is left alone)."""
        if isinstance(self._transport, HTTPTransport) and self._owns_transport:
            self._transport.close()

    @_otel.traced(
        "s2sauth.metadata_server", "metadata_server", lambda s: {"server.address": s.host}
    )
    def _fetch(
        self,
        what: str,
        request_for: Callable[[str, float], HTTPRequest],
        parse: Callable[[HTTPResponse, str, float], T],
    ) -> T:
        # parse(response, host, sent): sent is the epoch time the attempt's request left.
        host = self.host
        backoff = Backoff(deadline=self._deadline, started=time.monotonic())
        while True:
            timeout = backoff.begin_attempt(time.monotonic(), self._timeout)
            ends = time.monotonic() + timeout
            try:
                with _fetch_slot(host, timeout):
                    left = max(Backoff.MIN_ATTEMPT_TIME, ends - time.monotonic())
                    request, sent = request_for(host, left), time.time()
                    return parse(_exchange(self._transport, request, host), host, sent)
            except TokenFetchError as exc:
                if not exc.retryable:
                    raise
                delay = backoff.delay(time.monotonic(), random.random())
                if delay is None:
                    elapsed = time.monotonic() - backoff.started
                    raise TokenFetchError(
                        f"gave up fetching {what} from the metadata server at {host} after "
                        f"{backoff.attempts} attempt(s) in {elapsed:.1f}s; last error: "
                        f"{exc.message}",
                        status=exc.status,
                        retryable=True,
                    ) from exc
            time.sleep(delay)


def _exchange(transport: Transport, request: HTTPRequest, host: str) -> HTTPResponse:
    try:
        return transport(request)
    except TransportError as exc:
        raise metadata.no_answer(exc, host) from exc


# google-auth credentials nearly always report an expiry; if one does not, assume a
# short life so the provider refreshes early rather than sends an expired token.
_UNKNOWN_LIFETIME = 300.0
_USER_CREDENTIALS_HELP = (
    "Application Default Credentials are gcloud user credentials, which cannot mint ID "
    "tokens for an arbitrary audience. Run `gcloud auth application-default login "
    "--impersonate-service-account SA_EMAIL`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
    "service-account key file"
)


def _within(deadline: float, what: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a thread of its own, waited for at most ``deadline`` seconds."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="s2sauth-adc", daemon=True).start()
    try:
        return future.result(timeout=deadline)
    except concurrent.futures.TimeoutError:
        raise TokenFetchError(
            f"Application Default Credentials did not mint {what} within {deadline:g}s "
            "(the token endpoint or the IAM Credentials API did not answer in time)",
            retryable=True,
        ) from None


def gcloud_adc_path(environ: Mapping[str, str] | None = None) -> str:
    """Where ``gcloud auth application-default login`` writes its credentials, as google-auth
    looks for them (``CLOUDSDK_CONFIG``, else the user's gcloud folder); it may not exist.

    Args:
        environ: the environment to read; ``os.environ`` if omitted.
    """
    env = os.environ if environ is None else environ
    config = env.get("CLOUDSDK_CONFIG")
    if not config:
        if os.name == "nt":
            config = os.path.join(env.get("APPDATA", ""), "gcloud")
        else:
            config = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config", "gcloud")
    return os.path.join(config, "application_default_credentials.json")


class ADCSource:
    """Tokens from Application Default Credentials through google-auth, off Google Cloud.

    ID tokens come from a service-account key file
    (``google.oauth2.service_account.IDTokenCredentials``) or an impersonated
    service account (``google.auth.impersonated_credentials.IDTokenCredentials``),
    the way ``google.oauth2.id_token.fetch_id_token`` finds them, or from a
    Workload Identity Federation config (``external_account``: GitHub Actions,
    AWS, Azure, a file- or URL-sourced subject token): its federated token asks
    the IAM Credentials API's ``generateIdToken`` for the service account named
    by ``service_account_impersonation_url``, as Go's ``idtoken`` package does.
    gcloud *user* credentials (workforce sign-ins included) cannot mint ID
    tokens for an arbitrary audience, nor can a federated config bound to no
    service account; asking for one raises a :class:`~s2sauth.TokenFetchError`
    that says what to do instead.

    When ``credentials`` is omitted, the ADC file is found at first use:
    ``GOOGLE_APPLICATION_CREDENTIALS``, else gcloud's
    ``application_default_credentials.json``. The metadata server is not
    consulted here; :class:`DefaultSource` does that first.

    Args:
        credentials: a path to a credentials JSON file, or a google-auth
            credentials object (ID-token credentials with ``with_target_audience``,
            or impersonated credentials; any for access tokens).
        request: the google-auth transport for token endpoints;
            :class:`UrllibRequest` (which honours ``HTTPS_PROXY``) by default.
            google-auth calls ``generateIdToken`` for impersonated credentials
            through ``requests`` instead (see :class:`UrllibRequest`).
        deadline: total seconds one fetch may take, wall clock. google-auth's own
            calls (``requests``' 120 s default for ``generateIdToken``) cannot be
            interrupted, so the fetch runs on a thread of its own that is left to
            finish alone when the deadline passes.

    .. versionchanged:: 0.2
       ``deadline``; ID tokens from ``external_account`` (Workload Identity
       Federation) files.
    """

    def __init__(
        self,
        credentials: str | os.PathLike[str] | google.auth.credentials.Credentials | None = None,
        *,
        request: google.auth.transport.Request | None = None,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        if deadline <= 0:
            raise ConfigurationError("deadline must be a positive number of seconds")
        self._deadline = deadline
        self._credentials = credentials
        self._request = request  # UrllibRequest() at first use: it imports google-auth
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._info: dict[str, Any] | None = None
        self._path: str | None = None

    def __repr__(self) -> str:
        return f"ADCSource(credentials={self._describe()})"

    def fetch_id_token(self, audience: str) -> IDToken:
        """Mint an ID token for ``audience`` with the ADC service account.

        Raises:
            TokenFetchError: no ADC found, user credentials, or the token endpoint failed.
        """

        def mint() -> Any:
            with _google_auth_errors("an ID token"):
                credentials = self._id_token_credentials(audience)
                self._refresh(credentials)
            return credentials

        credentials = _within(self._deadline, "an ID token", mint)
        value = credentials.token
        if not isinstance(value, str):
            raise TokenFetchError("Application Default Credentials returned no ID token")
        return IDToken(value, id_token_expiry(value, origin="the ADC token endpoint"))

    def fetch_access_token(self, scopes: Sequence[str]) -> AccessToken:
        """Mint an OAuth access token for ``scopes`` with the ADC credentials.

        Raises:
            TokenFetchError: no ADC found, or the token endpoint failed.
        """

        def mint() -> Any:
            import google.auth

            with _google_auth_errors("an access token"):
                if _is_credentials(self._credentials):
                    credentials = google.auth.credentials.with_scopes_if_required(  # type: ignore[no-untyped-call]
                        self._credentials, list(scopes)
                    )
                else:
                    # The file as first read, as for ID tokens: both kinds use the same key.
                    info = self._load()[1]
                    if info.get("type") == "external_account":
                        credentials = _external_account_credentials(info, scopes)
                    else:
                        credentials, _ = google.auth.load_credentials_from_dict(  # type: ignore[no-untyped-call]
                            info, scopes=list(scopes)
                        )
                self._refresh(credentials)
            return credentials

        credentials = _within(self._deadline, "an access token", mint)
        value = credentials.token
        if not isinstance(value, str) or not value:
            raise TokenFetchError("Application Default Credentials returned no access token")
        return AccessToken(value, _epoch(credentials.expiry))

    def _describe(self) -> str:
        if _is_credentials(self._credentials):
            return type(self._credentials).__name__
        if self._credentials is not None:
            return repr(os.fspath(cast("str | os.PathLike[str]", self._credentials)))
        return "ADC"

    def _refresh(self, credentials: Any) -> None:
        if self._request is None:
            from ._urllib import UrllibRequest

            self._request = UrllibRequest()
        if not _is_credentials(self._credentials):
            credentials.refresh(self._request)  # a new object per fetch: nothing shared
            return
        # A credentials object the caller handed in is shared with the caller's own
        # code; google-auth does not promise it refreshes safely from two threads.
        with self._refresh_lock:
            credentials.refresh(self._request)

    def _load(self) -> tuple[str, dict[str, Any]]:
        with self._lock:
            if self._info is None or self._path is None:
                path = self._find_file()
                try:
                    with open(path, encoding="utf-8") as f:
                        info = json.load(f)
                except (OSError, ValueError) as exc:
                    raise TokenFetchError(
                        f"cannot read Application Default Credentials from {path}: {exc}"
                    ) from exc
                if not isinstance(info, dict):
                    raise TokenFetchError(f"{path} is not a JSON credentials object")
                self._path, self._info = path, info
            return self._path, self._info

    def _find_file(self) -> str:
        if self._credentials is not None and not _is_credentials(self._credentials):
            return os.fspath(cast("str | os.PathLike[str]", self._credentials))
        path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if path:
            if not os.path.isfile(path):
                raise TokenFetchError(
                    f"GOOGLE_APPLICATION_CREDENTIALS is {path!r}, which is not a file"
                )
            return path
        path = gcloud_adc_path()
        if os.path.isfile(path):
            return path
        raise TokenFetchError(
            "no Application Default Credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account key file, or run `gcloud auth application-default login "
            "--impersonate-service-account SA_EMAIL`"
        )

    def _id_token_credentials(self, audience: str) -> Any:
        credentials = self._credentials
        if _is_credentials(credentials):
            return _id_token_credentials_from_object(credentials, audience)
        path, info = self._load()
        kind = info.get("type")
        if kind == "service_account":
            from google.oauth2 import service_account

            return service_account.IDTokenCredentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, target_audience=audience
            )
        if kind == "impersonated_service_account":
            from google.auth import impersonated_credentials

            target = impersonated_credentials.Credentials.from_impersonated_service_account_info(  # type: ignore[no-untyped-call]
                info
            )
            return impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
                target, target_audience=audience, include_email=True
            )
        if kind == "external_account":
            return _external_account_id_token_credentials(info, path, audience)
        if kind in ("authorized_user", "external_account_authorized_user"):
            raise TokenFetchError(f"{_USER_CREDENTIALS_HELP} (found {path})")
        raise TokenFetchError(
            f"credentials of type {kind!r} in {path} cannot mint ID tokens; use a "
            "service-account key file, an impersonated service account, or a Workload "
            "Identity Federation config that impersonates one"
        )


_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_FEDERATION_HELP = (
    "a Workload Identity Federation config mints ID tokens only by impersonating a "
    "service account, and this one names none (no service_account_impersonation_url). "
    "Create it with `gcloud iam workload-identity-pools create-cred-config PROVIDER "
    "--service-account=SA_EMAIL ...` and grant the federated principal "
    "roles/iam.workloadIdentityUser on that service account"
)


def _external_account_id_token_credentials(
    info: Mapping[str, Any], path: str, audience: str
) -> Any:
    # Workload Identity Federation (GitHub Actions, AWS, Azure, a file or URL subject token):
    # the federated token is no identity a Cloud Run service can check, so the service
    # account the config is bound to signs the ID token, through generateIdToken.
    from google.auth import impersonated_credentials

    url = info.get("service_account_impersonation_url")
    if not isinstance(url, str) or not url:
        raise TokenFetchError(f"{_FEDERATION_HELP} (found {path})")
    # .../v1/projects/-/serviceAccounts/EMAIL:generateAccessToken
    email = url.rpartition("/serviceAccounts/")[2].partition(":")[0]
    if "@" not in email:
        raise TokenFetchError(
            f"service_account_impersonation_url in {path} names no service account email"
        )
    # The source is the federated STS token itself (the impersonation URL dropped), not
    # the service account's access token the full config would mint: google-auth builds
    # its own impersonation of external accounts the same way
    # (external_account._initialize_impersonated_credentials). It costs one STS exchange
    # and one generateIdToken per fetch, and needs only roles/iam.workloadIdentityUser
    # for the federated principal (google-github-actions/auth mints its id_token output
    # the same way). Go's idtoken starts from the full config instead, so the service
    # account calls generateIdToken on itself: one more call, and it needs
    # roles/iam.serviceAccountOpenIdTokenCreator on itself.
    federated_info = {
        key: value
        for key, value in info.items()
        if key not in ("service_account_impersonation_url", "service_account_impersonation")
    }
    federated = _external_account_credentials(federated_info, [_CLOUD_PLATFORM])
    target = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
        source_credentials=federated,
        target_principal=email,
        target_scopes=[_CLOUD_PLATFORM],
    )
    return impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
        target, target_audience=audience, include_email=True
    )


def _external_account_credentials(info: Mapping[str, Any], scopes: Sequence[str]) -> Any:
    # Not google.auth.load_credentials_from_dict: for an external account it also looks
    # up the pool's project ID, which exchanges a token (through google-auth's own
    # requests transport) and calls Cloud Resource Manager, on every load. from_info does
    # no I/O. The dispatch is google-auth's own (_default._get_external_account_credentials).
    from google.auth import aws, identity_pool, pluggable

    source = info.get("credential_source")
    kind: Any = identity_pool.Credentials
    if info.get("subject_token_type") == "urn:ietf:params:aws:token-type:aws4_request":
        kind = aws.Credentials
    elif isinstance(source, Mapping) and source.get("executable") is not None:
        kind = pluggable.Credentials
    return kind.from_info(info, scopes=list(scopes))


def _id_token_credentials_from_object(
    credentials: google.auth.credentials.Credentials, audience: str
) -> Any:
    from google.auth import impersonated_credentials
    from google.oauth2 import credentials as user_credentials

    if hasattr(credentials, "with_target_audience"):
        return credentials.with_target_audience(audience)
    if isinstance(credentials, impersonated_credentials.Credentials):
        return impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
            credentials, target_audience=audience, include_email=True
        )
    if isinstance(credentials, user_credentials.Credentials):
        raise TokenFetchError(_USER_CREDENTIALS_HELP)
    raise TokenFetchError(
        f"{type(credentials).__name__} cannot mint ID tokens: pass ID-token credentials "
        "(e.g. google.oauth2.service_account.IDTokenCredentials), impersonated credentials, "
        "or the path of a key file"
    )


def _is_credentials(value: object) -> TypeGuard[google.auth.credentials.Credentials]:
    # Without importing google-auth: a credentials object exists only if it was imported.
    module = sys.modules.get("google.auth.credentials")
    return module is not None and isinstance(value, module.Credentials)


def __getattr__(name: str) -> Any:
    # UrllibRequest moved to ._urllib (it subclasses google-auth's transport); still here.
    if name == "UrllibRequest":
        from ._urllib import UrllibRequest

        return UrllibRequest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _epoch(expiry: datetime.datetime | None) -> float:
    if expiry is None:
        return time.time() + _UNKNOWN_LIFETIME
    # google-auth keeps expiry as a naive datetime in UTC.
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.timezone.utc)
    return expiry.timestamp()


@contextlib.contextmanager
def _google_auth_errors(what: str) -> Iterator[None]:
    """Turn google-auth's exceptions into TokenFetchError, with any token cut out."""
    import google.auth.exceptions

    try:
        yield
    except (google.auth.exceptions.GoogleAuthError, ValueError, OSError) as exc:
        raise TokenFetchError(
            f"Application Default Credentials could not mint {what}: {safe_text(str(exc))}",
            retryable=bool(getattr(exc, "retryable", False)) or _unreachable(exc),
        ) from exc
    except ImportError as exc:
        # google-auth imports its requests transport only when it needs it: to call
        # the IAM Credentials API for an impersonated service account's ID token.
        raise TokenFetchError(
            f"Application Default Credentials could not mint {what}: {safe_text(str(exc))} "
            "(google-auth calls the IAM Credentials API for an impersonated service account "
            "through requests: pip install 's2sauth[requests]')"
        ) from exc


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says a token endpoint could not be reached (worth another try)."""
    import google.auth.exceptions

    if isinstance(exc, google.auth.exceptions.TransportError | ConnectionError | TimeoutError):
        return True
    # google-auth reaches the IAM Credentials API through requests for impersonated ID
    # tokens and lets its exceptions through; requests is loaded if one was raised.
    requests = sys.modules.get("requests")
    return requests is not None and isinstance(exc, requests.ConnectionError | requests.Timeout)


class DefaultSource:
    """The metadata server when one answers, else Application Default Credentials.

    The default for :class:`~s2sauth.tokens.provider.IDTokenProvider`. On first
    use it pings the metadata server once, briefly; when nothing answers
    (connection refused, unknown host, timeout, or an answer that is not a
    metadata server) it uses ADC instead. Whichever worked is remembered.
    Errors from a metadata server that *did* answer (a 404 for an unknown
    account, say) are raised, never hidden by the fallback.

    Args:
        metadata: the metadata-server source to try first; ``MetadataServerSource()`` by default.
        adc: the fallback; ``ADCSource()`` by default.
        probe_timeout: seconds the first ping may take.
    """

    def __init__(
        self,
        *,
        metadata: MetadataServerSource | None = None,
        adc: TokenSource | None = None,
        probe_timeout: float = 1.0,
    ) -> None:
        self._metadata = metadata if metadata is not None else MetadataServerSource()
        self._adc: TokenSource = adc if adc is not None else ADCSource()
        self._probe_timeout = probe_timeout
        self._lock = threading.Lock()
        self._chosen: TokenSource | None = None

    def __repr__(self) -> str:
        return f"DefaultSource(chosen={self._chosen!r})"

    @property
    def chosen(self) -> TokenSource | None:
        """The source that worked, once one has; ``None`` before."""
        return self._chosen

    def fetch_id_token(self, audience: str) -> IDToken:
        """Fetch an ID token from whichever source works here.

        Raises:
            TokenFetchError: the metadata server answered with an error, or neither works.
        """
        return self._fetch(lambda source: source.fetch_id_token(audience))

    def fetch_access_token(self, scopes: Sequence[str]) -> AccessToken:
        """Fetch an access token from whichever source works here.

        Raises:
            TokenFetchError: as :meth:`fetch_id_token`.
        """
        return self._fetch(lambda source: source.fetch_access_token(scopes))

    def _fetch(self, fetch: Callable[[TokenSource], T]) -> T:
        chosen = self._chosen
        if chosen is not None:
            return fetch(chosen)
        with self._lock:
            if self._chosen is not None:
                return fetch(self._chosen)
            try:
                self._metadata.ping(timeout=self._probe_timeout)
            except TokenFetchError as absent:
                try:
                    result = fetch(self._adc)
                except TokenFetchError as exc:
                    # Telling someone to set a variable they have set sends them in circles.
                    adc = (
                        "fix the credentials GOOGLE_APPLICATION_CREDENTIALS names"
                        if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
                        else "set GOOGLE_APPLICATION_CREDENTIALS"
                    )
                    raise TokenFetchError(
                        "no token source works here. Tried the metadata server "
                        f"({absent.message}) and Application Default Credentials "
                        f"({exc.message}). On Google Cloud, check the instance's service "
                        f"account; elsewhere {adc}, or run "
                        "`s2sauth emulator` and export the GCE_METADATA_HOST it prints",
                        status=exc.status,
                        retryable=exc.retryable,
                    ) from exc
                self._chosen = self._adc
                return result
            self._chosen = self._metadata
        return fetch(self._metadata)
